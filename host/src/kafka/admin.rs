//! Creating the declared topics when they do not exist yet.

use std::time::Duration;

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::clients::KafkaClients;
use crate::config::{PipelineConfig, Replication};

/// Creates every topic of `config` that is missing; existing topics are left as they are.
pub async fn ensure_topics(kafka: &KafkaClients, config: &PipelineConfig) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = kafka
        .admin()
        .create()
        .context("cannot create the Kafka admin client")?;
    let min_insync: Vec<Option<String>> = config
        .topics
        .keys()
        .map(|name| {
            config
                .topic_replication(name)
                .min_insync
                .map(|m| m.to_string())
        })
        .collect();
    let topics: Vec<NewTopic<'_>> = config
        .topics
        .iter()
        .zip(&min_insync)
        .map(|((name, topic), min_insync)| {
            let replication = config.topic_replication(name);
            let new = replicated(
                NewTopic::new(name, topic.partitions, factor(replication)),
                min_insync.as_deref(),
            );
            if topic.latest_per_key {
                new.set("cleanup.policy", "compact")
            } else {
                new
            }
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
    replication: Replication,
) -> anyhow::Result<()> {
    ensure_compacted(kafka, topic, partitions, replication, None).await
}

/// The replication factor to create a topic with: `-1` asks for the broker's
/// `default.replication.factor`.
fn factor(replication: Replication) -> TopicReplication<'static> {
    TopicReplication::Fixed(replication.factor.unwrap_or(-1))
}

/// `new` with `min.insync.replicas` set when the pipeline sets it.
fn replicated<'a>(new: NewTopic<'a>, min_insync: Option<&'a str>) -> NewTopic<'a> {
    match min_insync {
        Some(min_insync) => new.set("min.insync.replicas", min_insync),
        None => new,
    }
}

/// Creates a compacted topic unless it exists; with `retention`, records older than it are
/// deleted too (`cleanup.policy=compact,delete`).
pub async fn ensure_compacted(
    kafka: &KafkaClients,
    topic: &str,
    partitions: i32,
    replication: Replication,
    retention: Option<Duration>,
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = kafka
        .admin()
        .create()
        .context("cannot create the Kafka admin client")?;
    let retention_ms = retention.map(|r| r.as_millis().to_string());
    let min_insync = replication.min_insync.map(|m| m.to_string());
    let mut new = replicated(
        NewTopic::new(topic, partitions, factor(replication)),
        min_insync.as_deref(),
    )
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

/// Refuses to make `topic` (a stage's changelog or processed-id topic, the system of record of
/// its state) when it is missing although the stage ran before: its group `group` has committed
/// offsets on its `inputs`. A missing system-of-record topic is then a loss, not a first start,
/// and making it again empty would silently start the stage's state from nothing. Blocking.
pub fn refuse_lost_topic(
    kafka: &KafkaClients,
    topic: &str,
    group: &str,
    inputs: &[&str],
) -> anyhow::Result<()> {
    let consumer: BaseConsumer = kafka
        .reader(group)
        .create()
        .context("cannot create a Kafka client")?;
    let timeout = Duration::from_secs(15);
    let metadata = consumer
        .fetch_metadata(None, timeout)
        .context("cannot read the cluster's topics")?;
    let mut partitions = TopicPartitionList::new();
    for found in metadata.topics() {
        if found.name() == topic && found.error().is_none() {
            return Ok(());
        }
        if inputs.contains(&found.name()) {
            for partition in found.partitions() {
                partitions.add_partition(found.name(), partition.id());
            }
        }
    }
    if partitions.count() == 0 {
        return Ok(());
    }
    // A coordinator still loading (a broker just started, a group just moved) answers with a
    // retriable error: ask again for a while.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let committed = loop {
        match consumer.committed_offsets(partitions.clone(), timeout) {
            Ok(committed) => break committed,
            Err(error)
                if std::time::Instant::now() < deadline
                    && error.rdkafka_error_code().is_some_and(|code| {
                        matches!(
                            code,
                            RDKafkaErrorCode::NotCoordinator
                                | RDKafkaErrorCode::CoordinatorLoadInProgress
                                | RDKafkaErrorCode::CoordinatorNotAvailable
                                | RDKafkaErrorCode::RequestTimedOut
                        )
                    }) =>
            {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(error) => {
                return Err(error).with_context(|| {
                    format!("cannot read the committed offsets of group {group}")
                });
            }
        }
    };
    let ran_before = committed
        .elements()
        .iter()
        .any(|element| matches!(element.offset(), Offset::Offset(_)));
    anyhow::ensure!(
        !ran_before,
        "topic {topic} is missing, but group {group} has committed offsets on {}: the stage ran before and its state (or processed ids) lived in that topic, which was deleted. The stage does not start again from an empty state: restore the topic, or, to start from nothing on purpose, delete the group's offsets (kafka-consumer-groups --delete-offsets) and restart (see docs/operations.md)",
        inputs.join(", ")
    );
    Ok(())
}

/// Grows `topic` to `count` partitions if it has fewer (never shrinks it); a topic not in the
/// metadata yet is left alone.
pub async fn ensure_partitions(
    kafka: &KafkaClients,
    topic: &str,
    count: i32,
) -> anyhow::Result<()> {
    // A topic created a moment ago (with `count` partitions) may not be in the metadata yet.
    let Ok(now) = tokio::task::block_in_place(|| super::partition_count(kafka, topic)) else {
        return Ok(());
    };
    if now >= count {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = kafka
        .admin()
        .create()
        .context("cannot create the Kafka admin client")?;
    let wanted = usize::try_from(count).unwrap_or(0);
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_partitions([&NewPartitions::new(topic, wanted)], &options)
        .await
        .with_context(|| format!("cannot add partitions to {topic}"))?;
    for result in results {
        match result {
            Ok(_) => tracing::warn!(
                topic,
                from = now,
                to = count,
                "grew a topic to the partitions of its stage's input"
            ),
            Err((_, RDKafkaErrorCode::InvalidPartitions)) => {}
            Err((name, code)) => anyhow::bail!("cannot add partitions to {name}: {code}"),
        }
    }
    Ok(())
}
