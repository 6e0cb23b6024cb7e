//! CloudEvents attributes carried as Kafka headers (binary content mode of the CloudEvents
//! Kafka protocol binding), and the deterministic event ids the host derives.

use rdkafka::message::{BorrowedHeaders, Headers};
use uuid::Uuid;

use super::headers::RecordHeaders;

/// `ce_specversion` of every event the host writes.
pub const SPEC_VERSION: &str = "1.0";
/// Header carrying the event id.
pub const ID: &str = "ce_id";
/// Header carrying the event type.
pub const TYPE: &str = "ce_type";
/// Header carrying the event source.
pub const SOURCE: &str = "ce_source";
/// Header carrying the event time (RFC 3339).
pub const TIME: &str = "ce_time";
/// Header carrying the CloudEvents spec version.
pub const SPECVERSION: &str = "ce_specversion";
/// Extension attribute: content hash of the plugin version that produced the event.
pub const PLUGIN_VERSION: &str = "ce_pluginversion";
/// The body's media type.
pub const CONTENT_TYPE: &str = "content-type";

/// `ce_source` of the events a stage publishes.
pub fn stage_source(stage: &str) -> String {
    format!("/stagehost/{stage}")
}

/// Namespace of every id the host derives (a fixed, random UUID).
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x6a1c_55e4_2f0b_4d7e_9a43_8b1f_c2d3_e4f5);

/// The CloudEvents attributes of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEvent {
    /// `ce_id`: identity used for deduplication.
    pub id: String,
    /// `ce_type`.
    pub event_type: String,
    /// `ce_source`: `/stagehost/<stage>` for events the host writes.
    pub source: String,
    /// `ce_time`, RFC 3339.
    pub time: String,
    /// Plugin version that produced the event, when a plugin did.
    pub plugin_version: Option<String>,
}

impl CloudEvent {
    /// Encodes the attributes (and `extra` headers, minus any `ce_*` ones) as Kafka headers.
    pub fn to_headers<'a>(
        &self,
        extra: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> RecordHeaders {
        let mut headers = RecordHeaders::with_capacity(8);
        headers.push(SPECVERSION, SPEC_VERSION);
        headers.push(ID, self.id.clone());
        headers.push(TYPE, self.event_type.clone());
        headers.push(SOURCE, self.source.clone());
        headers.push(TIME, self.time.clone());
        headers.push(CONTENT_TYPE, "application/json");
        if let Some(version) = &self.plugin_version {
            headers.push(PLUGIN_VERSION, version.clone());
        }
        for (name, value) in extra {
            if !name.starts_with("ce_") && name != CONTENT_TYPE {
                headers.push(name.to_string(), value.to_string());
            }
        }
        headers
    }
}

/// Every header of a record as UTF-8 text (values that are not UTF-8 are replaced lossily).
pub fn header_pairs(headers: Option<&BorrowedHeaders>) -> Vec<(String, String)> {
    let Some(headers) = headers else {
        return Vec::new();
    };
    headers
        .iter()
        .map(|h| {
            let value = h
                .value
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            (h.key.to_string(), value)
        })
        .collect()
}

/// The value of header `name`, if present.
pub fn find<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// The id of output number `position` that `stage` emitted for input `input_id`.
/// Re-processing the same input gives the same ids, so the next stage can drop repeats.
pub fn output_id(input_id: &str, stage: &str, position: usize) -> String {
    derive(&format!("out\n{input_id}\n{stage}\n{position}"))
}

/// The id of the dead letter `stage` writes for input `input_id`.
pub fn dead_letter_id(input_id: &str, stage: &str) -> String {
    derive(&format!("dlq\n{input_id}\n{stage}"))
}

/// The id of an ingress request identified by `request_key` (e.g. a request id).
pub fn ingress_id(request_key: &str) -> String {
    derive(&format!("http\n{request_key}"))
}

/// The id of a record that arrived without `ce_id` (written by a foreign producer).
pub fn position_id(topic: &str, partition: i32, offset: i64) -> String {
    derive(&format!("pos\n{topic}\n{partition}\n{offset}"))
}

fn derive(name: &str) -> String {
    Uuid::new_v5(&ID_NAMESPACE, name.as_bytes()).to_string()
}

/// Now, formatted as RFC 3339 (UTC).
pub fn now_rfc3339() -> String {
    rfc3339(std::time::SystemTime::now())
}

