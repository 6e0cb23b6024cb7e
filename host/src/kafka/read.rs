//! Reading a partition's committed records from the beginning up to its end as of now:
//! state restore, dead-letter listing, replay bookkeeping; the same for whole topics at once
//! (`stagehost trace`); one record at an offset; which topics exist.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::clients::{KafkaClients, Role};

/// Calls `each` for every committed record of `topic`/`partition`, oldest first, up to the
/// high watermark read at the start; gives up after `timeout`. Blocking: call it off the
/// async threads.
pub fn for_each_committed(
    kafka: &KafkaClients,
    topic: &str,
    partition: i32,
    timeout: Duration,
    each: impl FnMut(&BorrowedMessage<'_>),
) -> anyhow::Result<()> {
    for_each_committed_since(kafka, topic, partition, |_| None, timeout, each).map(|_| ())
}

/// The low and high watermarks of a partition: its first offset and the offset its next
/// record will get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    /// First offset still in the partition.
    pub low: i64,
    /// Offset of the next record.
    pub high: i64,
}

/// Like [`for_each_committed`], from the offset `since` chooses once it knows the partition's
/// watermarks (`None`: from the beginning). Returns the watermarks read at the start: every
/// committed record below `high` was read.
pub fn for_each_committed_since(
    kafka: &KafkaClients,
    topic: &str,
    partition: i32,
    since: impl FnOnce(Watermarks) -> Option<i64>,
    timeout: Duration,
    mut each: impl FnMut(&BorrowedMessage<'_>),
) -> anyhow::Result<Watermarks> {
    let consumer = committed_reader(kafka).context("cannot create a Kafka reader")?;
    let (low, high) = watermarks(&consumer, topic, partition)?;
    let marks = Watermarks { low, high };
    let start = since(marks).filter(|at| *at > low);
    if high <= start.unwrap_or(low) {
        return Ok(marks);
    }
    let mut assignment = TopicPartitionList::new();
    let offset = start.map_or(Offset::Beginning, Offset::Offset);
    assignment.add_partition_offset(topic, partition, offset)?;
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + timeout;
    loop {
        let position = consumer
            .position()?
            .find_partition(topic, partition)
            .and_then(|p| p.offset().to_raw())
            .unwrap_or(-1);
        if position >= high {
            return Ok(marks);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "reading {topic}/{partition} did not reach offset {high} in {timeout:?}"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => each(&message),
            Some(Err(error)) => return Err(error).context(format!("reading {topic}/{partition}")),
            None => {}
        }
    }
}

/// Calls `each` for every committed record of every partition of `topics`, from the
/// beginning up to the ends (high watermarks) read when it starts, in the order they arrive
/// (oldest first within a partition); gives up after `timeout`. Topics the cluster does not
/// have are skipped and returned. Blocking: call it off the async threads.
pub fn for_each_committed_in(
    kafka: &KafkaClients,
    topics: &[String],
    timeout: Duration,
    mut each: impl FnMut(&BorrowedMessage<'_>),
) -> anyhow::Result<Vec<String>> {
    let consumer = committed_reader(kafka).context("cannot create a Kafka reader")?;
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .with_context(|| format!("cannot reach Kafka at {}", kafka.brokers()))?;
    let mut missing = Vec::new();
    let mut ends = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for topic in topics {
        let Some(found) = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        else {
            missing.push(topic.clone());
            continue;
        };
        for partition in found.partitions() {
            let (low, high) = watermarks(&consumer, topic, partition.id())?;
            if high > low {
                ends.insert((topic.clone(), partition.id()), high);
                assignment.add_partition_offset(topic, partition.id(), Offset::Beginning)?;
            }
        }
    }
    if ends.is_empty() {
        return Ok(missing);
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + timeout;
    loop {
        let positions = consumer.position()?;
        let behind = ends.iter().find(|((topic, partition), end)| {
            positions
                .find_partition(topic, *partition)
                .and_then(|p| p.offset().to_raw())
                .is_none_or(|at| at < **end)
        });
        let Some(((topic, partition), end)) = behind else {
            return Ok(missing);
        };
        anyhow::ensure!(
            Instant::now() < deadline,
            "reading {topic}/{partition} did not reach offset {end} in {timeout:?}: a \
             transaction may be open that long (the writer's host stopped mid-transaction; it \
             ends within kafka.transaction_timeout), or the brokers are slow; try again"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => each(&message),
            Some(Err(error)) => return Err(error).context("reading the pipeline's topics"),
            None => {}
        }
    }
}

/// How long a just-created topic may take to show up in the metadata.
const NEW_TOPIC_GRACE: Duration = Duration::from_secs(15);

/// The low and high watermarks of a partition. A topic created a moment ago may not be in
/// the metadata yet or have no leader yet: ask again for a while.
pub fn watermarks(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
) -> anyhow::Result<(i64, i64)> {
    let deadline = Instant::now() + NEW_TOPIC_GRACE;
    loop {
        match consumer.fetch_watermarks(topic, partition, Duration::from_secs(30)) {
            Ok(marks) => return Ok(marks),
            Err(KafkaError::MetadataFetch(
                RDKafkaErrorCode::UnknownPartition
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::LeaderNotAvailable,
            )) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("cannot read the watermarks of {topic}/{partition}"));
            }
        }
    }
}

/// A consumer for reading partitions by hand (assigned, never committing), that sees only
/// committed records.
pub fn committed_reader(kafka: &KafkaClients) -> Result<BaseConsumer, KafkaError> {
    kafka.reader("stagehost-reader").create()
}

/// The id of the Kafka cluster the clients reach.
pub fn cluster_id(kafka: &KafkaClients) -> anyhow::Result<String> {
    let brokers = kafka.brokers();
    let consumer: BaseConsumer = kafka
        .client(Role::Admin)
        .create()
        .context("cannot create a Kafka client")?;
    consumer
        .client()
        .fetch_cluster_id(Duration::from_secs(10))
        .with_context(|| format!("cannot read the cluster id of the Kafka cluster at {brokers}"))
}

/// The number of partitions of `topic`, asking again for up to [`NEW_TOPIC_GRACE`] while it is
/// not in the metadata yet (a topic made a moment ago).
pub fn partition_count_of_new(kafka: &KafkaClients, topic: &str) -> anyhow::Result<i32> {
    let deadline = Instant::now() + NEW_TOPIC_GRACE;
    loop {
        match partition_count(kafka, topic) {
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            counted => return counted,
        }
    }
}

/// The number of partitions of `topic`.
pub fn partition_count(kafka: &KafkaClients, topic: &str) -> anyhow::Result<i32> {
    let brokers = kafka.brokers();
    let consumer: BaseConsumer = kafka
        .client(Role::Admin)
        .create()
        .context("cannot create a Kafka client")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("cannot reach Kafka at {brokers}"))?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    anyhow::ensure!(partitions > 0, "topic {topic} does not exist at {brokers}");
    Ok(i32::try_from(partitions).unwrap_or(i32::MAX))
}

