//! Read models for HTTP: the latest committed value per key of a topic, kept current by
//! tailing the topic (every partition, `read_committed`). Any host instance can answer for
//! any key, whichever instance owns the key's partition.
//!
//! The values live in the local store (a topic-scoped [`Table`]), not in memory, so a view
//! does not grow the host with the number of keys; its checkpoints let a restarted host go on
//! from where it stopped instead of reading the whole topic again. A view reports itself
//! unready until it has read its topic up to the end offsets the topic had when the view
//! started, so a restarted host does not answer from a half-read topic. While the store fails
//! a view answers with an error (never "not found") and stops reading; it reads on from its
//! checkpoints once the store is back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::FutureExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::health::Reporter;
use crate::kafka::KafkaClients;
use crate::store::{LocalStore, Scope, StoreError, Table};

/// The writes of one partition in a batch, and the offset after its last record.
type PartitionBatch<'a> = (Vec<(&'a [u8], Option<&'a [u8]>)>, i64);

/// Most records written to the store in one batch.
const MAX_BATCH: usize = 500;
/// How often a restoring view checks whether it has caught up.
const CATCH_UP_CHECK: Duration = Duration::from_millis(100);
/// Pause before a view reads on after its store failed.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// The latest JSON value per record key of one topic.
pub struct TopicView {
    table: Table,
}

impl TopicView {
    /// The latest value of `key`, if the topic has one; an error when the store fails.
    pub fn get(&self, key: &str) -> Result<Option<serde_json::Value>, StoreError> {
        Ok(self
            .table
            .get(0, key.as_bytes())?
            .and_then(|value| serde_json::from_slice(&value).ok()))
    }

    /// Starts tailing `topic` into `store`, from where the view stopped last time (the
    /// beginning at first); `health` turns ready once it has caught up with the topic's end at
    /// start.
    pub async fn start(
        kafka: &KafkaClients,
        topic: &str,
        store: &LocalStore,
        health: Reporter,
    ) -> anyhow::Result<Arc<Self>> {
        let table = Table::new(store, &format!("view:{topic}"), Scope::Topic);
        let (partitions, ends) = tokio::task::block_in_place(|| end_offsets(kafka, topic))?;
        let view = Arc::new(Self {
            table: table.clone(),
        });
        let (kafka, topic) = (kafka.clone(), topic.to_string());
        tokio::spawn(async move {
            let mut restoring = true;
            let mut failures = 0u32;
            loop {
                match tail(
                    &kafka,
                    &topic,
                    &table,
                    &partitions,
                    &ends,
                    &health,
                    &mut restoring,
                )
                .await
                {
                    Ok(()) => return,
                    Err(error) => {
                        // At warn once per outage: the store reports its own failure and
                        // recovery, and `/readyz` names it.
                        failures += 1;
                        let error = format!("{error:#}");
                        if failures == 1 {
                            tracing::warn!(topic = %topic, %error,
                                "view stopped reading; reading on from its checkpoints every second");
                        } else {
                            tracing::debug!(topic = %topic, %error, failures, "view still cannot read on");
                        }
                        tokio::time::sleep(STORE_RETRY).await;
                    }
                }
            }
        });
        Ok(view)
    }
}

/// The partitions of `topic` and the end offset of each that has records.
fn end_offsets(kafka: &KafkaClients, topic: &str) -> anyhow::Result<(Vec<i32>, HashMap<i32, i64>)> {
    let consumer = crate::kafka::committed_reader(kafka).context("cannot create a view reader")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("cannot read the metadata of {topic}"))?;
    let count = metadata
        .topics()
        .first()
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    let mut partitions = Vec::with_capacity(count);
    let mut ends = HashMap::new();
    for partition in 0..i32::try_from(count)? {
        partitions.push(partition);
        let (low, high) = crate::kafka::watermarks(&consumer, topic, partition)
            .with_context(|| format!("cannot read the end offsets of {topic}"))?;
        if high > low {
            ends.insert(partition, high);
        }
    }
    Ok((partitions, ends))
}

/// A view's reader: a follower (it tails its topic for the host's lifetime).
fn reader(kafka: &KafkaClients) -> anyhow::Result<StreamConsumer> {
    kafka
        .follower("stagehost-view")
        .create()
        .context("cannot create a view reader")
}

