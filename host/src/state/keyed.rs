//! The keyed state of one stage, partitioned like its input: what is committed, what the open
//! transaction has written, and what the event being handled has written so far.

use std::collections::{BTreeMap, HashMap};

/// A write of one key: a new value, or `None` for a delete.
pub type Write = Option<Vec<u8>>;

/// Writes of one event, in key order (the order they reach the changelog).
pub type Writes = BTreeMap<String, Write>;

/// State of every partition this instance owns.
#[derive(Debug, Default)]
pub struct KeyedState {
    /// Values made durable by committed transactions, per input partition.
    committed: HashMap<i32, HashMap<String, Vec<u8>>>,
    /// Values written by events of the open transaction, per input partition.
    pending: HashMap<i32, HashMap<String, Write>>,
}

impl KeyedState {
    /// The value of `key` in `partition` as the next event should see it.
    pub fn get(&self, partition: i32, key: &str) -> Option<Vec<u8>> {
        if let Some(write) = self.pending.get(&partition).and_then(|p| p.get(key)) {
            return write.clone();
        }
        self.committed
            .get(&partition)
            .and_then(|p| p.get(key))
            .cloned()
    }

    /// Adds one event's writes to the open transaction.
    pub fn stage(&mut self, partition: i32, writes: Writes) {
        let pending = self.pending.entry(partition).or_default();
        pending.extend(writes);
    }

    /// The open transaction committed: its writes become the committed state.
    pub fn commit(&mut self) {
        for (partition, writes) in self.pending.drain() {
            let committed = self.committed.entry(partition).or_default();
            for (key, write) in writes {
                match write {
                    Some(value) => committed.insert(key, value),
                    None => committed.remove(&key),
                };
            }
        }
    }

    /// The open transaction aborted: forget its writes.
    pub fn rollback(&mut self) {
        self.pending.clear();
    }

    /// Replaces a partition's committed state (after restoring it from the changelog).
    pub fn install(&mut self, partition: i32, values: HashMap<String, Vec<u8>>) {
        self.pending.remove(&partition);
        self.committed.insert(partition, values);
    }

    /// Forgets a partition this instance no longer owns.
    pub fn forget(&mut self, partition: i32) {
        self.pending.remove(&partition);
        self.committed.remove(&partition);
    }

    /// Whether the partition's state is loaded.
    pub fn has(&self, partition: i32) -> bool {
        self.committed.contains_key(&partition)
    }

    /// Partitions whose state is loaded.
    pub fn partitions(&self) -> Vec<i32> {
        self.committed.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writes(pairs: &[(&str, Option<&str>)]) -> Writes {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(|v| v.as_bytes().to_vec())))
            .collect()
    }

    #[test]
    fn pending_writes_are_seen_then_committed_or_rolled_back() {
        let mut state = KeyedState::default();
        state.install(0, HashMap::from([("a".to_string(), b"1".to_vec())]));
        state.stage(0, writes(&[("a", Some("2")), ("b", Some("3"))]));
        assert_eq!(state.get(0, "a"), Some(b"2".to_vec()));
        state.rollback();
        assert_eq!(state.get(0, "a"), Some(b"1".to_vec()));
        assert_eq!(state.get(0, "b"), None);
        state.stage(0, writes(&[("a", None), ("b", Some("3"))]));
        assert_eq!(state.get(0, "a"), None);
        state.commit();
        assert_eq!(state.get(0, "a"), None);
        assert_eq!(state.get(0, "b"), Some(b"3".to_vec()));
    }

    #[test]
    fn partitions_are_separate_and_can_be_forgotten() {
        let mut state = KeyedState::default();
        state.install(0, HashMap::new());
        state.install(1, HashMap::new());
        state.stage(1, writes(&[("k", Some("v"))]));
        state.commit();
        assert_eq!(state.get(0, "k"), None);
        assert_eq!(state.get(1, "k"), Some(b"v".to_vec()));
        state.forget(1);
        assert!(!state.has(1));
        assert_eq!(state.get(1, "k"), None);
    }
}
