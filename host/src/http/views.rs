//! Read models for HTTP: the latest committed value per key of a topic, kept current by
//! tailing the topic (every partition, `read_committed`). Any host instance can answer for
//! any key, whichever instance owns the key's partition.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

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

    /// Starts tailing `topic` from its beginning; the view fills as records arrive.
    pub async fn start(brokers: &str, topic: &str) -> anyhow::Result<Arc<Self>> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "stagehost-view")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "100")
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
        for partition in 0..partitions {
            assignment.add_partition_offset(topic, i32::try_from(partition)?, Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;
        let view = Arc::new(Self::default());
        let filling = view.clone();
        let name = topic.to_string();
        tokio::spawn(async move {
            loop {
                match consumer.recv().await {
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
}
