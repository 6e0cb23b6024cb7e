//! `stagehost tail`: print the events of a topic as JSON lines, with their CloudEvents headers.

use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

use super::clients::KafkaClients;
use crate::event::cloudevents::header_pairs;

/// What to tail and for how long.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// The cluster's clients (from `[kafka]`, or just the bootstrap servers).
    pub kafka: KafkaClients,
    /// Topic to read.
    pub topic: String,
    /// Start at the oldest record instead of the newest.
    pub from_beginning: bool,
    /// Stop after this many records.
    pub max: Option<usize>,
    /// Stop after this long without a record.
    pub idle_timeout: Option<Duration>,
}

/// Prints records until a limit is reached or Ctrl-C.
pub async fn tail(options: TailOptions) -> anyhow::Result<()> {
    let kafka = options.kafka.clone();
    tokio::task::spawn_blocking(move || super::check_access(&kafka, super::ACCESS_PATIENCE))
        .await??;
    let consumer: StreamConsumer = options
        .kafka
        .reader("stagehost-tail")
        .create()
        .context("cannot create the Kafka consumer")?;
    let metadata = consumer
        .fetch_metadata(Some(&options.topic), Duration::from_secs(10))
        .with_context(|| format!("cannot reach Kafka at {}", options.kafka.brokers()))?;
    let partitions = metadata
        .topics()
        .first()
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    if partitions == 0 {
        anyhow::bail!(
            "topic {} does not exist on {}",
            options.topic,
            options.kafka.brokers()
        );
    }
    let start = if options.from_beginning {
        Offset::Beginning
    } else {
        Offset::End
    };
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment.add_partition_offset(&options.topic, i32::try_from(partition)?, start)?;
    }
    consumer.assign(&assignment)?;
    let mut printed = 0;
    loop {
        if options.max.is_some_and(|max| printed >= max) {
            return Ok(());
        }
        let next = consumer.recv();
        let message = match options.idle_timeout {
            Some(idle) => match tokio::time::timeout(idle, next).await {
                Ok(message) => message,
                Err(_) => return Ok(()),
            },
            None => next.await,
        }?;
        let payload = message.payload().unwrap_or_default();
        let value = serde_json::from_slice::<serde_json::Value>(payload)
            .unwrap_or_else(|_| json!(String::from_utf8_lossy(payload)));
        let headers: serde_json::Map<String, serde_json::Value> = header_pairs(message.headers())
            .into_iter()
            .map(|(k, v)| (k, json!(v)))
            .collect();
        let line = json!({
            "topic": message.topic(),
            "partition": message.partition(),
            "offset": message.offset(),
            "key": message.key().map(String::from_utf8_lossy),
            "headers": headers,
            "value": value,
        });
        println!("{line}");
        printed += 1;
    }
}
