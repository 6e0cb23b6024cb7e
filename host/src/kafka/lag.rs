//! A consumer group's lag, read from outside the group: its committed offsets against the
//! ends of its partitions as a `read_committed` reader sees them (an open transaction upstream
//! is not lag). It works whatever the group's members are doing, stuck or rejoining included.
//!
//! Offsets count records no reader sees: transaction markers and aborted records. A stage
//! that read everything stays behind the end by them (one marker after each transaction), so a
//! partition whose lag did not change since the last reading is read from its committed offset
//! to see whether anything visible lies there; if nothing does, its lag is 0.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::KafkaClients;
use super::read::partition_count;

/// How long one read of offsets may take.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the partitions of the inputs are taken as known (a topic may gain partitions).
const PARTITIONS_MAX_AGE: Duration = Duration::from_secs(60);

/// One partition of a group's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The group's committed offset (the partition's start when it committed none).
    pub committed: i64,
    /// The partition's end for a `read_committed` reader.
    pub end: i64,
}

impl PartitionLag {
    /// Records after the committed offset.
    pub fn lag(&self) -> i64 {
        (self.end - self.committed).max(0)
    }
}

/// Where a partition's committed offset and end were at the last reading.
type Span = (i64, i64);

/// Reads partitions to see whether their lag is only invisible records, for every
/// [`GroupLag`] of a host. One is enough: the lag watch reads its groups one after the other,
/// and a look holds a partition only while it lasts. (An idle librdkafka client still wakes
/// its threads a few times a second for its timers: one peeker per stage was six clients too
/// many for the shipped pipeline.)
#[derive(Clone)]
pub struct LagPeeker(Arc<BaseConsumer>);

impl LagPeeker {
    /// A peeker (a reader that never subscribes nor commits).
    pub fn new(kafka: &KafkaClients) -> anyhow::Result<Self> {
        Ok(Self(Arc::new(kafka.reader("stagehost.lag-peek").create()?)))
    }
}

/// Reads the lag of one consumer group (without joining it).
pub struct GroupLag {
    reader: BaseConsumer,
    /// Reads partitions to see whether their lag is only invisible records.
    peeker: LagPeeker,
    kafka: KafkaClients,
    /// Each partition's span at the last reading.
    last: HashMap<(String, i32), Span>,
    /// Spans found to hold nothing visible.
    invisible: HashMap<(String, i32), Span>,
    /// The input partitions, and when they were read.
    partitions: Option<(Instant, TopicPartitionList)>,
}

impl GroupLag {
    /// A reader of `group`'s offsets, peeking with `peeker`.
    pub fn new(kafka: &KafkaClients, group: &str, peeker: LagPeeker) -> anyhow::Result<Self> {
        Ok(Self {
            reader: kafka.reader(group).create()?,
            peeker,
            kafka: kafka.clone(),
            last: HashMap::new(),
            invisible: HashMap::new(),
            partitions: None,
        })
    }

    /// The lag of every partition of `topics` (blocking; a few broker round trips, and a
    /// short read of each partition whose lag stood still since the last call).
    pub fn read(&mut self, topics: &[String]) -> anyhow::Result<Vec<PartitionLag>> {
        let mut lags = self.read_offsets(topics)?;
        for lag in &mut lags {
            let at = (lag.topic.clone(), lag.partition);
            let span = (lag.committed, lag.end);
            let still = self.last.insert(at.clone(), span) == Some(span);
            if lag.lag() == 0 || !still {
                continue;
            }
            let known = self.invisible.get(&at) == Some(&span);
            if known || self.holds_nothing_visible(&lag.topic, lag.partition, span) {
                self.invisible.insert(at, span);
                lag.end = lag.committed;
            }
        }
        Ok(lags)
    }

    /// Whether `partition` of `topic` holds no record a `read_committed` reader sees between
    /// the span's offsets (`false` when that cannot be told now).
    ///
    /// The peeker reads the partition only for this look: it is unassigned again before the
    /// answer is returned. An assigned partition is fetched for as long as it stays assigned,
    /// and a peeker left on its last partition long-polled the broker ten times a second per
    /// stage for the host's lifetime (its fetches waited `fetch.wait.max.ms`, 100 ms): 70 of
    /// the 127 fetches a second an idle shipped pipeline made after its first orders.
    fn holds_nothing_visible(&self, topic: &str, partition: i32, span: Span) -> bool {
        let visible = self.peek(topic, partition, span);
        if let Err(error) = self.peeker.0.unassign() {
            tracing::debug!(topic, partition, %error, "cannot unassign the lag peeker");
        }
        visible
    }

