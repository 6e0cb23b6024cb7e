//! `stagehost dlq list`: reading the dead letters of a pipeline and the markers of those
//! already replayed, filtering them, and the table that shows them.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rdkafka::message::Message;
use serde::{Deserialize, Serialize};

use crate::config::PipelineConfig;
use crate::event::cloudevents;
use crate::event::dead_letter::DeadLetter;
use crate::kafka::{KafkaClients, for_each_committed, partition_count};

/// How long reading a topic to its end may take.
pub(super) const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// One dead letter as read from the dead-letter topic.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterEntry {
    /// The dead letter's own id (`ce_id`).
    pub id: String,
    /// Record key (the failed event's key).
    pub key: Option<String>,
    /// The kind of failure ([`DeadLetter::reason`]).
    pub reason: String,
    /// The envelope.
    #[serde(flatten)]
    pub letter: DeadLetter,
    /// When it was replayed, if it was.
    pub replayed_at: Option<String>,
}

impl DeadLetterEntry {
    /// `  (replayed <when>)` for a replayed letter, nothing otherwise: the suffix of its line.
    pub fn replayed_note(&self) -> String {
        self.replayed_at
            .as_deref()
            .map(|at| format!("  (replayed {at})"))
            .unwrap_or_default()
    }
}

/// Which dead letters to show or replay.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this stage's.
    pub stage: Option<String>,
    /// Only those dead-lettered at or after this time.
    pub since: Option<SystemTime>,
    /// Only the one with this dead-letter id or failed event id.
    pub id: Option<String>,
}

impl Filter {
    fn matches(&self, entry: &DeadLetterEntry) -> bool {
        let stage = self
            .stage
            .as_ref()
            .is_none_or(|stage| &entry.letter.origin.stage == stage);
        let id = self
            .id
            .as_ref()
            .is_none_or(|id| &entry.id == id || &entry.letter.event_id == id);
        let since = self
            .since
            .is_none_or(|since| parse_time(&entry.letter.timestamp).is_some_and(|at| at >= since));
        stage && id && since
    }
}

/// A replay marker: what was replayed when.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Marker {
    pub(super) replayed_at: String,
    pub(super) replay_id: String,
    pub(super) stage: String,
}

/// The marker topic of a dead-letter topic.
pub fn marker_topic(dead_letter_topic: &str) -> String {
    format!("{dead_letter_topic}-replayed")
}

/// Parses `--since`: a duration back from now (`10m`, `2h`) or an RFC 3339 time.
pub fn parse_since(text: &str) -> anyhow::Result<SystemTime> {
    if let Ok(ago) = humantime::parse_duration(text) {
        return Ok(SystemTime::now() - ago);
    }
    parse_time(text).with_context(|| {
        format!(
            "--since '{text}' is neither a duration like 30m nor a time like 2026-11-25T10:00:00Z"
        )
    })
}

fn parse_time(text: &str) -> Option<SystemTime> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(SystemTime::from)
}

/// Every committed dead letter matching `filter`, oldest first per partition, with when each
/// was replayed. Blocking.
pub fn list(config: &PipelineConfig, filter: &Filter) -> anyhow::Result<Vec<DeadLetterEntry>> {
    let markers = read_markers(config)?;
    let mut entries = read_dead_letters(config)?;
    for entry in &mut entries {
        entry.replayed_at = markers.get(&entry.id).map(|m| m.replayed_at.clone());
    }
    entries.retain(|entry| filter.matches(entry));
    Ok(entries)
}

fn read_dead_letters(config: &PipelineConfig) -> anyhow::Result<Vec<DeadLetterEntry>> {
    let kafka = KafkaClients::new(&config.kafka);
    let topic = &config.dead_letter.topic;
    let mut entries = Vec::new();
    for partition in 0..partition_count(&kafka, topic)? {
        for_each_committed(&kafka, topic, partition, READ_TIMEOUT, |message| {
            let headers = cloudevents::header_pairs(message.headers());
            let Some(letter) = message
                .payload()
                .and_then(|payload| serde_json::from_slice::<DeadLetter>(payload).ok())
            else {
                tracing::warn!(
                    partition,
                    offset = message.offset(),
                    "skipping a record that is not a dead letter"
                );
                return;
            };
            let id = cloudevents::find(&headers, cloudevents::ID)
                .map(str::to_string)
                .unwrap_or_else(|| cloudevents::position_id(topic, partition, message.offset()));
            entries.push(DeadLetterEntry {
                id,
                key: message
                    .key()
                    .map(|key| String::from_utf8_lossy(key).into_owned()),
                reason: letter.reason().to_string(),
                letter,
                replayed_at: None,
            });
        })?;
    }
    Ok(entries)
}

