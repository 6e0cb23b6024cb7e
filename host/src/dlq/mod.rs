//! `stagehost dlq list | replay`: the dead letters of a pipeline, and sending them back to
//! their source topic once the plugin is fixed.
//!
//! A replay publishes the original event to its source topic with a new id derived from the
//! dead letter (so stages that remember processed ids do not drop it as a duplicate) and a
//! [`TARGET_STAGE_HEADER`] naming the failed stage, so the other stages reading that topic
//! skip it. In the same Kafka transaction it writes a marker keyed by the dead letter's id to
//! the compacted `<dead-letter topic>-replayed` topic; a dead letter with a marker is never
//! replayed again. The replay producer has one fixed transactional id, so a concurrent replay
//! fences this one, and markers are read only after fencing: replaying twice publishes once.
//!
//! A dead letter is replayed only to a stage that still reads its source topic (the
//! configuration may have changed since), and a letter whose `original_event` was cut to fit
//! is replayed with the whole event, read back from its source partition and offset
//! ([`original`]).

mod original;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, Producer};
use serde::{Deserialize, Serialize};

use crate::config::PipelineConfig;
use crate::event::cloudevents::{self, CloudEvent};
use crate::event::dead_letter::DeadLetter;
use crate::event::headers::RecordHeaders;
use crate::kafka::{
    KafkaClients, OutRecord, Transaction, TxnErrorKind, ensure_changelog, for_each_committed,
    partition_count,
};
pub use crate::stage::TARGET_STAGE_HEADER;

/// Header of a replayed event naming the dead letter it came from.
pub const REPLAY_OF_HEADER: &str = "stagehost-replay-of";
/// Transactional id of replays: one replay at a time per cluster and dead-letter topic.
const REPLAY_TRANSACTIONAL_ID: &str = "stagehost-dlq-replay";
/// How long reading a topic to its end may take.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// One dead letter as read from the dead-letter topic.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterEntry {
    /// The dead letter's own id (`ce_id`).
    pub id: String,
    /// Record key (the failed event's key).
    pub key: Option<String>,
    /// The envelope.
    #[serde(flatten)]
    pub letter: DeadLetter,
    /// When it was replayed, if it was.
    pub replayed_at: Option<String>,
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
struct Marker {
    replayed_at: String,
    replay_id: String,
    stage: String,
}

