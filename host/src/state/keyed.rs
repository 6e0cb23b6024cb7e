//! The keyed state of one stage, partitioned like its input: what is committed (a [`Table`] in
//! the local store, a copy of the changelog topic), what the open transaction has written (in
//! memory until it commits), and which partitions have been caught up with their changelog.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::store::{StoreError, Table};

/// A write of one key: a new value, or `None` for a delete.
pub type Write = Option<Vec<u8>>;

/// Writes of one event, in key order (the order they reach the changelog).
pub type Writes = BTreeMap<String, Write>;

/// State of every partition this instance owns.
pub struct KeyedState {
    /// Values made durable by committed transactions.
    committed: Table,
    /// Values written by events of the open transaction, per input partition.
    pending: HashMap<i32, HashMap<String, Write>>,
    /// Partitions whose committed values were caught up with the changelog since this
    /// instance took them.
    restored: HashSet<i32>,
    /// Why the committed values could not be read while an event was handled: the event's
    /// outcome cannot be trusted and its batch is dropped (see [`KeyedState::take_failure`]).
    failure: Option<StoreError>,
}

impl KeyedState {
    /// The state kept in `committed`.
    pub fn new(committed: Table) -> Self {
        Self {
            committed,
            pending: HashMap::new(),
            restored: HashSet::new(),
            failure: None,
        }
    }

    /// The table of committed values.
    pub fn table(&self) -> &Table {
        &self.committed
    }

    /// The value of `key` in `partition` as the next event should see it. A failing store
    /// reads as absent and is remembered for [`KeyedState::take_failure`].
    pub fn get(&mut self, partition: i32, key: &str) -> Option<Vec<u8>> {
        if let Some(write) = self.pending.get(&partition).and_then(|p| p.get(key)) {
            return write.clone();
        }
        match self.committed.get(partition, key.as_bytes()) {
            Ok(value) => value,
            Err(error) => {
                self.failure.get_or_insert(error);
                None
            }
        }
    }

    /// Why a read failed since the last call, if one did.
    pub fn take_failure(&mut self) -> Option<StoreError> {
        self.failure.take()
    }

    /// Adds one event's writes to the open transaction.
    pub fn stage(&mut self, partition: i32, writes: Writes) {
        let pending = self.pending.entry(partition).or_default();
        pending.extend(writes);
    }

    /// The open transaction's writes: the last value (or delete) of each key, by partition
    /// then key.
    pub fn pending(&self) -> impl Iterator<Item = (i32, &str, &Write)> {
        let mut partitions: Vec<&i32> = self.pending.keys().collect();
        partitions.sort();
        partitions.into_iter().flat_map(move |partition| {
            let writes = &self.pending[partition];
            let mut keys: Vec<&String> = writes.keys().collect();
            keys.sort();
            keys.into_iter()
                .map(move |key| (*partition, key.as_str(), &writes[key]))
        })
    }

    /// The open transaction committed: its writes become the committed state. When the store
    /// cannot take them, every partition is caught up with its changelog again before its next
    /// event (the changelog has the writes), and the error is returned for the log.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        let mut result = Ok(());
        for (partition, writes) in self.pending.drain() {
            let applied = self.committed.apply(
                partition,
                writes
                    .iter()
                    .map(|(key, value)| (key.as_bytes(), value.as_deref())),
                None,
            );
            if let Err(error) = applied {
                self.restored.clear();
                result = Err(error);
            }
        }
        result
    }

    /// The open transaction aborted: forget its writes.
    pub fn rollback(&mut self) {
        self.pending.clear();
    }

    /// Marks a partition caught up with its changelog.
    pub fn restored(&mut self, partition: i32) {
        self.pending.remove(&partition);
        self.restored.insert(partition);
    }

    /// Forgets a partition this instance no longer owns (its values stay on disk, and are
    /// caught up from their checkpoint if the partition comes back).
    pub fn forget(&mut self, partition: i32) {
        self.pending.remove(&partition);
        self.restored.remove(&partition);
    }

    /// Whether the partition was caught up with its changelog.
    pub fn has(&self, partition: i32) -> bool {
        self.restored.contains(&partition)
    }

    /// Partitions caught up with their changelog.
    pub fn partitions(&self) -> Vec<i32> {
        self.restored.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{LocalStore, Scope};

    fn writes(pairs: &[(&str, Option<&str>)]) -> Writes {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(|v| v.as_bytes().to_vec())))
            .collect()
    }

    fn state(dir: &tempfile::TempDir) -> KeyedState {
        let store = LocalStore::open(dir.path()).unwrap();
        KeyedState::new(Table::new(&store, "state:test", Scope::Partition))
    }

    #[test]
    fn pending_writes_are_seen_then_committed_or_rolled_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = state(&dir);
        state.restored(0);
        state.stage(0, writes(&[("a", Some("1"))]));
        state.commit().unwrap();
        state.stage(0, writes(&[("a", Some("2")), ("b", Some("3"))]));
        assert_eq!(state.get(0, "a"), Some(b"2".to_vec()));
        state.rollback();
        assert_eq!(state.get(0, "a"), Some(b"1".to_vec()));
        assert_eq!(state.get(0, "b"), None);
        state.stage(0, writes(&[("a", None), ("b", Some("3"))]));
        assert_eq!(state.get(0, "a"), None);
        state.commit().unwrap();
        assert_eq!(state.get(0, "a"), None);
        assert_eq!(state.get(0, "b"), Some(b"3".to_vec()));
        assert!(state.take_failure().is_none());
    }

    #[test]
    fn partitions_are_separate_and_can_be_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = state(&dir);
        state.restored(0);
        state.restored(1);
        state.stage(1, writes(&[("k", Some("v"))]));
        state.commit().unwrap();
        assert_eq!(state.get(0, "k"), None);
        assert_eq!(state.get(1, "k"), Some(b"v".to_vec()));
        state.forget(1);
        assert!(!state.has(1));
        assert_eq!(
            state.get(1, "k"),
            Some(b"v".to_vec()),
            "kept on disk for when the partition comes back"
        );
    }
}
