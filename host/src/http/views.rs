//! Read models for HTTP: the latest committed value per key of a topic, kept current by
//! tailing the topic (every partition, `read_committed`). Any host instance can answer for
//! any key, whichever instance owns the key's partition. A view reports itself unready until
//! it has read its topic up to the end offsets the topic had when the view started, so a
//! restarted host does not answer from a half-read topic.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::health::Reporter;
use crate::kafka::KafkaClients;

/// The latest JSON value per record key of one topic.
#[derive(Default)]
pub struct TopicView {
    latest: RwLock<HashMap<String, serde_json::Value>>,
}

impl TopicView {
    /// The latest value of `key`, if the topic has one.
    pub fn get(&self, key: &str) -> Option<serde_json::Value> {
        self.latest
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    /// Starts tailing `topic` from its beginning; the view fills as records arrive, and
    /// `health` turns ready once it has caught up with the topic's end at start.
    pub async fn start(
        kafka: &KafkaClients,
        topic: &str,
        health: Reporter,
    ) -> anyhow::Result<Arc<Self>> {
        let consumer: StreamConsumer = kafka
            .reader("stagehost-view")
            .create()
            .context("cannot create a view reader")?;
        let metadata = tokio::task::block_in_place(|| {
            consumer.fetch_metadata(Some(topic), Duration::from_secs(10))
        })
        .with_context(|| format!("cannot read the metadata of {topic}"))?;
        let partitions = metadata
            .topics()
            .first()
            .map(|t| t.partitions().len())
            .unwrap_or(0);
        let mut assignment = TopicPartitionList::new();
        let mut ends = Vec::new();
        for partition in 0..partitions {
            let partition = i32::try_from(partition)?;
            assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
            let (low, high) = tokio::task::block_in_place(|| {
                consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))
            })
            .with_context(|| format!("cannot read the end offsets of {topic}"))?;
            if high > low {
                ends.push((partition, high));
            }
        }
        consumer.assign(&assignment)?;
        let view = Arc::new(Self::default());
        let filling = view.clone();
        let name = topic.to_string();
        tokio::spawn(async move {
            let mut restoring = !ends.is_empty();
            let mut last_check = Instant::now();
            if !restoring {
                health.ok();
            }
            loop {
                if restoring && last_check.elapsed() >= CATCH_UP_CHECK {
                    last_check = Instant::now();
                    if caught_up(&consumer, &name, &ends) {
                        restoring = false;
                        tracing::info!(topic = %name, keys = filling.len(), "view restored");
                        health.ok();
                    }
                }
                let received = if restoring {
                    match tokio::time::timeout(CATCH_UP_CHECK, consumer.recv()).await {
                        Ok(received) => received,
                        Err(_) => continue,
                    }
                } else {
                    consumer.recv().await
                };
                match received {
                    Ok(message) => {
                        let (Some(key), Some(payload)) = (message.key(), message.payload()) else {
                            continue;
                        };
                        if let Ok(value) = serde_json::from_slice(payload) {
                            filling
                                .latest
                                .write()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(String::from_utf8_lossy(key).into_owned(), value);
                        }
                    }
                    Err(error) => {
                        tracing::warn!(topic = %name, %error, "view reader error");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        Ok(view)
    }

    fn len(&self) -> usize {
        self.latest.read().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// How often a restoring view checks whether it has caught up.
const CATCH_UP_CHECK: Duration = Duration::from_millis(100);

/// Whether `consumer` has read every partition of `topic` up to its end in `ends`.
fn caught_up(consumer: &StreamConsumer, topic: &str, ends: &[(i32, i64)]) -> bool {
    let Ok(position) = consumer.position() else {
        return false;
    };
    ends.iter().all(|(partition, end)| {
        matches!(
            position.find_partition(topic, *partition).map(|p| p.offset()),
            Some(Offset::Offset(at)) if at >= *end
        )
    })
}