/// What a replay did.
#[derive(Debug, Default, Serialize)]
pub struct ReplayReport {
    /// Dead letters sent back now (their ids).
    pub replayed: Vec<String>,
    /// Dead letters replayed before, with when; not sent again.
    pub already_replayed: Vec<(String, String)>,
    /// Dead letters that cannot be replayed, with why.
    pub not_replayable: Vec<(String, String)>,
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

/// Sends the dead letters of `filter` (whose `stage` must be set) back to their source
/// topics, each at most once ever.
pub async fn replay(config: &PipelineConfig, filter: &Filter) -> anyhow::Result<ReplayReport> {
    let stage = filter.stage.clone().context(
        "replay needs --stage: a dead letter is replayed for the stage that failed on it",
    )?;
    anyhow::ensure!(
        config.stages.iter().any(|s| s.name == stage),
        "no stage named '{stage}' in the configuration"
    );
    let markers_topic = marker_topic(&config.dead_letter.topic);
    let kafka = KafkaClients::new(&config.kafka);
    ensure_changelog(&kafka, &markers_topic, 1, 1).await?;
    let producer: FutureProducer = kafka
        .transactional_producer(REPLAY_TRANSACTIONAL_ID)
        .create()
        .context("cannot create the replay producer")?;
    // Fence any replay still running before reading what was replayed.
    tokio::task::block_in_place(|| producer.init_transactions(Duration::from_secs(60)))
        .context("cannot initialise the replay transaction")?;
    let config_for_read = config.clone();
    let filter_for_read = filter.clone();
    let entries = tokio::task::spawn_blocking(move || list(&config_for_read, &filter_for_read))
        .await
        .context("the dead-letter reader failed")??;

    let mut report = ReplayReport::default();
    let mut records = Vec::new();
    for entry in entries {
        if let Some(at) = &entry.replayed_at {
            report.already_replayed.push((entry.id.clone(), at.clone()));
            continue;
        }
        let payload = match check_replayable(config, &entry.letter) {
            Ok(()) => payload_of(config, &entry.letter).await,
            Err(reason) => Err(reason),
        };
        match payload {
            Ok(payload) => {
                records.extend(replay_records(config, &entry, payload, &markers_topic));
                report.replayed.push(entry.id.clone());
            }
            Err(reason) => report.not_replayable.push((entry.id.clone(), reason)),
        }
    }
    if records.is_empty() {
        return Ok(report);
    }
    let mut txn = Transaction::new(producer);
    for record in &records {
        txn.send(record).await.map_err(|error| {
            anyhow::anyhow!("the replay was not published ({error}); nothing was replayed")
        })?;
    }
    txn.commit(None).await.map_err(|error| match error.kind {
        TxnErrorKind::Fenced => {
            anyhow::anyhow!("another replay took over ({error}); this one replayed nothing")
        }
        TxnErrorKind::Retriable => {
            anyhow::anyhow!("the replay was aborted ({error}); nothing was replayed")
        }
        TxnErrorKind::Fatal => anyhow::anyhow!(
            "whether the replay committed is not known ({error}); `dlq list` shows what was replayed, and replaying again sends only the rest"
        ),
    })?;
    Ok(report)
}

/// Why `letter` cannot be replayed with the current configuration, if it cannot: it failed in
/// the HTTP ingress, or its stage is gone or no longer reads its source topic (a replay would
/// go to a topic the stage does not read, and be lost).
fn check_replayable(config: &PipelineConfig, letter: &DeadLetter) -> Result<(), String> {
    let source = &letter.origin.source_topic;
    let stage = &letter.origin.stage;
    if source == crate::config::HTTP_INPUT {
        return Err("it failed in the HTTP ingress; submit the request again instead".into());
    }
    let Some(config) = config.stages.iter().find(|s| &s.name == stage) else {
        return Err(format!(
            "stage {stage} is no longer in the configuration; nothing would read the replay"
        ));
    };
    let inputs = config.inputs();
    if !inputs.contains(&source.as_str()) {
        return Err(format!(
            "stage {stage} no longer reads topic {source} (its inputs are {}); a replay there \
             would reach no stage. Put {source} back in the stage's input to replay it",
            inputs.join(", ")
        ));
    }
    Ok(())
}

/// The failed event's body: from the letter, or, when the letter holds only its beginning,
/// read back from its source partition and offset and checked against the letter's digest.
async fn payload_of(config: &PipelineConfig, letter: &DeadLetter) -> Result<Vec<u8>, String> {
    if !letter.is_original_truncated() {
        return Ok(match &letter.original_event {
            serde_json::Value::String(text) => text.clone().into_bytes(),
            other => other.to_string().into_bytes(),
        });
    }
    let kafka = KafkaClients::new(&config.kafka);
    let letter = letter.clone();
    tokio::task::spawn_blocking(move || original::read(&kafka, &letter, READ_TIMEOUT))
        .await
        .map_err(|error| format!("reading its original event failed: {error}"))?
}

/// The replayed event (with `payload` as its body) and its marker.
fn replay_records(
    config: &PipelineConfig,
    entry: &DeadLetterEntry,
    payload: Vec<u8>,
    markers_topic: &str,
) -> [OutRecord; 2] {
    let letter = &entry.letter;
    let source = &letter.origin.source_topic;
    let replay_id = uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("replay\n{}", entry.id).as_bytes(),
    )
    .to_string();
    let event_type = letter.event_type.clone().unwrap_or_else(|| {
        config
            .topics
            .get(source)
            .and_then(|t| t.event_type.clone())
            .unwrap_or_else(|| source.clone())
    });
    let now = cloudevents::now_rfc3339();
    let attributes = CloudEvent {
        id: replay_id.clone(),
        event_type,
        source: "/stagehost/dlq-replay".into(),
        time: now.clone(),
        plugin_version: None,
    };
    let event = OutRecord {
        topic: source.clone(),
        partition: None,
        key: entry.key.clone(),
        payload: Some(payload),
        headers: attributes.to_headers([
            (TARGET_STAGE_HEADER, letter.origin.stage.as_str()),
            (REPLAY_OF_HEADER, entry.id.as_str()),
        ]),
        id: replay_id.clone(),
    };
    let marker = Marker {
        replayed_at: now,
        replay_id,
        stage: letter.origin.stage.clone(),
    };
    let marker = OutRecord {
        topic: markers_topic.to_string(),
        partition: Some(0),
        key: Some(entry.id.clone()),
        payload: Some(serde_json::to_vec(&marker).unwrap_or_default()),
        headers: RecordHeaders::new(),
        id: format!("replay-marker:{}", entry.id),
    };
    [event, marker]
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
            entry
                .replayed_at
                .as_deref()
                .map(|at| format!("  (replayed {at})"))
                .unwrap_or_default(),
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
mod tests {
    use super::*;
    use crate::event::dead_letter::Origin;

