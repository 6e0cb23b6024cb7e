//! The watchdog of a topic-fed stage: one rule for every way a stage can stop working that no
//! error reports.
//!
//! **A stage that has input waiting, or is not a member of its consumer group, and makes no
//! progress for `stall_timeout` is stalled**: its worker ends with the reason, so the stage is
//! unready with it and rebuilt (new consumer, new producer, state restored) by its supervisor,
//! with backoff. It covers a member that lost its session in a broker outage and never got back
//! into its group while its consumer reported nothing (seen after a 30 s outage on a busy
//! machine), and whatever other path ends the same way.
//!
//! *Input waiting* is lag on a partition the stage owns and does not hold back on purpose: its
//! position (or, before its first fetch, its committed offset) below the partition's end as a
//! `read_committed` reader sees it (the last stable offset, so an upstream transaction still
//! open is not counted as waiting input). Partitions parked for a retry or held at a record
//! that cannot be dead-lettered are excluded: they wait by design and report elsewhere.
//! *Progress* is any record consumed. The broker is asked for the ends only once the stage has
//! made no progress for `stall_timeout`, so a busy stage costs nothing.

use std::time::{Duration, Instant};

use rdkafka::Offset;
use rdkafka::consumer::Consumer;

use super::positions::StageConsumer;
use super::retry::TopicPartition;

/// How long reading a partition's end may take during a check.
const END_TIMEOUT: Duration = Duration::from_secs(5);

/// Watches one stage incarnation for progress.
#[derive(Debug)]
pub struct Watchdog {
    stall_timeout: Duration,
    last_progress: Instant,
    next_check: Instant,
}

/// A partition with input waiting: where the stage is and where the partition ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// The partition.
    pub partition: TopicPartition,
    /// The next offset the stage would read.
    pub position: i64,
    /// The end of the partition for a `read_committed` reader.
    pub end: i64,
}

impl Watchdog {
    /// A watchdog that calls a stage stalled after `stall_timeout` without progress.
    pub fn new(stall_timeout: Duration) -> Self {
        let now = Instant::now();
        Self {
            stall_timeout,
            last_progress: now,
            next_check: now + check_interval(stall_timeout),
        }
    }

    /// The stage consumed a record.
    pub fn progressed(&mut self) {
        self.last_progress = Instant::now();
    }

    /// When the stage should be looked at next.
    pub fn next_check(&self) -> Instant {
        self.next_check
    }

    /// Looks at the stage: the reason it is stalled, if it is. `out_of_group` is how long its
    /// consumer has not been a member of its group (`None`: it is one); `held` says whether a
    /// partition waits on purpose (parked for a retry, held at a record).
    pub fn check(
        &mut self,
        consumer: &StageConsumer,
        out_of_group: Option<Duration>,
        held: impl Fn(&TopicPartition) -> bool,
    ) -> Option<String> {
        let now = Instant::now();
        self.next_check = now + check_interval(self.stall_timeout);
        if let Some(out) = out_of_group
            && out > self.stall_timeout
        {
            return Some(format!(
                "has not been a member of its consumer group for {:.0} s (stall_timeout {:?}): rebuilding it",
                out.as_secs_f64(),
                self.stall_timeout
            ));
        }
        let idle = now.duration_since(self.last_progress);
        if out_of_group.is_some() || idle <= self.stall_timeout {
            return None;
        }
        let waiting = tokio::task::block_in_place(|| input_waiting(consumer, &held));
        let first = waiting.first()?;
        let total: i64 = waiting.iter().map(|w| w.end - w.position).sum();
        Some(format!(
            "made no progress for {:.0} s with {total} record(s) waiting on {} partition(s) (first: {}/{} at offset {} of {}; stall_timeout {:?}): rebuilding it",
            idle.as_secs_f64(),
            waiting.len(),
            first.partition.0,
            first.partition.1,
            first.position,
            first.end,
            self.stall_timeout
        ))
    }
}

/// How often a stage with `stall_timeout` is looked at: often enough to notice a stall within
/// a quarter of the timeout, at most every 5 s.
fn check_interval(stall_timeout: Duration) -> Duration {
    (stall_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

/// The owned partitions, not held back on purpose, with records the stage has not read. A
/// partition whose position or end cannot be read now is left out (the consumer's own errors
/// report a broker that does not answer).
fn input_waiting(
    consumer: &StageConsumer,
    held: &impl Fn(&TopicPartition) -> bool,
) -> Vec<Waiting> {
    let Ok(assignment) = consumer.assignment() else {
        return Vec::new();
    };
    let positions = consumer.position().unwrap_or_default();
    let committed = if positions
        .elements()
        .iter()
        .any(|e| !matches!(e.offset(), Offset::Offset(_)))
    {
        consumer
            .committed_offsets(assignment.clone(), END_TIMEOUT)
            .ok()
    } else {
        None
    };
    let offset_in = |list: Option<&rdkafka::TopicPartitionList>, topic: &str, partition: i32| {
        list.and_then(|list| list.find_partition(topic, partition))
            .and_then(|element| match element.offset() {
                Offset::Offset(offset) => Some(offset),
                _ => None,
            })
    };
    let mut waiting = Vec::new();
    for element in assignment.elements() {
        let partition = (element.topic().to_string(), element.partition());
        if held(&partition) {
            continue;
        }
        let Some(position) = offset_in(Some(&positions), &partition.0, partition.1)
            .or_else(|| offset_in(committed.as_ref(), &partition.0, partition.1))
        else {
            continue;
        };
        let Ok((_, end)) = consumer.fetch_watermarks(&partition.0, partition.1, END_TIMEOUT) else {
            continue;
        };
        if let Some(waiting_here) = lagging(partition, position, end) {
            waiting.push(waiting_here);
        }
    }
    waiting
}

/// `partition` at `position` has input waiting when it ends past it.
fn lagging(partition: TopicPartition, position: i64, end: i64) -> Option<Waiting> {
    (end > position).then_some(Waiting {
        partition,
        position,
        end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_ending_past_its_position_has_input_waiting() {
        let tp = ("t".to_string(), 1);
        assert_eq!(lagging(tp.clone(), 5, 5), None);
        assert_eq!(lagging(tp.clone(), 6, 5), None, "a position past the end");
        assert_eq!(
            lagging(tp.clone(), 3, 5),
            Some(Waiting {
                partition: tp,
                position: 3,
                end: 5
            })
        );
    }

    #[test]
    fn checks_come_often_enough_and_not_too_often() {
        assert_eq!(
            check_interval(Duration::from_secs(60)),
            Duration::from_secs(5)
        );
        assert_eq!(
            check_interval(Duration::from_secs(8)),
            Duration::from_secs(2)
        );
        assert_eq!(
            check_interval(Duration::from_millis(10)),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn progress_moves_the_last_progress_forward() {
        let mut watchdog = Watchdog::new(Duration::from_secs(1));
        let before = watchdog.last_progress;
        std::thread::sleep(Duration::from_millis(5));
        watchdog.progressed();
        assert!(watchdog.last_progress > before);
        assert!(watchdog.next_check() > before);
    }
}