/// `time` as an RFC 3339 UTC timestamp.
pub fn rfc3339(time: std::time::SystemTime) -> String {
    time::OffsetDateTime::from(time)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Longest `ce_type` a stage accepts.
pub const MAX_TYPE_BYTES: usize = 256;
/// Longest `ce_source` a stage accepts.
pub const MAX_SOURCE_BYTES: usize = 1024;
/// Longest `ce_time` a stage accepts (an RFC 3339 timestamp with nanoseconds and an offset is
/// 35 bytes).
pub const MAX_TIME_BYTES: usize = 64;

/// Why the CloudEvents attributes among `headers` (`ce_type`, `ce_source`, `ce_time`) may not be
/// passed on, if they may not: too long, a control character, or a `ce_time` that is not an
/// RFC 3339 timestamp. A plugin copies what it reads (a status timeline records `ce_time`), so
/// a hostile producer could otherwise grow state and outputs without bound. (`ce_id` is checked
/// where the id is taken.)
pub fn check_attributes(headers: &[(String, String)]) -> Result<(), String> {
    for (name, max) in [
        (TYPE, MAX_TYPE_BYTES),
        (SOURCE, MAX_SOURCE_BYTES),
        (TIME, MAX_TIME_BYTES),
    ] {
        let Some(value) = find(headers, name) else {
            continue;
        };
        if value.len() > max {
            return Err(format!(
                "the {name} header is {} bytes long; at most {max} are accepted",
                value.len()
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(format!("the {name} header has a control character"));
        }
    }
    if let Some(value) = find(headers, TIME)
        && time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
            .is_err()
    {
        return Err(format!(
            "the {TIME} header {value:?} is not an RFC 3339 timestamp"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_bounded_and_a_time_must_be_a_timestamp() {
        let with = |name: &str, value: &str| vec![(name.to_string(), value.to_string())];
        assert!(check_attributes(&with(TIME, "2026-12-07T09:00:00.123456789+02:00")).is_ok());
        assert!(check_attributes(&with(TIME, &now_rfc3339())).is_ok());
        assert!(check_attributes(&[]).is_ok());
        let long = "2".repeat(100_000);
        let refused = check_attributes(&with(TIME, &long)).unwrap_err();
        assert!(refused.contains("100000 bytes"), "{refused}");
        assert!(check_attributes(&with(TIME, "yesterday")).is_err());
        assert!(check_attributes(&with(TYPE, &"T".repeat(MAX_TYPE_BYTES + 1))).is_err());
        assert!(check_attributes(&with(TYPE, "Order")).is_ok());
        assert!(
            check_attributes(&with(SOURCE, "/x\ny")).is_err(),
            "a newline"
        );
        assert!(
            check_attributes(&with(SOURCE, "/x\u{0}y")).is_err(),
            "a NUL"
        );
    }

    #[test]
    fn output_ids_are_deterministic_and_distinct() {
        let a = output_id("in-1", "enricher", 0);
        assert_eq!(a, output_id("in-1", "enricher", 0));
        assert_ne!(a, output_id("in-1", "enricher", 1));
        assert_ne!(a, output_id("in-1", "warehouse", 0));
        assert_ne!(a, output_id("in-2", "enricher", 0));
        assert_ne!(dead_letter_id("in-1", "enricher"), a);
        assert!(Uuid::parse_str(&a).is_ok());
    }

    #[test]
    fn headers_round_trip_and_drop_foreign_ce_headers() {
        let event = CloudEvent {
            id: "id-1".into(),
            event_type: "ThingConfirmed".into(),
            source: "/stagehost/enricher".into(),
            time: "2026-11-25T10:00:00Z".into(),
            plugin_version: Some("sha256:00".into()),
        };
        let headers = event
            .to_headers([("ce_id", "forged"), ("trace", "t-1")])
            .to_kafka();
        let borrowed: &BorrowedHeaders = headers.as_borrowed();
        let pairs = header_pairs(Some(borrowed));
        assert_eq!(find(&pairs, ID), Some("id-1"));
        assert_eq!(find(&pairs, TYPE), Some("ThingConfirmed"));
        assert_eq!(find(&pairs, SPECVERSION), Some("1.0"));
        assert_eq!(find(&pairs, PLUGIN_VERSION), Some("sha256:00"));
        assert_eq!(find(&pairs, "trace"), Some("t-1"));
        assert_eq!(pairs.iter().filter(|(k, _)| k == ID).count(), 1);
    }
}
