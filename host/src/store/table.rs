//! [`Table`]: the latest value per key of a Kafka topic, kept in the local store instead of in
//! memory: a stage's keyed state, its processed ids, the exactly-once ingress answers, a read
//! model. The topic stays the source of truth and the table is its copy on disk, the way Kafka
//! Streams keeps a local store beside its changelog topic.
//!
//! Each table records, per topic partition, a **checkpoint**: the next offset it has not read.
//! Catching up ([`crate::state::catch_up`]) reads a partition from its checkpoint to the end
//! and writes the records and the new checkpoint in one batch, so the two never disagree. A
//! writer of the topic (a stage committing its transaction) also writes its own records into
//! the table, without moving the checkpoint: when the partition is caught up again (after a
//! restart, or when it comes back from another instance) the records since the checkpoint are
//! read once more, in order, and the latest value of each key wins, whoever wrote it.
//!
//! Keys are scoped per partition ([`Scope::Partition`]: keyed state and processed ids, which
//! follow their input partition) or per topic ([`Scope::Topic`]: a read model or the ingress
//! answers, looked up by key alone). An expiring table ([`Table::expiring`]) stores values
//! that begin with the unix-ms time they were written (see [`stamp`](super::stamp())): older than its
//! retention, a value reads as absent and the store's upkeep removes it.

use std::sync::Arc;
use std::time::Duration;

use super::error::StoreError;
use super::handle::LocalStore;
use super::keyspaces::{TableEntry, TableWrite};
use super::stamp::kept;

/// How a table's keys are scoped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Per input partition: the same key in two partitions is two entries.
    Partition,
    /// Per topic: a key has one entry, whichever partition it came from.
    Topic,
}

/// A table in the local store; cheap to clone.
#[derive(Clone)]
pub struct Table {
    store: LocalStore,
    name: Arc<str>,
    scope: Scope,
    retention: Option<Duration>,
}

impl Table {
    /// The table `name` (created on first write).
    pub fn new(store: &LocalStore, name: &str, scope: Scope) -> Self {
        Self {
            store: store.clone(),
            name: Arc::from(name),
            scope,
            retention: None,
        }
    }

    /// The table `name` whose values begin with the time they were written ([`stamp`](super::stamp())) and
    /// are forgotten `retention` after it; the store's upkeep prunes it.
    pub fn expiring(store: &LocalStore, name: &str, scope: Scope, retention: Duration) -> Self {
        store.register_expiring(name, retention);
        Self {
            retention: Some(retention),
            ..Self::new(store, name, scope)
        }
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The store the table lives in.
    pub fn store(&self) -> &LocalStore {
        &self.store
    }

    /// The value of `key` (in `partition`, for a partition-scoped table); an expired value
    /// reads as absent.
    pub fn get(&self, partition: i32, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let stored = self
            .store
            .table_get(&self.name, &self.key(partition, key))?;
        Ok(stored
            .filter(|value| self.is_live(value))
            .map(|value| value.to_vec()))
    }

    /// Applies `writes` (key, value or `None` to delete) of `partition`, and moves the
    /// partition's checkpoint to `checkpoint` when given, in one batch.
    pub fn apply<'a>(
        &self,
        partition: i32,
        writes: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>,
        checkpoint: Option<i64>,
    ) -> Result<(), StoreError> {
        let writes: Vec<TableWrite> = writes
            .into_iter()
            .map(|(key, value)| (self.key(partition, key), value.map(<[u8]>::to_vec)))
            .collect();
        if writes.is_empty() && checkpoint.is_none() {
            return Ok(());
        }
        self.store.table_apply(
            &self.name,
            &writes,
            checkpoint.map(|offset| (partition, offset)),
        )
    }

    /// The next offset of `partition` the table has not read, if it read any.
    pub fn checkpoint(&self, partition: i32) -> Result<Option<i64>, StoreError> {
        self.store.table_checkpoint(&self.name, partition)
    }

    /// Forgets what the table holds of `partition` (for a topic-scoped table: of every
    /// partition in `partitions`, since its keys do not say where they came from), so it is
    /// read again from the topic's beginning. For a topic that was deleted and made again.
    pub fn clear(&self, partition: i32, partitions: &[i32]) -> Result<usize, StoreError> {
        match self.scope {
            Scope::Partition => {
                self.store
                    .table_clear(&self.name, &partition.to_be_bytes(), &[partition])
            }
            Scope::Topic => self.store.table_clear(&self.name, &[], partitions),
        }
    }

