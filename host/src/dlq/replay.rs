//! `stagehost dlq replay`: sending dead letters back to their source topic, each at most once
//! ever (see the module docs of [`crate::dlq`]).

use std::time::Duration;

use anyhow::Context;
use rdkafka::producer::{FutureProducer, Producer};
use serde::Serialize;

use super::list::{DeadLetterEntry, Filter, Marker, READ_TIMEOUT, list, marker_topic};
use super::original;
use crate::config::PipelineConfig;
use crate::event::cloudevents::{self, CloudEvent};
use crate::event::dead_letter::DeadLetter;
use crate::event::headers::RecordHeaders;
use crate::kafka::{KafkaClients, OutRecord, Transaction, TxnErrorKind, ensure_changelog};
use crate::stage::TARGET_STAGE_HEADER;

/// Header of a replayed event naming the dead letter it came from.
pub const REPLAY_OF_HEADER: &str = "stagehost-replay-of";
/// Transactional id of replays: one replay at a time per cluster and dead-letter topic.
const REPLAY_TRANSACTIONAL_ID: &str = "stagehost-dlq-replay";

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
    let replication = config.topic_replication(&config.dead_letter.topic);
    ensure_changelog(&kafka, &markers_topic, 1, replication).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlq::list::tests::entry;

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
