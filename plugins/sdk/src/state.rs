//! Keyed state of a stateful stage, as seen by its pure logic.
//!
//! In the component the bindings glue implements [`State`] by calling the WIT `state` import
//! (world `stateful-stage`); native tests use [`MemoryState`]. The host scopes keys to the
//! input partition and keeps the writes of one event only if it accepts the event's outputs
//! (see the `state` interface in `wit/stage.wit` for when they become durable).

use std::collections::BTreeMap;

/// A key-value store of byte values (the WIT `state` interface).
pub trait State {
    /// The value stored under `key`, or `None`.
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    /// Stores `value` under `key`.
    fn set(&mut self, key: &str, value: Vec<u8>);
    /// Removes `key` (nothing happens if it is absent).
    fn delete(&mut self, key: &str);
}

/// An in-memory [`State`] for native tests, ordered by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryState {
    entries: BTreeMap<String, Vec<u8>>,
}

impl MemoryState {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The stored keys, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The value under `key` as UTF-8 text (`None` if absent or not UTF-8).
    #[must_use]
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.entries
            .get(key)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Number of stored keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is stored.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl State for MemoryState {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.entries.get(key).cloned()
    }

    fn set(&mut self, key: &str, value: Vec<u8>) {
        self.entries.insert(key.to_owned(), value);
    }

    fn delete(&mut self, key: &str) {
        self.entries.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_state_gets_sets_and_deletes() {
        let mut s = MemoryState::new();
        assert!(s.is_empty());
        assert_eq!(s.get("a"), None);
        s.set("b", b"2".to_vec());
        s.set("a", b"1".to_vec());
        s.set("a", b"10".to_vec());
        assert_eq!(s.get("a"), Some(b"10".to_vec()));
        assert_eq!(s.get_str("b"), Some("2"));
        assert_eq!(s.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(s.len(), 2);
        s.delete("a");
        s.delete("missing");
        assert_eq!(s.get("a"), None);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn works_through_a_trait_object() {
        let mut s = MemoryState::new();
        let dynamic: &mut dyn State = &mut s;
        dynamic.set("k", vec![0, 255]);
        assert_eq!(dynamic.get("k"), Some(vec![0, 255]));
        assert_eq!(s.get_str("k"), None, "not UTF-8");
    }
}
