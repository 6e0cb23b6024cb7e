//! The store's data on disk: one `fjall` database with a keyspace of processed ids and one of
//! ingress answers, and the operations on them. Everything here returns `fjall`'s own errors;
//! [`super::StateStore`] decides what a failure means (see its docs).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use serde::{Deserialize, Serialize};

/// `<stage>\x1f<event id>` → when it was processed (unix ms, 8 bytes big-endian).
const PROCESSED: &str = "processed";
/// Ingress request key (e.g. order id) → JSON of [`IngressRecord`].
const INGRESS: &str = "ingress";
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

/// The open database and its keyspaces. Dropping every clone of it closes the database (its
/// background threads stop and its lock file is released), so it can be opened again.
pub(super) struct Keyspaces {
    db: Database,
    processed: Keyspace,
    ingress: Keyspace,
}

impl Keyspaces {
    /// Opens (or creates) the database in `path`, recovering its journal: the writes that were
    /// durable when it was last closed, or when its process or its disk failed.
    pub(super) fn open(path: &Path) -> fjall::Result<Self> {
        let db = Database::builder(path).cache_size(CACHE_BYTES).open()?;
        let processed = db.keyspace(PROCESSED, KeyspaceCreateOptions::default)?;
        let ingress = db.keyspace(INGRESS, KeyspaceCreateOptions::default)?;
        Ok(Self {
            db,
            processed,
            ingress,
        })
    }

    /// For each id, whether `stage` has already processed it.
    pub(super) fn processed_among(&self, stage: &str, ids: &[&str]) -> fjall::Result<Vec<bool>> {
        let mut key = String::new();
        ids.iter()
            .map(|id| {
                processed_key_into(&mut key, stage, id);
                self.processed.contains_key(key.as_bytes())
            })
            .collect()
    }

    /// Records that `stage` processed these ids, in one durable batch.
    pub(super) fn mark_processed<'a>(
        &self,
        stage: &str,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> fjall::Result<()> {
        let now = unix_ms(SystemTime::now()).to_be_bytes();
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncData));
        let mut key = String::new();
        for id in ids {
            processed_key_into(&mut key, stage, id);
            batch.insert(&self.processed, key.as_bytes(), now.as_slice());
        }
        batch.commit()
    }

    /// The stored answer to ingress request `key` (its JSON), if any.
    pub(super) fn ingress_record(&self, key: &str) -> fjall::Result<Option<fjall::Slice>> {
        self.ingress.get(key)
    }

    /// Records the answers (already JSON) to several ingress requests in one durable batch.
    pub(super) fn put_ingress_records(&self, records: &[(&str, Vec<u8>)]) -> fjall::Result<()> {
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncData));
        for (key, json) in records {
            batch.insert(&self.ingress, *key, json.as_slice());
        }
        batch.commit()
    }

    /// Forgets everything recorded more than `retention` ago; returns how many entries went.
    pub(super) fn prune(&self, retention: Duration) -> fjall::Result<usize> {
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
    fn processed_keys_keep_stages_apart() {
        let mut key = String::new();
        processed_key_into(&mut key, "inventory", "a");
        assert_eq!(key, "inventory\x1fa");
        processed_key_into(&mut key, "stock", "b");
        assert_eq!(key, "stock\x1fb");
    }

    #[test]
    fn malformed_timestamps_count_as_the_epoch() {
        assert_eq!(decode_ms(&42u64.to_be_bytes()), 42);
        assert_eq!(decode_ms(b"short"), 0);
    }
}