fn read_markers(config: &PipelineConfig) -> anyhow::Result<HashMap<String, Marker>> {
    let kafka = KafkaClients::new(&config.kafka);
    let topic = marker_topic(&config.dead_letter.topic);
    let mut markers = HashMap::new();
    let partitions = match partition_count(&kafka, &topic) {
        Ok(partitions) => partitions,
        // No marker topic yet: nothing was ever replayed.
        Err(_) => return Ok(markers),
    };
    for partition in 0..partitions {
        for_each_committed(&kafka, &topic, partition, READ_TIMEOUT, |message| {
            let (Some(key), Some(payload)) = (message.key(), message.payload()) else {
                return;
            };
            if let Ok(marker) = serde_json::from_slice::<Marker>(payload) {
                markers.insert(String::from_utf8_lossy(key).into_owned(), marker);
            }
        })?;
    }
    Ok(markers)
}

/// The `dlq list` table: one block per dead letter.
pub fn render(entries: &[DeadLetterEntry]) -> String {
    let mut out = String::new();
    for entry in entries {
        let letter = &entry.letter;
        out.push_str(&format!(
            "{}  {}  {}/{}@{}  attempts {}  {}  id {}{}\n    event {}  key {}\n    error: {}\n",
            letter.timestamp,
            letter.origin.stage,
            letter.origin.source_topic,
            letter.origin.partition,
            letter.origin.offset,
            letter.attempts,
            letter.plugin_version,
            entry.id,
            entry.replayed_note(),
            letter.event_id,
            entry.key.as_deref().unwrap_or("-"),
            letter.error,
        ));
        if let Some(cut) = letter.truncated.get("original_event") {
            out.push_str(&format!(
                "    original event cut to fit: {} bytes, sha256 {} (whole at {}/{}@{})\n",
                cut.size_bytes,
                cut.sha256,
                letter.origin.source_topic,
                letter.origin.partition,
                letter.origin.offset
            ));
        }
    }
    out.push_str(&format!("{} dead letter(s)\n", entries.len()));
    out
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::event::dead_letter::Origin;

    /// A dead letter of `stage` with `timestamp`, id `dl-1`, failed event `event-1`.
    pub(in crate::dlq) fn entry(stage: &str, timestamp: &str) -> DeadLetterEntry {
        let mut letter = DeadLetter::new(
            br#"{"item_id":"i-1"}"#,
            "rejected: no".into(),
            Origin {
                stage: stage.into(),
                source_topic: "ItemChecked".into(),
                partition: 0,
                offset: 3,
            },
            "sha256:aa",
            "event-1",
        );
        letter.timestamp = timestamp.into();
        DeadLetterEntry {
            id: "dl-1".into(),
            key: Some("o-1".into()),
            reason: letter.reason().to_string(),
            letter,
            replayed_at: None,
        }
    }

    #[test]
    fn filters_by_stage_id_and_time() {
        let old = entry("warehouse", "2026-01-01T00:00:00Z");
        let new = entry("shipper", "2026-11-25T10:00:00Z");
        let since = parse_since("2026-06-01T00:00:00Z").unwrap();
        let filter = Filter {
            since: Some(since),
            ..Filter::default()
        };
        assert!(!filter.matches(&old));
        assert!(filter.matches(&new));
        let filter = Filter {
            stage: Some("warehouse".into()),
            ..Filter::default()
        };
        assert!(filter.matches(&old) && !filter.matches(&new));
        for id in ["dl-1", "event-1"] {
            let filter = Filter {
                id: Some(id.into()),
                ..Filter::default()
            };
            assert!(filter.matches(&old), "{id}");
        }
        let filter = Filter {
            id: Some("other".into()),
            ..Filter::default()
        };
        assert!(!filter.matches(&old));
    }

    #[test]
    fn since_takes_durations_and_times_and_names_bad_input() {
        let ten_minutes_ago = parse_since("10m").unwrap();
        let elapsed = SystemTime::now().duration_since(ten_minutes_ago).unwrap();
        assert!(elapsed >= Duration::from_secs(600) && elapsed < Duration::from_secs(610));
        let error = parse_since("yesterday").unwrap_err().to_string();
        assert!(error.contains("yesterday"), "{error}");
    }
}
