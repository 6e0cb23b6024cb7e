//! Which records belong to a key: the rule `stagehost trace` matches on.
//!
//! A record belongs to key `K` when
//! 1. its Kafka record key is `K`: most topics of a pipeline are keyed by the id that flows
//!    through them (in the shipped pipeline the order id: `OrderReceived`, `InventoryResults`,
//!    `OrderConfirmed`, `Notification`, `OrderStatus`, …), or
//! 2. its body is a JSON object whose top-level *id field* is the string `K`. The id fields
//!    are the `id_field`s of the pipeline's `[[http.routes]]` (`order_id` and `restock_id` in
//!    the shipped pipeline): the field that names a request at the ingress, which the stages
//!    carry along in events keyed by something else (`InventoryCommands` and
//!    `InventoryLedger` are keyed by product and carry the `order_id` in their body).
//!
//! A dead letter belongs to `K` when its record key (the failed event's key) is `K` or its
//! `original_event` has an id field `K`.
//!
//! The events carry no correlation header of their own (no `ce_subject`), and `ce_id`s are
//! derived per hop, so the key and the id field are what identifies an order robustly.

use crate::config::PipelineConfig;
use crate::dlq::DeadLetterEntry;

/// How a record was found to belong to the key: `"key"` (its record key), or the name of the
/// id field of its body that holds the key (e.g. `"order_id"`).
pub type MatchedBy = String;

/// Decides which records belong to one key.
#[derive(Debug, Clone)]
pub struct KeyMatcher {
    /// The key looked for.
    key: String,
    /// Body fields that may hold it.
    id_fields: Vec<String>,
    /// The key as it appears quoted in any JSON body holding it as a string, when that form
    /// is unique (plain ASCII without quotes, backslashes or control characters): a body
    /// without these bytes cannot match, so it need not be parsed.
    quoted: Option<Vec<u8>>,
}

impl KeyMatcher {
    /// The matcher of `key` for a pipeline: its id fields are those of its HTTP routes.
    pub fn new(key: &str, config: &PipelineConfig) -> Self {
        let mut fields: Vec<String> = config
            .http
            .routes
            .iter()
            .map(|route| route.id_field.clone())
            .collect();
        fields.sort();
        fields.dedup();
        Self::with_fields(key, fields)
    }

    /// The matcher of `key` with these id fields.
    pub fn with_fields(key: &str, id_fields: Vec<String>) -> Self {
        let plain = key
            .bytes()
            .all(|b| b.is_ascii() && !b.is_ascii_control() && b != b'"' && b != b'\\');
        Self {
            key: key.to_string(),
            id_fields,
            quoted: plain.then(|| format!("\"{key}\"").into_bytes()),
        }
    }

    /// The key looked for.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Whether a record with this key and body belongs to the key, and how.
    pub fn record(&self, key: Option<&[u8]>, payload: Option<&[u8]>) -> Option<MatchedBy> {
        if key == Some(self.key.as_bytes()) {
            return Some("key".into());
        }
        let payload = payload?;
        if self.id_fields.is_empty() {
            return None;
        }
        if let Some(quoted) = &self.quoted
            && !payload.windows(quoted.len()).any(|window| window == quoted)
        {
            return None;
        }
        let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
        self.body(&value)
    }

    /// Whether a JSON body holds the key in one of the id fields, and in which.
    pub fn body(&self, value: &serde_json::Value) -> Option<MatchedBy> {
        let object = value.as_object()?;
        self.id_fields
            .iter()
            .find(|field| object.get(field.as_str()).and_then(|v| v.as_str()) == Some(&self.key))
            .cloned()
    }

    /// Whether a dead letter is about the key.
    pub fn letter(&self, entry: &DeadLetterEntry) -> bool {
        entry.key.as_deref() == Some(self.key.as_str())
            || self.body(&entry.letter.original_event).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(key: &str) -> KeyMatcher {
        KeyMatcher::with_fields(key, vec!["order_id".into(), "restock_id".into()])
    }

    #[test]
    fn the_record_key_matches() {
        let m = matcher("order-1");
        assert_eq!(m.record(Some(b"order-1"), Some(b"{}")), Some("key".into()));
        assert_eq!(m.record(Some(b"order-10"), Some(b"{}")), None);
        assert_eq!(m.record(None, None), None);
    }

    #[test]
    fn an_id_field_of_the_body_matches_records_keyed_otherwise() {
        let m = matcher("order-1");
        let command = br#"{"command":"reserve","order_id":"order-1","product_id":"p"}"#;
        assert_eq!(m.record(Some(b"p"), Some(command)), Some("order_id".into()));
        // Another field holding the same text, or a nested one, does not.
        assert_eq!(m.record(Some(b"p"), Some(br#"{"note":"order-1"}"#)), None);
        assert_eq!(
            m.record(Some(b"p"), Some(br#"{"order":{"order_id":"order-1"}}"#)),
            None
        );
        assert_eq!(
            m.record(Some(b"p"), Some(br#"{"order_id":"order-12"}"#)),
            None
        );
        assert_eq!(m.record(Some(b"p"), Some(b"not json order-1")), None);
    }

    #[test]
    fn keys_that_json_escapes_are_still_found() {
        let m = matcher("a\"b");
        let body = serde_json::json!({"order_id": "a\"b"}).to_string();
        assert_eq!(
            m.record(Some(b"x"), Some(body.as_bytes())),
            Some("order_id".into())
        );
        let m = matcher("ordre-é");
        let escaped = br#"{"order_id":"ordre-\u00e9"}"#;
        assert_eq!(m.record(None, Some(escaped)), Some("order_id".into()));
    }

    #[test]
    fn without_id_fields_only_the_key_matches() {
        let m = KeyMatcher::with_fields("order-1", Vec::new());
        assert_eq!(
            m.record(Some(b"p"), Some(br#"{"order_id":"order-1"}"#)),
            None
        );
    }
}