    /// [`GroupLag::holds_nothing_visible`] with the peeker left assigned.
    fn peek(&self, topic: &str, partition: i32, (from, end): Span) -> bool {
        let mut list = TopicPartitionList::new();
        if list
            .add_partition_offset(topic, partition, Offset::Offset(from))
            .is_err()
            || self.peeker.0.assign(&list).is_err()
        {
            return false;
        }
        let deadline = Instant::now() + READ_TIMEOUT;
        while Instant::now() < deadline {
            match self.peeker.0.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => return message.offset() >= end,
                Some(Err(_)) => return false,
                None => {}
            }
            let position = self.peeker.0.position().ok().and_then(|list| {
                list.find_partition(topic, partition)
                    .and_then(|element| match element.offset() {
                        Offset::Offset(offset) => Some(offset),
                        _ => None,
                    })
            });
            if position.is_some_and(|position| position >= end) {
                return true;
            }
        }
        false
    }

    /// The partitions of `topics`, asked of the brokers at most every [`PARTITIONS_MAX_AGE`].
    fn partitions(&mut self, topics: &[String]) -> anyhow::Result<TopicPartitionList> {
        if let Some((read_at, list)) = &self.partitions
            && read_at.elapsed() < PARTITIONS_MAX_AGE
        {
            return Ok(list.clone());
        }
        let mut list = TopicPartitionList::new();
        for topic in topics {
            for partition in 0..partition_count(&self.kafka, topic)? {
                list.add_partition(topic, partition);
            }
        }
        self.partitions = Some((Instant::now(), list.clone()));
        Ok(list)
    }

    /// Every partition's committed offset and end: the ends of all of them in one request
    /// (ListOffsets for the latest offset, which a `read_committed` client is answered with the
    /// last stable offset, as `fetch_watermarks` is), and the starts of those the group never
    /// committed in one more. Two requests a partition each time (`fetch_watermarks`, one
    /// partition after the other) were most of what the idle host's lag watch cost.
    fn read_offsets(&mut self, topics: &[String]) -> anyhow::Result<Vec<PartitionLag>> {
        let list = self.partitions(topics)?;
        let committed = self.reader.committed_offsets(list.clone(), READ_TIMEOUT)?;
        let ends = self.offsets_at(&list, Offset::End)?;
        let mut never_committed = TopicPartitionList::new();
        for element in committed.elements() {
            if !matches!(element.offset(), Offset::Offset(_)) {
                never_committed.add_partition(element.topic(), element.partition());
            }
        }
        let starts = if never_committed.count() == 0 {
            TopicPartitionList::new()
        } else {
            self.offsets_at(&never_committed, Offset::Beginning)?
        };
        let offset_in = |found: &TopicPartitionList, topic: &str, partition: i32| {
            let element = found.find_partition(topic, partition).with_context(|| {
                format!("no offset of {topic}/{partition} in the broker's answer")
            })?;
            element
                .error()
                .with_context(|| format!("cannot read the offsets of {topic}/{partition}"))?;
            match element.offset() {
                Offset::Offset(offset) => Ok(offset),
                other => anyhow::bail!("no offset of {topic}/{partition} ({other:?})"),
            }
        };
        let mut lags = Vec::new();
        for element in committed.elements() {
            let (topic, partition) = (element.topic(), element.partition());
            let committed = match element.offset() {
                Offset::Offset(offset) => offset,
                _ => offset_in(&starts, topic, partition)?,
            };
            lags.push(PartitionLag {
                topic: topic.to_string(),
                partition,
                committed,
                end: offset_in(&ends, topic, partition)?,
            });
        }
        Ok(lags)
    }

    /// The offsets of every partition of `list` at `at` (its beginning or its end), asked in
    /// one request per broker.
    fn offsets_at(
        &self,
        list: &TopicPartitionList,
        at: Offset,
    ) -> anyhow::Result<TopicPartitionList> {
        let mut query = TopicPartitionList::new();
        for element in list.elements() {
            query.add_partition_offset(element.topic(), element.partition(), at)?;
        }
        Ok(self.reader.offsets_for_times(query, READ_TIMEOUT)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_what_lies_past_the_committed_offset() {
        let at = |committed, end| PartitionLag {
            topic: "t".into(),
            partition: 0,
            committed,
            end,
        };
        assert_eq!(at(3, 10).lag(), 7);
        assert_eq!(at(10, 10).lag(), 0);
        assert_eq!(at(12, 10).lag(), 0, "a committed offset past the end");
    }
}
