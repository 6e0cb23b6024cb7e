//! What a trace holds: the key's events in time order with the hop between consecutive ones,
//! its dead letters, and the time from the first event to the last.

use serde::Serialize;

use super::matching::MatchedBy;
use crate::dlq::DeadLetterEntry;

/// Everything one key produced on the pipeline's topics.
#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    /// The key looked for.
    pub key: String,
    /// The topics read, in pipeline order.
    pub topics: Vec<String>,
    /// Topics of the pipeline the cluster does not have (nothing was written to them yet).
    pub missing_topics: Vec<String>,
    /// The key's events (dead letters included, on the dead-letter topic), oldest first.
    pub events: Vec<TraceEvent>,
    /// The key's dead letters, with their envelopes and whether they were replayed.
    pub dead_letters: Vec<DeadLetterEntry>,
    /// Milliseconds from the first event to the last (`None` without events).
    pub total_ms: Option<i64>,
}

/// One record of the key.
#[derive(Debug, Clone, Serialize)]
pub struct TraceEvent {
    /// The record's timestamp (RFC 3339, UTC, milliseconds).
    pub time: String,
    /// The record's timestamp in Unix milliseconds.
    pub timestamp_ms: i64,
    /// Milliseconds since the previous event of the trace (`None` for the first).
    pub hop_ms: Option<i64>,
    /// Its topic.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// `ce_type`.
    pub event_type: Option<String>,
    /// `ce_id`.
    pub id: Option<String>,
    /// `ce_source`: `/stagehost/<stage>` for what a stage wrote.
    pub source: Option<String>,
    /// Its record key.
    pub key: Option<String>,
    /// Why it belongs to the key: `"key"`, or the body's id field that holds it.
    pub matched_by: MatchedBy,
    /// Its body (JSON, or its text when it is not JSON).
    pub payload: serde_json::Value,
}

impl Trace {
    /// The trace of `events` (in any order): sorted by time (ties in `topics` order, then by
    /// partition and offset), each with its hop from the one before.
    pub fn new(
        key: &str,
        topics: Vec<String>,
        missing_topics: Vec<String>,
        mut events: Vec<TraceEvent>,
        dead_letters: Vec<DeadLetterEntry>,
    ) -> Self {
        let rank = |topic: &str| topics.iter().position(|t| t == topic).unwrap_or(usize::MAX);
        events.sort_by(|a, b| {
            (a.timestamp_ms, rank(&a.topic), a.partition, a.offset).cmp(&(
                b.timestamp_ms,
                rank(&b.topic),
                b.partition,
                b.offset,
            ))
        });
        let mut previous = None;
        for event in &mut events {
            event.hop_ms = previous.map(|at| event.timestamp_ms - at);
            previous = Some(event.timestamp_ms);
        }
        let total_ms = match (events.first(), events.last()) {
            (Some(first), Some(last)) => Some(last.timestamp_ms - first.timestamp_ms),
            _ => None,
        };
        Self {
            key: key.to_string(),
            topics,
            missing_topics,
            events,
            dead_letters,
            total_ms,
        }
    }
}

/// A Unix-millisecond timestamp as RFC 3339 in UTC with milliseconds
/// (`2026-12-07T17:55:01.123Z`).
pub fn rfc3339_millis(ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// An event of `topic` at `ms`.
    pub(in crate::trace) fn event(topic: &str, ms: i64, offset: i64) -> TraceEvent {
        TraceEvent {
            time: rfc3339_millis(ms),
            timestamp_ms: ms,
            hop_ms: None,
            topic: topic.into(),
            partition: 0,
            offset,
            event_type: Some(topic.into()),
            id: Some(format!("id-{topic}-{offset}")),
            source: None,
            key: Some("o-1".into()),
            matched_by: "key".into(),
            payload: serde_json::json!({"order_id": "o-1"}),
        }
    }

    #[test]
    fn events_are_in_time_order_with_their_hops() {
        let topics = vec!["A".to_string(), "B".to_string(), "C".to_string()];
        let events = vec![
            event("C", 1_030, 0),
            event("A", 1_000, 4),
            event("B", 1_012, 9),
            // Same time as B: after it, in topic order.
            event("C", 1_012, 1),
        ];
        let trace = Trace::new("o-1", topics, Vec::new(), events, Vec::new());
        let order: Vec<_> = trace
            .events
            .iter()
            .map(|e| (e.topic.as_str(), e.hop_ms))
            .collect();
        assert_eq!(
            order,
            [
                ("A", None),
                ("B", Some(12)),
                ("C", Some(0)),
                ("C", Some(18))
            ]
        );
        assert_eq!(trace.total_ms, Some(30));
        let empty = Trace::new("o-2", Vec::new(), Vec::new(), Vec::new(), Vec::new());
        assert_eq!(empty.total_ms, None);
    }

    #[test]
    fn times_are_utc_with_milliseconds() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(1_796_665_301_123),
            "2026-12-07T17:41:41.123Z"
        );
    }
}
