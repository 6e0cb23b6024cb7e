//! The host's durable local state (an embedded `fjall` log-structured store on disk):
//! which events each stage has processed, and the answers given to ingress requests.
//!
//! Both survive a restart; both are bounded by the configured retention (`prune`).
//! A log-structured store suits the processed ids: they are random (hashes), written in
//! batches of hundreds per stage, and looked up mostly to find them absent. Each batch is one
//! sequential journal append and one `fdatasync`, where a B-tree rewrote a page per id.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use serde::{Deserialize, Serialize};

/// `<stage>\x1f<event id>` → when it was processed (unix ms, 8 bytes big-endian).
const PROCESSED: &str = "processed";
/// Ingress request key (e.g. order id) → JSON of [`IngressRecord`].
const INGRESS: &str = "ingress";
/// Folder of the store inside `state.dir`.
const STORE_DIR: &str = "store";
/// Block cache of the store.
const CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// The answer given to one ingress request, replayed when the same request comes again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngressRecord {
    /// SHA-256 of the canonical JSON body, to tell a repeat from a conflicting request.
    pub body_hash: String,
    /// HTTP status that was returned.
    pub status: u16,
    /// JSON body that was returned.
    pub response: String,
    /// When it was recorded (unix ms).
    pub recorded_at_ms: u64,
}

/// Handle to the store; cheap to clone and safe to share between threads.
#[derive(Clone)]
pub struct StateStore {
    db: Database,
    processed: Keyspace,
    ingress: Keyspace,
}

impl StateStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
        let path = dir.join(STORE_DIR);
        let db = Database::builder(&path)
            .cache_size(CACHE_BYTES)
            .open()
            .with_context(|| {
                format!(
                    "cannot open the idempotency store {} (is another stagehost using this state.dir?)",
                    path.display()
                )
            })?;
        let processed = db.keyspace(PROCESSED, KeyspaceCreateOptions::default)?;
        let ingress = db.keyspace(INGRESS, KeyspaceCreateOptions::default)?;
        Ok(Self {
            db,
            processed,
            ingress,
        })
    }

    /// For each id, whether `stage` has already processed it.
    pub fn processed_among(&self, stage: &str, ids: &[&str]) -> anyhow::Result<Vec<bool>> {
        let mut key = String::new();
        ids.iter()
            .map(|id| {
                processed_key_into(&mut key, stage, id);
                Ok(self.processed.contains_key(key.as_bytes())?)
            })
            .collect()
    }

    /// Records that `stage` processed these ids, in one durable batch.
    pub fn mark_processed<'a>(
        &self,
        stage: &str,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> anyhow::Result<()> {
        let now = unix_ms(SystemTime::now()).to_be_bytes();
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncData));
        let mut key = String::new();
        for id in ids {
            processed_key_into(&mut key, stage, id);
            batch.insert(&self.processed, key.as_bytes(), now.as_slice());
        }
        batch.commit()?;
        Ok(())
    }

    /// The recorded answer to ingress request `key`, if any.
    pub fn ingress_record(&self, key: &str) -> anyhow::Result<Option<IngressRecord>> {
        match self.ingress.get(key)? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Records the answer to ingress request `key`.
    pub fn put_ingress_record(&self, key: &str, record: &IngressRecord) -> anyhow::Result<()> {
        self.put_ingress_records(&[(key.to_string(), record.clone())])
    }

    /// Records the answers to several ingress requests in one durable batch.
    pub fn put_ingress_records(&self, records: &[(String, IngressRecord)]) -> anyhow::Result<()> {
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncData));
        for (key, record) in records {
            batch.insert(&self.ingress, key.as_str(), serde_json::to_vec(record)?);
        }
        batch.commit()?;
        Ok(())
    }

    /// Forgets everything recorded more than `retention` ago; returns how many entries went.
    pub fn prune(&self, retention: Duration) -> anyhow::Result<usize> {
        let cutoff = unix_ms(
            SystemTime::now()
                .checked_sub(retention)
                .unwrap_or(UNIX_EPOCH),
        );
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncData));
        for item in self.processed.iter() {
            let (key, value) = item.into_inner()?;
            if decode_ms(&value) < cutoff {
                batch.remove(&self.processed, key);
            }
        }
        for item in self.ingress.iter() {
            let (key, value) = item.into_inner()?;
            let keep = serde_json::from_slice::<IngressRecord>(&value)
                .map(|record| record.recorded_at_ms >= cutoff)
                .unwrap_or(false);
            if !keep {
                batch.remove(&self.ingress, key);
            }
        }
        let removed = batch.len();
        batch.commit()?;
        Ok(removed)
    }
}

/// Reads a stored timestamp; anything malformed counts as the epoch (so it is pruned).
fn decode_ms(value: &[u8]) -> u64 {
    value.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

/// Writes `<stage>\x1f<id>` into `key`, reusing its allocation.
fn processed_key_into(key: &mut String, stage: &str, id: &str) {
    key.clear();
    key.push_str(stage);
    key.push('\x1f');
    key.push_str(id);
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_processed_ids_per_stage_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = StateStore::open(dir.path()).unwrap();
            store.mark_processed("inventory", ["a", "b"]).unwrap();
        }
        let store = StateStore::open(dir.path()).unwrap();
        assert_eq!(
            store
                .processed_among("inventory", &["a", "b", "c"])
                .unwrap(),
            vec![true, true, false]
        );
        assert_eq!(
            store.processed_among("warehouse", &["a"]).unwrap(),
            vec![false]
        );
    }

    #[test]
    fn replays_ingress_answers() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        assert_eq!(store.ingress_record("order-1").unwrap(), None);
        let record = IngressRecord {
            body_hash: "h".into(),
            status: 202,
            response: "{}".into(),
            recorded_at_ms: unix_ms(SystemTime::now()),
        };
        store.put_ingress_record("order-1", &record).unwrap();
        assert_eq!(store.ingress_record("order-1").unwrap(), Some(record));
    }

    #[test]
    fn prune_forgets_only_old_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        store.mark_processed("s", ["new"]).unwrap();
        let old = IngressRecord {
            body_hash: "h".into(),
            status: 202,
            response: "{}".into(),
            recorded_at_ms: 1,
        };
        store.put_ingress_record("old", &old).unwrap();
        assert_eq!(store.prune(Duration::from_secs(3600)).unwrap(), 1);
        assert_eq!(store.processed_among("s", &["new"]).unwrap(), vec![true]);
        assert_eq!(store.ingress_record("old").unwrap(), None);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(store.prune(Duration::ZERO).unwrap(), 1);
        assert_eq!(store.processed_among("s", &["new"]).unwrap(), vec![false]);
    }
}