    /// Every entry of `partition` (of a partition-scoped table; of the whole table for a
    /// topic-scoped one), expired ones included.
    pub fn entries(&self, partition: i32) -> Result<Vec<TableEntry>, StoreError> {
        let prefix = match self.scope {
            Scope::Partition => partition.to_be_bytes().to_vec(),
            Scope::Topic => Vec::new(),
        };
        self.store.table_entries(&self.name, &prefix)
    }

    /// How many entries the table holds (the store's estimate: overwritten and deleted keys
    /// count until it compacts them) and how many bytes it takes on disk.
    pub fn size(&self) -> Result<(u64, u64), StoreError> {
        self.store.table_size(&self.name)
    }

    fn key(&self, partition: i32, key: &[u8]) -> Vec<u8> {
        match self.scope {
            Scope::Partition => {
                let mut scoped = Vec::with_capacity(4 + key.len());
                scoped.extend_from_slice(&partition.to_be_bytes());
                scoped.extend_from_slice(key);
                scoped
            }
            Scope::Topic => key.to_vec(),
        }
    }

    fn is_live(&self, value: &[u8]) -> bool {
        match self.retention {
            None => true,
            Some(retention) => kept(value, retention),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::store::{stamp, unix_ms, unstamp};

    #[test]
    fn partition_scoped_keys_are_apart_and_topic_scoped_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let state = Table::new(&store, "state:s", Scope::Partition);
        state
            .apply(0, [(&b"k"[..], Some(&b"zero"[..]))], None)
            .unwrap();
        state
            .apply(1, [(&b"k"[..], Some(&b"one"[..]))], Some(7))
            .unwrap();
        assert_eq!(state.get(0, b"k").unwrap(), Some(b"zero".to_vec()));
        assert_eq!(state.get(1, b"k").unwrap(), Some(b"one".to_vec()));
        assert_eq!(state.checkpoint(0).unwrap(), None);
        assert_eq!(state.checkpoint(1).unwrap(), Some(7));
        state.clear(1, &[1]).unwrap();
        assert_eq!(state.get(1, b"k").unwrap(), None);
        assert_eq!(state.checkpoint(1).unwrap(), None);
        assert_eq!(
            state.get(0, b"k").unwrap(),
            Some(b"zero".to_vec()),
            "partition 0 kept"
        );

        let view = Table::new(&store, "view:t", Scope::Topic);
        view.apply(2, [(&b"k"[..], Some(&b"v"[..]))], Some(3))
            .unwrap();
        assert_eq!(view.get(0, b"k").unwrap(), Some(b"v".to_vec()));
        view.apply(2, [(&b"k"[..], None)], Some(4)).unwrap();
        assert_eq!(view.get(2, b"k").unwrap(), None);
    }

    #[test]
    fn tables_and_checkpoints_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = LocalStore::open(dir.path()).unwrap();
            let table = Table::new(&store, "view:t", Scope::Topic);
            table
                .apply(0, [(&b"a"[..], Some(&b"1"[..]))], Some(10))
                .unwrap();
        }
        let store = LocalStore::open(dir.path()).unwrap();
        let table = Table::new(&store, "view:t", Scope::Topic);
        assert_eq!(table.get(0, b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(table.checkpoint(0).unwrap(), Some(10));
    }

    #[test]
    fn expired_values_read_as_absent_and_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let table = Table::expiring(
            &store,
            "processed:s",
            Scope::Partition,
            Duration::from_secs(3600),
        );
        let now = unix_ms(SystemTime::now());
        let fresh = stamp(now, b"x");
        let old = stamp(now - 7_200_000, b"y");
        table
            .apply(
                0,
                [
                    (&b"fresh"[..], Some(&fresh[..])),
                    (&b"old"[..], Some(&old[..])),
                ],
                None,
            )
            .unwrap();
        assert_eq!(
            table.get(0, b"fresh").unwrap().as_deref().map(unstamp),
            Some(&b"x"[..])
        );
        assert_eq!(table.get(0, b"old").unwrap(), None);
        assert_eq!(store.prune(Duration::from_secs(3600)).unwrap(), 1);
        assert!(table.get(0, b"fresh").unwrap().is_some());
    }
}