/// The body of the committed record at `offset` of `topic`/`partition`, or why it cannot be
/// had (removed by retention, not committed, no answer within `timeout`). Blocking.
pub fn committed_payload_at(
    kafka: &KafkaClients,
    topic: &str,
    partition: i32,
    offset: i64,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let consumer = committed_reader(kafka)
        .map_err(|error| format!("cannot create a Kafka reader: {error}"))?;
    let (low, high) = consumer
        .fetch_watermarks(topic, partition, timeout)
        .map_err(|error| format!("cannot read the partition's offsets: {error}"))?;
    if offset < low || offset >= high {
        return Err(format!(
            "the partition now holds offsets {low}..{high} (the record was removed by the \
             topic's retention, or the topic was recreated)"
        ));
    }
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, partition, Offset::Offset(offset))
        .and_then(|()| consumer.assign(&assignment))
        .map_err(|error| format!("cannot read the partition: {error}"))?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) if message.offset() == offset => {
                return Ok(message.payload().unwrap_or_default().to_vec());
            }
            Some(Ok(message)) if message.offset() > offset => {
                return Err(format!(
                    "no committed record at that offset (the next one is at {})",
                    message.offset()
                ));
            }
            Some(Ok(_)) | None => {}
            Some(Err(error)) => return Err(error.to_string()),
        }
    }
    Err(format!("no record within {timeout:?}"))
}

/// The names of the topics the cluster has now, as `producer` sees them; `None` when the
/// brokers do not answer within `timeout`. Blocking.
pub fn existing_topics(producer: &FutureProducer, timeout: Duration) -> Option<BTreeSet<String>> {
    producer
        .client()
        .fetch_metadata(None, timeout)
        .ok()
        .map(|metadata| {
            metadata
                .topics()
                .iter()
                .filter(|topic| topic.error().is_none())
                .map(|topic| topic.name().to_string())
                .collect()
        })
}
