//! The store's data on disk: one `fjall` database with a keyspace of processed ids, one of
//! ingress answers, one keyspace per table (see [`super::table`]) and one of table
//! checkpoints, and the operations on them. Everything here returns `fjall`'s own errors;
//! [`super::LocalStore`] decides what a failure means (see its docs).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fjall::config::PartitioningPolicy;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use serde::{Deserialize, Serialize};

/// `<stage>\x1f<event id>` → when it was processed (unix ms, 8 bytes big-endian).
const PROCESSED: &str = "processed";
/// Ingress request key (e.g. a ticket id) → JSON of [`IngressRecord`].
const INGRESS: &str = "ingress";
/// `<table>\x1f<partition>` → the next offset of the table's topic partition to read (8 bytes
/// big-endian).
const CHECKPOINTS: &str = "checkpoints";
/// Key of the database's identity in the checkpoints keyspace (no table name holds `\x1e`).
const IDENTITY_KEY: &str = "\x1estore-identity";
/// Key of the id of the Kafka cluster whose topics the database copies.
const CLUSTER_KEY: &str = "\x1ekafka-cluster";
/// Prefix of the keyspace of each table.
const TABLE_PREFIX: &str = "table:";
/// Block cache of the store.
const CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// Size at which a keyspace's memtable is flushed to disk: what the store holds in memory per
/// keyspace (fjall's default, 64 MiB, would let a host with a dozen tables hold most of a
/// gigabyte before writing any of it out).
const MEMTABLE_BYTES: u64 = 4 * 1024 * 1024;

/// Every keyspace's options. Filters and indexes are partitioned on every level (fjall's
/// default partitions them from level 3 only): a point read of an id that is not there (most
/// reads of the processed ids) otherwise loads the whole filter block of each level-1/2 table
/// from disk once the 16 MiB cache no longer holds it, and checksums it. At 200,000 orders
/// through the shipped pipeline at-least-once that was 73% of the host's perf samples (file
/// reads and xxh3 of filter blocks, `perf` of `make bench` row 4); with partitions a miss loads
/// one small filter partition. Only the partitions' top-level indexes stay in memory, so memory still
/// does not grow with the ids held.
fn keyspace_options() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default()
        .max_memtable_size(MEMTABLE_BYTES)
        .filter_block_partitioning_policy(PartitioningPolicy::all(true))
        .index_block_partitioning_policy(PartitioningPolicy::all(true))
}

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
    checkpoints: Keyspace,
    /// The keyspaces of the tables opened so far, by table name.
    tables: Mutex<HashMap<String, Keyspace>>,
}

/// A write to a table: a key and its new value, or `None` to delete it.
pub type TableWrite = (Vec<u8>, Option<Vec<u8>>);
/// An entry of a table: its key and value.
pub type TableEntry = (Vec<u8>, Vec<u8>);

impl Keyspaces {
    /// Opens (or creates) the database in `path`, recovering its journal: the writes that were
    /// durable when it was last closed, or when its process or its disk failed.
    pub(super) fn open(path: &Path) -> fjall::Result<Self> {
        let db = Database::builder(path).cache_size(CACHE_BYTES).open()?;
        let processed = db.keyspace(PROCESSED, keyspace_options)?;
        let ingress = db.keyspace(INGRESS, keyspace_options)?;
        let checkpoints = db.keyspace(CHECKPOINTS, keyspace_options)?;
        Ok(Self {
            db,
            processed,
            ingress,
            checkpoints,
            tables: Mutex::new(HashMap::new()),
        })
    }

    /// The database's identity: a random id written when it was created (`created` true when
    /// that is now). A database that comes back with another id (or none) is another database:
    /// its folder lost its files, or was replaced.
    pub(super) fn identity(&self) -> fjall::Result<(String, bool)> {
        if let Some(id) = self.checkpoints.get(IDENTITY_KEY)? {
            return Ok((String::from_utf8_lossy(&id).into_owned(), false));
        }
        let id = uuid::Uuid::new_v4().to_string();
        self.checkpoints.insert(IDENTITY_KEY, id.as_bytes())?;
        self.db.persist(fjall::PersistMode::SyncAll)?;
        Ok((id, true))
    }

    /// Binds the database to the Kafka cluster `cluster`: records it if none is recorded
    /// yet (a new database, or one from before the binding existed); returns the cluster it is
    /// bound to when that is another one (its copies and checkpoints belong to that cluster).
    pub(super) fn bind_cluster(&self, cluster: &str) -> fjall::Result<Option<String>> {
        if let Some(bound) = self.checkpoints.get(CLUSTER_KEY)? {
            let bound = String::from_utf8_lossy(&bound).into_owned();
            return Ok((bound != cluster).then_some(bound));
        }
        self.checkpoints.insert(CLUSTER_KEY, cluster.as_bytes())?;
        self.db.persist(fjall::PersistMode::SyncAll)?;
        Ok(None)
    }

