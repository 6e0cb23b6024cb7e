//! The headers of a record the host writes, held as Rust strings until the record is sent.
//!
//! librdkafka's own header list (`OwnedHeaders`) `malloc`s every header, and a producer takes
//! the list it is given, so a record kept for a possible second send needs a copy per send.
//! Building, copying and freeing that list was a quarter of a pass-through stage's thread
//! (docs/performance.md); these headers are built into librdkafka's list once, as the
//! record is sent.

/// Prefix of the input headers that carry an HTTP route's path parameters
/// (`stagehost-path-<name>: <value>`).
pub const PATH_HEADER_PREFIX: &str = "stagehost-path-";

use std::borrow::Cow;

use rdkafka::message::{Header, OwnedHeaders};

/// Header names and values of one record, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordHeaders(Vec<(Cow<'static, str>, Cow<'static, str>)>);

impl RecordHeaders {
    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// No headers yet, room for `capacity`.
    pub fn with_capacity(capacity: usize) -> Self {
        Self(Vec::with_capacity(capacity))
    }

    /// Adds header `name` (after the ones already there).
    pub fn push(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<Cow<'static, str>>,
    ) {
        self.0.push((name.into(), value.into()));
    }

    /// Sets header `name` to `value`: replaces every header of that name.
    pub fn set(&mut self, name: impl Into<Cow<'static, str>>, value: String) {
        let name = name.into();
        self.0.retain(|(key, _)| *key != name);
        self.0.push((name, value.into()));
    }

    /// The value of the first header called `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    }

    /// Every header, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .map(|(name, value)| (name.as_ref(), value.as_ref()))
    }

    /// How many headers there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The bytes of every name and value, as they count against a record's size.
    pub fn byte_len(&self) -> usize {
        self.0
            .iter()
            .map(|(name, value)| name.len() + value.len())
            .sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The headers as librdkafka takes them.
    pub fn to_kafka(&self) -> OwnedHeaders {
        self.iter().fold(
            OwnedHeaders::new_with_capacity(self.len()),
            |list, (key, value)| {
                list.insert(Header {
                    key,
                    value: Some(value),
                })
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Headers;

    use super::*;

    #[test]
    fn headers_keep_their_order_and_reach_kafka_unchanged() {
        let mut headers = RecordHeaders::new();
        headers.push("ce_id", "id-1".to_string());
        headers.push("trace", "t-1");
        headers.push("ce_id", "second");
        assert_eq!(headers.len(), 3);
        assert_eq!(headers.get("ce_id"), Some("id-1"));
        assert_eq!(headers.get("missing"), None);
        let kafka = headers.to_kafka();
        let seen: Vec<(String, String)> = kafka
            .iter()
            .map(|h| {
                (
                    h.key.to_string(),
                    String::from_utf8(h.value.unwrap_or_default().to_vec()).unwrap(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [("ce_id", "id-1"), ("trace", "t-1"), ("ce_id", "second")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert!(RecordHeaders::new().is_empty());
    }
}