/// Reads `topic` into `table` from the table's checkpoints, for as long as the store takes
/// the records; turns `health` ready once every partition reached its end in `ends`.
async fn tail(
    kafka: &KafkaClients,
    topic: &str,
    table: &Table,
    partitions: &[i32],
    ends: &HashMap<i32, i64>,
    health: &Reporter,
    restoring: &mut bool,
) -> anyhow::Result<()> {
    let consumer = reader(kafka)?;
    let (assignment, pending_ends) = assignment(topic, table, partitions, ends, *restoring)?;
    consumer.assign(&assignment)?;
    let mut last_check = Instant::now() - CATCH_UP_CHECK;
    let mut records = 0u64;
    let started = Instant::now();
    loop {
        if *restoring && last_check.elapsed() >= CATCH_UP_CHECK {
            last_check = Instant::now();
            if caught_up(&consumer, topic, &pending_ends) {
                *restoring = false;
                tracing::info!(
                    topic,
                    records,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "view restored"
                );
                health.ok();
            }
        }
        let Some(batch) = next_batch(&consumer, topic, *restoring).await else {
            continue;
        };
        records += batch.len() as u64;
        write(table, &batch)?;
    }
}

/// Where to read each partition from: its checkpoint in `table`, or the beginning. When
/// restoring and a checkpoint is past its partition's end (the topic was deleted and made
/// again) the table is cleared and every partition read from the beginning. Also returns the
/// partitions still to read up to their end in `ends`.
fn assignment(
    topic: &str,
    table: &Table,
    partitions: &[i32],
    ends: &HashMap<i32, i64>,
    restoring: bool,
) -> anyhow::Result<(TopicPartitionList, HashMap<i32, i64>)> {
    let mut assignment = TopicPartitionList::new();
    let mut cleared = false;
    // Partitions still to read up to their end at start: one whose checkpoint is at its end
    // has nothing to read, and its consumer position stays unknown until a record comes.
    let mut pending_ends = ends.clone();
    for &partition in partitions {
        let checkpoint = table.checkpoint(partition)?;
        let end = ends.get(&partition).copied().unwrap_or(0);
        let offset = match checkpoint {
            // Past the end: the topic was deleted and made again; read it all again.
            Some(at) if at > end && !cleared && restoring => {
                table.clear(partition, partitions)?;
                cleared = true;
                Offset::Beginning
            }
            Some(at) if !cleared => {
                if at >= end {
                    pending_ends.remove(&partition);
                }
                Offset::Offset(at)
            }
            _ => Offset::Beginning,
        };
        assignment.add_partition_offset(topic, partition, offset)?;
    }
    if cleared {
        tracing::warn!(
            topic,
            "the view was ahead of its topic (made again?); reading it from the beginning"
        );
        assignment = TopicPartitionList::new();
        pending_ends = ends.clone();
        for &partition in partitions {
            assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
        }
    }
    Ok((assignment, pending_ends))
}

/// The next records: one awaited (while `restoring`, for at most [`CATCH_UP_CHECK`]), and
/// what is already fetched, up to [`MAX_BATCH`]. `None` when nothing came in time or the
/// reader failed (logged, after a pause).
async fn next_batch<'a>(
    consumer: &'a StreamConsumer,
    topic: &str,
    restoring: bool,
) -> Option<Vec<BorrowedMessage<'a>>> {
    let first = if restoring {
        tokio::time::timeout(CATCH_UP_CHECK, consumer.recv())
            .await
            .ok()?
    } else {
        consumer.recv().await
    };
    let first = match first {
        Ok(message) => message,
        Err(error) => {
            tracing::warn!(topic, %error, "view reader error");
            tokio::time::sleep(Duration::from_millis(500)).await;
            return None;
        }
    };
    // What is already fetched goes into the same batch.
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match consumer.recv().now_or_never() {
            Some(Ok(message)) => batch.push(message),
            _ => break,
        }
    }
    Some(batch)
}

/// Writes `batch` into `table`: each partition's latest values and its new checkpoint.
fn write(table: &Table, batch: &[BorrowedMessage<'_>]) -> Result<(), StoreError> {
    let mut by_partition: HashMap<i32, PartitionBatch<'_>> = HashMap::new();
    for message in batch {
        let entry = by_partition.entry(message.partition()).or_default();
        entry.1 = message.offset() + 1;
        if let Some(key) = message.key() {
            entry.0.push((key, message.payload()));
        }
    }
    tokio::task::block_in_place(|| {
        by_partition
            .into_iter()
            .try_for_each(|(partition, (writes, next))| table.apply(partition, writes, Some(next)))
    })
}

/// Whether `consumer` has read every partition of `topic` up to its end in `ends`.
fn caught_up(consumer: &StreamConsumer, topic: &str, ends: &HashMap<i32, i64>) -> bool {
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