    /// The keyspace of table `name`, opened (or created) on first use.
    fn table(&self, name: &str) -> fjall::Result<Keyspace> {
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(keyspace) = tables.get(name) {
            return Ok(keyspace.clone());
        }
        let keyspace = self
            .db
            .keyspace(&format!("{TABLE_PREFIX}{name}"), keyspace_options)?;
        tables.insert(name.to_string(), keyspace.clone());
        Ok(keyspace)
    }

    /// The value of `key` in table `name`.
    pub(super) fn table_get(&self, name: &str, key: &[u8]) -> fjall::Result<Option<fjall::Slice>> {
        self.table(name)?.get(key)
    }

    /// Applies `writes` to table `name` in one batch, with the table's checkpoint of
    /// `partition` moved to `checkpoint` in the same batch when given. Not synced: a table is a
    /// copy of its topic, and a crash loses at most the batches after the last checkpoint that
    /// reached the disk, which are read again from the topic.
    pub(super) fn table_apply(
        &self,
        name: &str,
        writes: &[TableWrite],
        checkpoint: Option<(i32, i64)>,
    ) -> fjall::Result<()> {
        let table = self.table(name)?;
        let mut batch = self.db.batch();
        for (key, value) in writes {
            match value {
                Some(value) => batch.insert(&table, key.as_slice(), value.as_slice()),
                None => batch.remove(&table, key.as_slice()),
            }
        }
        if let Some((partition, offset)) = checkpoint {
            batch.insert(
                &self.checkpoints,
                checkpoint_key(name, partition),
                offset.to_be_bytes().as_slice(),
            );
        }
        batch.commit()
    }

    /// The next offset of `partition` that table `name` has not read yet, if it read any.
    pub(super) fn table_checkpoint(
        &self,
        name: &str,
        partition: i32,
    ) -> fjall::Result<Option<i64>> {
        Ok(self
            .checkpoints
            .get(checkpoint_key(name, partition))?
            .and_then(|value| <[u8; 8]>::try_from(value.as_ref()).ok())
            .map(i64::from_be_bytes))
    }

    /// Removes the entries of table `name` whose key starts with `prefix` (all of them for an
    /// empty prefix), and its checkpoints of `partitions`.
    pub(super) fn table_clear(
        &self,
        name: &str,
        prefix: &[u8],
        partitions: &[i32],
    ) -> fjall::Result<usize> {
        let table = self.table(name)?;
        let mut batch = self.db.batch();
        for item in table.prefix(prefix) {
            batch.remove(&table, item.key()?);
        }
        for partition in partitions {
            batch.remove(&self.checkpoints, checkpoint_key(name, *partition));
        }
        let removed = batch.len();
        batch.commit()?;
        Ok(removed)
    }

    /// The entries of table `name` whose key starts with `prefix`, with the prefix cut off.
    pub(super) fn table_entries(
        &self,
        name: &str,
        prefix: &[u8],
    ) -> fjall::Result<Vec<TableEntry>> {
        let table = self.table(name)?;
        let mut entries = Vec::new();
        for item in table.prefix(prefix) {
            let (key, value) = item.into_inner()?;
            entries.push((key[prefix.len()..].to_vec(), value.to_vec()));
        }
        Ok(entries)
    }

    /// The entries of table `name` (an estimate: overwritten and deleted keys count until the
    /// store compacts them) and the bytes it takes on disk.
    pub(super) fn table_size(&self, name: &str) -> fjall::Result<(u64, u64)> {
        let table = self.table(name)?;
        Ok((table.approximate_len() as u64, table.disk_space()))
    }

    /// Removes the entries of table `name` whose value `keep` refuses; how many went.
    pub(super) fn table_prune(
        &self,
        name: &str,
        keep: &dyn Fn(&[u8]) -> bool,
    ) -> fjall::Result<usize> {
        let table = self.table(name)?;
        let mut batch = self.db.batch();
        for item in table.iter() {
            let (key, value) = item.into_inner()?;
            if !keep(&value) {
                batch.remove(&table, key);
            }
        }
        let removed = batch.len();
        batch.commit()?;
        Ok(removed)
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

/// The checkpoint key of `partition` of table `name`.
fn checkpoint_key(name: &str, partition: i32) -> String {
    format!("{name}\x1f{partition}")
}

/// Reads a stored timestamp; anything malformed counts as the epoch (so it is pruned).
pub(super) fn decode_ms(value: &[u8]) -> u64 {
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
        processed_key_into(&mut key, "tickets", "a");
        assert_eq!(key, "tickets\x1fa");
        processed_key_into(&mut key, "stock", "b");
        assert_eq!(key, "stock\x1fb");
    }

    #[test]
    fn malformed_timestamps_count_as_the_epoch() {
        assert_eq!(decode_ms(&42u64.to_be_bytes()), 42);
        assert_eq!(decode_ms(b"short"), 0);
    }
}
