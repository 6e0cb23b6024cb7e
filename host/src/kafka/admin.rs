//! Creating the declared topics when they do not exist yet.

use std::time::Duration;

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use super::clients::KafkaClients;
use crate::config::PipelineConfig;

/// Creates every topic of `config` that is missing; existing topics are left as they are.
pub async fn ensure_topics(kafka: &KafkaClients, config: &PipelineConfig) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = kafka
        .admin()
        .create()
        .context("cannot create the Kafka admin client")?;
    let topics: Vec<NewTopic<'_>> = config
        .topics
        .iter()
        .map(|(name, topic)| {
            NewTopic::new(
                name,
                topic.partitions,
                TopicReplication::Fixed(topic.replication),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(topics.iter(), &options)
        .await
        .with_context(|| {
            format!(
                "cannot create topics on Kafka at {} (is the broker running?)",
                kafka.brokers()
            )
        })?;
    let mut failures = Vec::new();
    for result in results {
        match result {
            Ok(name) => tracing::info!(topic = %name, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => failures.push(format!("{name}: {code}")),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("cannot create topics: {}", failures.join(", "))
    }
}

/// Creates a stage's compacted changelog topic unless it exists.
pub async fn ensure_changelog(
    kafka: &KafkaClients,
    topic: &str,
    partitions: i32,
    replication: i32,
) -> anyhow::Result<()> {
    ensure_compacted(kafka, topic, partitions, replication, None).await
}

/// Creates a compacted topic unless it exists; with `retention`, records older than it are
/// deleted too (`cleanup.policy=compact,delete`).
pub async fn ensure_compacted(
    kafka: &KafkaClients,
    topic: &str,
    partitions: i32,
    replication: i32,
    retention: Option<Duration>,
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = kafka
        .admin()
        .create()
        .context("cannot create the Kafka admin client")?;
    let retention_ms = retention.map(|r| r.as_millis().to_string());
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication))
        .set("cleanup.policy", "compact");
    if let Some(retention_ms) = &retention_ms {
        new = new
            .set("cleanup.policy", "compact,delete")
            .set("retention.ms", retention_ms);
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics([&new], &options)
        .await
        .with_context(|| format!("cannot create the changelog topic {topic}"))?;
    for result in results {
        match result {
            Ok(name) => tracing::info!(topic = %name, "created changelog topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("cannot create the changelog topic {name}: {code}"),
        }
    }
    Ok(())
}
