//! The host's durable local state (an embedded `redb` database on disk):
//! which events each stage has processed, and the answers given to ingress requests.
//!
//! Both survive a restart; both are bounded by the configured retention (`prune`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};

/// `<stage>\x1f<event id>` → when it was processed (unix ms).
const PROCESSED: TableDefinition<&str, u64> = TableDefinition::new("processed");
/// Ingress request key (e.g. order id) → JSON of [`IngressRecord`].
const INGRESS: TableDefinition<&str, &[u8]> = TableDefinition::new("ingress");

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

/// Handle to the database; cheap to clone and safe to share between threads.
#[derive(Clone)]
pub struct StateStore {
    db: Arc<Database>,
}

impl StateStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
        let path = dir.join("stagehost.redb");
        let db = Database::create(&path).with_context(|| {
            format!(
                "cannot open the idempotency store {} (is another stagehost using this state.dir?)",
                path.display()
            )
        })?;
        let txn = db.begin_write()?;
        txn.open_table(PROCESSED)?;
        txn.open_table(INGRESS)?;
        txn.commit()?;
        Ok(Self { db: Arc::new(db) })
    }

    /// For each id, whether `stage` has already processed it.
    pub fn processed_among(&self, stage: &str, ids: &[&str]) -> anyhow::Result<Vec<bool>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(PROCESSED)?;
        ids.iter()
            .map(|id| Ok(table.get(processed_key(stage, id).as_str())?.is_some()))
            .collect()
    }

    /// Records that `stage` processed these ids, in one durable transaction.
    pub fn mark_processed<'a>(
        &self,
        stage: &str,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> anyhow::Result<()> {
        let now = unix_ms(SystemTime::now());
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(PROCESSED)?;
            for id in ids {
                table.insert(processed_key(stage, id).as_str(), now)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The recorded answer to ingress request `key`, if any.
    pub fn ingress_record(&self, key: &str) -> anyhow::Result<Option<IngressRecord>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(INGRESS)?;
        match table.get(key)? {
            Some(bytes) => Ok(Some(serde_json::from_slice(bytes.value())?)),
            None => Ok(None),
        }
    }

    /// Records the answer to ingress request `key`.
    pub fn put_ingress_record(&self, key: &str, record: &IngressRecord) -> anyhow::Result<()> {
        self.put_ingress_records(&[(key.to_string(), record.clone())])
    }

    /// Records the answers to several ingress requests in one durable transaction.
    pub fn put_ingress_records(&self, records: &[(String, IngressRecord)]) -> anyhow::Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(INGRESS)?;
            for (key, record) in records {
                let bytes = serde_json::to_vec(record)?;
                table.insert(key.as_str(), bytes.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Forgets everything recorded more than `retention` ago; returns how many entries went.
    pub fn prune(&self, retention: Duration) -> anyhow::Result<usize> {
        let cutoff = unix_ms(
            SystemTime::now()
                .checked_sub(retention)
                .unwrap_or(UNIX_EPOCH),
        );
        let mut removed = 0;
        let txn = self.db.begin_write()?;
        {
            let mut processed = txn.open_table(PROCESSED)?;
            processed.retain(|_, at| {
                let keep = at >= cutoff;
                removed += usize::from(!keep);
                keep
            })?;
            let mut ingress = txn.open_table(INGRESS)?;
            ingress.retain(|_, bytes| {
                let keep = serde_json::from_slice::<IngressRecord>(bytes)
                    .map(|record| record.recorded_at_ms >= cutoff)
                    .unwrap_or(false);
                removed += usize::from(!keep);
                keep
            })?;
        }
        txn.commit()?;
        Ok(removed)
    }
}

fn processed_key(stage: &str, id: &str) -> String {
    format!("{stage}\x1f{id}")
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
