//! Looking a key up: which topics a pipeline has, and reading them for the key's records.

use std::time::Duration;

use anyhow::Context;
use rdkafka::message::{BorrowedMessage, Message};

use super::matching::KeyMatcher;
use super::model::{Trace, TraceEvent, rfc3339_millis};
use crate::config::{HTTP_INPUT, PipelineConfig};
use crate::event::cloudevents;
use crate::kafka::{KafkaClients, for_each_committed_in};

/// How long reading every topic to its end may take.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Every topic the pipeline names, in pipeline order, each once: the stages' inputs and
/// outputs (in stage order), the read models' topics, the dead-letter topic, and the KPI
/// topic when KPIs are published.
pub fn pipeline_topics(config: &PipelineConfig) -> Vec<String> {
    let stages = config.stages.iter().flat_map(|stage| {
        let inputs = stage.inputs().into_iter().filter(|t| *t != HTTP_INPUT);
        inputs.chain(stage.outputs.values().map(String::as_str))
    });
    let views = config.http.views.iter().map(|view| view.topic.as_str());
    let dead_letters = std::iter::once(config.dead_letter.topic.as_str());
    let kpis = config.kpi.enabled.then_some(config.kpi.topic.as_str());
    let mut topics: Vec<String> = Vec::new();
    for topic in stages.chain(views).chain(dead_letters).chain(kpis) {
        if !topics.iter().any(|t| t == topic) {
            topics.push(topic.to_string());
        }
    }
    topics
}

/// Every event of `key` on every topic of the pipeline, read `read_committed` from the
/// beginning up to the end offsets the topics have when this starts, and its dead letters
/// (see [`super::matching`] for which records belong to a key). Blocking: call it off the
/// async threads.
pub fn lookup(config: &PipelineConfig, key: &str) -> anyhow::Result<Trace> {
    anyhow::ensure!(
        !key.is_empty(),
        "the key to trace is empty; give an order id"
    );
    let matcher = KeyMatcher::new(key, config);
    let topics = pipeline_topics(config);
    let kafka = KafkaClients::new(&config.kafka);
    let mut events = Vec::new();
    let missing = for_each_committed_in(&kafka, &topics, READ_TIMEOUT, |message| {
        if let Some(matched_by) = matcher.record(message.key(), message.payload()) {
            events.push(event_of(message, matched_by));
        }
    })
    .with_context(|| format!("cannot read the pipeline's topics at {}", kafka.brokers()))?;
    let mut dead_letters = crate::dlq::list(config, &crate::dlq::Filter::default())
        .context("cannot read the dead letters")?;
    dead_letters.retain(|entry| matcher.letter(entry));
    Ok(Trace::new(key, topics, missing, events, dead_letters))
}

/// The trace event of a record that matched.
fn event_of(message: &BorrowedMessage<'_>, matched_by: String) -> TraceEvent {
    let headers = cloudevents::header_pairs(message.headers());
    let header = |name| cloudevents::find(&headers, name).map(str::to_string);
    let payload = message.payload().unwrap_or_default();
    let timestamp_ms = message.timestamp().to_millis().unwrap_or(0);
    TraceEvent {
        time: rfc3339_millis(timestamp_ms),
        timestamp_ms,
        hop_ms: None,
        topic: message.topic().to_string(),
        partition: message.partition(),
        offset: message.offset(),
        event_type: header(cloudevents::TYPE),
        id: header(cloudevents::ID),
        source: header(cloudevents::SOURCE),
        key: message
            .key()
            .map(|key| String::from_utf8_lossy(key).into_owned()),
        matched_by,
        payload: serde_json::from_slice(payload).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(payload).into_owned())
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipeline_names_its_topics_once_in_pipeline_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.wasm"), b"").unwrap();
        let text = r#"
            [kafka]
            brokers = "x:1"
            [[http.routes]]
            path = "/in"
            stage = "a"
            id_field = "id"
            event_type = "In"
            [[http.views]]
            path = "/things/{id}"
            topic = "V"
            [dead_letter]
            topic = "DLQ"
            [topics.A]
            [topics.B]
            [topics.C]
            [topics.V]
            [topics.DLQ]
            [topics.KPIs]
            [[stages]]
            name = "a"
            plugin = "p.wasm"
            input = "http"
            outputs = { out = "A" }
            [[stages]]
            name = "b"
            plugin = "p.wasm"
            input = "A"
            outputs = { y = "C", x = "B" }
            [[stages]]
            name = "c"
            plugin = "p.wasm"
            input = ["C", "A"]
            outputs = { v = "V" }
        "#;
        let config = crate::config::parse(
            text,
            std::path::Path::new("test.toml"),
            dir.path(),
            &crate::config::Overrides::default(),
        );
        let config = match config {
            Ok(config) => config,
            Err(error) => panic!("{error}"),
        };
        assert_eq!(
            pipeline_topics(&config),
            ["A", "B", "C", "V", "DLQ", "KPIs"]
        );
    }
}
