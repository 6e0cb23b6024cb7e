//! The changelog of a stage's state: a compacted topic with one partition per input partition.
//! Kafka is the system of record; an instance that takes a partition over restores its state
//! from the committed changelog records before handling the partition's first event.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// How long a restore may wait for the changelog (an open transaction of a dead instance
/// holds committed readers back for up to the transaction timeout).
const RESTORE_TIMEOUT: Duration = Duration::from_secs(120);

/// The changelog topic of a stage.
pub fn changelog_topic(group: &str) -> String {
    format!("{group}-changelog")
}

/// Reads every committed record of `topic`/`partition` and returns the latest value per key
/// (a record without a value deletes its key). Blocking: call it off the async threads.
pub fn restore(
    brokers: &str,
    topic: &str,
    partition: i32,
) -> anyhow::Result<HashMap<String, Vec<u8>>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "stagehost-restore")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false")
        .create()
        .context("cannot create the changelog reader")?;
    let (low, high) = consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(30))
        .with_context(|| format!("cannot read the watermarks of {topic}/{partition}"))?;
    let mut values = HashMap::new();
    if high <= low {
        return Ok(values);
    }
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + RESTORE_TIMEOUT;
    loop {
        let position = consumer
            .position()?
            .find_partition(topic, partition)
            .and_then(|p| p.offset().to_raw())
            .unwrap_or(-1);
        if position >= high {
            return Ok(values);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "restoring {topic}/{partition} did not reach offset {high} in {RESTORE_TIMEOUT:?}"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let Some(key) = message.key() else { continue };
                let key = String::from_utf8_lossy(key).into_owned();
                match message.payload() {
                    Some(value) => values.insert(key, value.to_vec()),
                    None => values.remove(&key),
                };
            }
            Some(Err(error)) => return Err(error).context(format!("reading {topic}/{partition}")),
            None => {}
        }
    }
}
