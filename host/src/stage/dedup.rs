//! The key under which a stage keeps an event id it processed, so a repeat (an upstream
//! at-least-once retry, the same request through two host instances, an outside producer
//! writing an id twice) is dropped instead of processed twice. Where processed ids live is the
//! guarantee's choice (see [`super::guarantee::ProcessedIds`]): a transactional topic
//! (exactly-once) or the local store (at-least-once).

use std::borrow::Cow;

/// Longest id kept as it is; a longer one (which a stage dead-letters) is kept as its digest.
const MAX_KEPT_ID_BYTES: usize = 512;

/// The key under which the deduplicator keeps `id`: the id itself, or `sha256:<hex>` of an
/// id too long to keep (a record key or store key of its size would not fit).
pub fn dedup_key(id: &str) -> Cow<'_, str> {
    use sha2::{Digest, Sha256};
    if id.len() <= MAX_KEPT_ID_BYTES {
        return Cow::Borrowed(id);
    }
    let digest: String = Sha256::digest(id.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Cow::Owned(format!("sha256:{digest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_ids_are_kept_as_a_digest() {
        assert_eq!(dedup_key("short"), "short");
        let long = "x".repeat(10_000);
        let key = dedup_key(&long);
        assert!(key.starts_with("sha256:") && key.len() == 7 + 64, "{key}");
        assert_ne!(key, dedup_key(&"y".repeat(10_000)));
    }
}
