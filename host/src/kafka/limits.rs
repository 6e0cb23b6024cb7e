//! How large a record each topic takes, so a stage can refuse an oversized output before it
//! sends it (and dead-letter its input) instead of failing its transaction again and again.
//!
//! A record must fit both the producer's `message.max.bytes` (librdkafka refuses a larger one
//! locally) and the topic's `max.message.bytes` (the broker refuses a larger batch). The
//! topics' settings are read once at start with `DescribeConfigs`; a topic that cannot be
//! described keeps the broker's default.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;

use super::clients::KafkaClients;
use super::publish::OutRecord;

/// librdkafka's default `message.max.bytes`.
const PRODUCER_DEFAULT: usize = 1_000_000;
/// The broker's default `max.message.bytes`.
const TOPIC_DEFAULT: usize = 1_048_588;
/// What a record batch of one record adds to the record's key, value and headers (batch
/// header 61 bytes, record framing and varints), with room to spare.
const RECORD_OVERHEAD: usize = 512;

/// The largest record each topic takes.
#[derive(Debug, Clone)]
pub struct RecordLimits {
    producer_max: usize,
    topics: HashMap<String, usize>,
}

impl Default for RecordLimits {
    fn default() -> Self {
        Self {
            producer_max: PRODUCER_DEFAULT,
            topics: HashMap::new(),
        }
    }
}

impl RecordLimits {
    /// The limits of `topics` as the brokers of `kafka` have them, and the producer's own.
    pub async fn read(kafka: &KafkaClients, topics: &[String]) -> Self {
        let producer_max = kafka
            .producer()
            .get("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(PRODUCER_DEFAULT);
        let mut limits = Self {
            producer_max,
            topics: HashMap::new(),
        };
        match describe(kafka, topics).await {
            Ok(found) => limits.topics = found,
            Err(error) => tracing::warn!(%error,
                "cannot read the topics' max.message.bytes; outputs are checked against the broker's default"),
        }
        limits
    }

    /// Limits with the topics' `max.message.bytes` given.
    #[cfg(test)]
    fn with(producer_max: usize, topics: impl IntoIterator<Item = (String, usize)>) -> Self {
        Self {
            producer_max,
            topics: topics.into_iter().collect(),
        }
    }

    /// The largest key + value + headers a record for `topic` may have.
    pub fn limit(&self, topic: &str) -> usize {
        let topic_max = self.topics.get(topic).copied().unwrap_or(TOPIC_DEFAULT);
        topic_max
            .min(self.producer_max)
            .saturating_sub(RECORD_OVERHEAD)
    }

    /// Why `record` would be refused for its size, if it would.
    pub fn check(&self, record: &OutRecord) -> Result<(), String> {
        let size = size_of(record);
        let limit = self.limit(&record.topic);
        if size <= limit {
            return Ok(());
        }
        Err(format!(
            "a record of {size} bytes for topic {} is larger than it takes ({limit} bytes: the topic's max.message.bytes {}, the producer's message.max.bytes {}, less {RECORD_OVERHEAD} for framing)",
            record.topic,
            self.topics.get(&record.topic).map_or_else(
                || format!("{TOPIC_DEFAULT} (broker default)"),
                ToString::to_string
            ),
            self.producer_max
        ))
    }
}

/// The bytes of a record that count against the limits: key, value and headers.
fn size_of(record: &OutRecord) -> usize {
    record.key.as_ref().map_or(0, String::len)
        + record.payload.as_ref().map_or(0, Vec::len)
        + record.headers.byte_len()
}

/// `max.message.bytes` of each of `topics` that the brokers describe.
async fn describe(
    kafka: &KafkaClients,
    topics: &[String],
) -> anyhow::Result<HashMap<String, usize>> {
    let admin: AdminClient<DefaultClientContext> = kafka.admin().create()?;
    let resources: Vec<ResourceSpecifier<'_>> = topics
        .iter()
        .map(|topic| ResourceSpecifier::Topic(topic))
        .collect();
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(15)));
    let mut found = HashMap::new();
    for (topic, result) in topics
        .iter()
        .zip(admin.describe_configs(&resources, &options).await?)
    {
        let Ok(resource) = result else {
            continue;
        };
        if let Some(value) = resource
            .get("max.message.bytes")
            .and_then(|entry| entry.value.as_deref())
            .and_then(|value| value.parse().ok())
        {
            found.insert(topic.clone(), value);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::headers::RecordHeaders;

    fn record(topic: &str, bytes: usize) -> OutRecord {
        OutRecord {
            topic: topic.into(),
            partition: None,
            key: Some("k".into()),
            payload: Some(vec![b'x'; bytes]),
            headers: RecordHeaders::new(),
            id: "id".into(),
        }
    }

    #[test]
    fn a_record_must_fit_the_smaller_of_the_topic_and_the_producer() {
        let limits = RecordLimits::with(1_000_000, [("small".to_string(), 10_000)]);
        assert_eq!(limits.limit("small"), 10_000 - RECORD_OVERHEAD);
        assert_eq!(limits.limit("other"), 1_000_000 - RECORD_OVERHEAD);
        assert!(limits.check(&record("small", 9_000)).is_ok());
        let refused = limits.check(&record("small", 10_000)).unwrap_err();
        assert!(refused.contains("10001 bytes for topic small"), "{refused}");
        assert!(refused.contains("max.message.bytes 10000"), "{refused}");
        assert!(limits.check(&record("other", 999_000)).is_ok());
        assert!(limits.check(&record("other", 1_000_000)).is_err());
    }
}