    fn entry(stage: &str, timestamp: &str) -> DeadLetterEntry {
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

    /// A configuration with stage `s` reading `input` (a TOML value) and topics `DLQ`, `A`, `B`.
    fn config_with(input: &str) -> PipelineConfig {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.wasm"), b"").unwrap();
        // A stage fed over HTTP needs a route.
        let route = if input == "\"http\"" {
            "[[http.routes]]\npath = \"/in\"\nstage = \"s\"\nid_field = \"id\"\nevent_type = \"In\"\n"
        } else {
            ""
        };
        let config = crate::config::parse(
            &format!(
                "[kafka]\nbrokers = \"x:1\"\n[kpi]\nenabled = false\n{route}\
                 [dead_letter]\ntopic = \"DLQ\"\n[topics.DLQ]\n[topics.A]\n[topics.B]\n\
                 [[stages]]\nname = \"s\"\nplugin = \"p.wasm\"\ninput = {input}\n"
            ),
            std::path::Path::new("test.toml"),
            dir.path(),
            &crate::config::Overrides::default(),
        );
        match config {
            Ok(config) => config,
            Err(error) => panic!("{error}"),
        }
    }

    #[test]
    fn ingress_dead_letters_are_not_replayable() {
        let config = config_with("\"http\"");
        let mut http = entry("s", "2026-11-25T10:00:00Z");
        http.letter.origin.source_topic = "http".into();
        let error = check_replayable(&config, &http.letter).unwrap_err();
        assert!(error.contains("HTTP ingress"), "{error}");
    }

    #[test]
    fn a_stage_that_no_longer_reads_the_source_topic_gets_no_replay() {
        let mut letter = entry("s", "2026-11-25T10:00:00Z").letter;
        letter.origin.source_topic = "A".into();
        assert_eq!(
            check_replayable(&config_with("[\"B\", \"A\"]"), &letter),
            Ok(())
        );
        let error = check_replayable(&config_with("\"B\""), &letter).unwrap_err();
        assert!(
            error.contains("stage s no longer reads topic A (its inputs are B)"),
            "{error}"
        );
        letter.origin.stage = "gone".into();
        let error = check_replayable(&config_with("\"A\""), &letter).unwrap_err();
        assert!(
            error.contains("stage gone is no longer in the configuration"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_whole_letter_replays_its_own_original_event() {
        let config = config_with("\"A\"");
        let letter = entry("s", "2026-11-25T10:00:00Z").letter;
        let payload = payload_of(&config, &letter).await.unwrap();
        assert_eq!(payload, br#"{"item_id":"i-1"}"#);
    }
}
