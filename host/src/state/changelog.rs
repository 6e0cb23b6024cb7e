//! The changelog of a stage's state: a compacted topic with one partition per input partition.
//! Kafka is the system of record; an instance that takes a partition over restores its state
//! from the committed changelog records before handling the partition's first event.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::message::Message;

use crate::kafka::{KafkaClients, for_each_committed};

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
    kafka: &KafkaClients,
    topic: &str,
    partition: i32,
) -> anyhow::Result<HashMap<String, Vec<u8>>> {
    let mut values = HashMap::new();
    for_each_committed(kafka, topic, partition, RESTORE_TIMEOUT, |message| {
        let Some(key) = message.key() else { return };
        let key = String::from_utf8_lossy(key).into_owned();
        match message.payload() {
            Some(value) => values.insert(key, value.to_vec()),
            None => values.remove(&key),
        };
    })?;
    Ok(values)
}
