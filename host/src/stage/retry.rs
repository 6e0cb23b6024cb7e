//! Events waiting for another attempt, one per partition at most.
//!
//! When a plugin answers `retry`, the event's partition is paused and its consumer seeks back
//! to the event, so no later event of the partition (and so of the key) can overtake it; the
//! other partitions keep flowing. When the backoff is over the partition resumes, the event is
//! fetched again and handled as its next attempt. Nothing is copied or kept in memory besides
//! the offset and the attempt count.
//!
//! The attempt count also travels with the partition: the offset committed for a parked
//! partition is the parked event's, with the metadata `stagehost-attempts=<n>`. Whoever owns
//! the partition next (another instance after a rebalance, this one after a restart) reads it
//! back with the committed offsets and goes on counting, so `max_attempts` holds across moves.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::config::RetryConfig;

/// A topic and partition.
pub type TopicPartition = (String, i32);

/// The input header telling a plugin which attempt this is (present from the second on).
pub const ATTEMPT_HEADER: &str = "stagehost-attempt";

#[derive(Debug, Clone, PartialEq, Eq)]
struct Parked {
    offset: i64,
    /// Attempts made so far.
    attempts: u32,
    /// When the partition may resume; `None` once it has.
    due: Option<Instant>,
}

/// What to do with an event whose plugin asked for a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Pause its partition and try again after `delay`.
    Park {
        /// The backoff before the next attempt.
        delay: Duration,
    },
    /// Attempts are used up: dead-letter it.
    GiveUp,
}

/// Prefix of the committed offset metadata that carries an attempt count.
const ATTEMPTS_METADATA: &str = "stagehost-attempts=";

/// The parked events of one stage worker.
#[derive(Debug, Default)]
pub struct RetryBook {
    parked: HashMap<TopicPartition, Parked>,
    /// Attempts an earlier owner made of the event at the committed offset, per partition
    /// (read from the committed offset's metadata when the partition was assigned).
    inherited: HashMap<TopicPartition, (i64, u32)>,
}

impl RetryBook {
    /// Whether events of `partition` must wait (its retry is not due yet).
    pub fn is_waiting(&self, partition: &TopicPartition) -> bool {
        self.parked
            .get(partition)
            .is_some_and(|parked| parked.due.is_some())
    }

    /// The offset of the event being retried on `partition`, if any.
    pub fn parked_offset(&self, partition: &TopicPartition) -> Option<i64> {
        self.parked.get(partition).map(|parked| parked.offset)
    }

    /// The attempt number the event at `offset` of `partition` is about to get.
    pub fn attempt(&self, partition: &TopicPartition, offset: i64) -> u32 {
        match self.parked.get(partition) {
            Some(parked) if parked.offset == offset => parked.attempts + 1,
            _ => match self.inherited.get(partition) {
                Some((at, attempts)) if *at == offset => attempts + 1,
                _ => 1,
            },
        }
    }

    /// Takes over the attempt count that committed offset metadata carries, if any: the event
    /// at `offset` of `partition` was tried that many times already.
    pub fn inherit(&mut self, partition: &TopicPartition, offset: i64, metadata: &str) {
        if let Some(attempts) = metadata
            .strip_prefix(ATTEMPTS_METADATA)
            .and_then(|n| n.parse::<u32>().ok())
        {
            self.inherited.insert(partition.clone(), (offset, attempts));
        }
    }

    /// The metadata to commit with `offset` of `partition`: the attempt count of the event
    /// parked there, if any.
    pub fn metadata(&self, partition: &TopicPartition, offset: i64) -> Option<String> {
        self.parked
            .get(partition)
            .filter(|parked| parked.offset == offset)
            .map(|parked| format!("{ATTEMPTS_METADATA}{}", parked.attempts))
    }

    /// Records that attempt `attempt` of the event at `offset` asked for a retry; parks the
    /// partition unless the attempts are used up (then the event is forgotten).
    pub fn failed(
        &mut self,
        settings: &RetryConfig,
        partition: &TopicPartition,
        offset: i64,
        attempt: u32,
    ) -> RetryDecision {
        self.inherited.remove(partition);
        if attempt >= settings.max_attempts {
            self.parked.remove(partition);
            return RetryDecision::GiveUp;
        }
        let delay = settings.delay_before(attempt + 1);
        self.parked.insert(
            partition.clone(),
            Parked {
                offset,
                attempts: attempt,
                due: Some(Instant::now() + delay),
            },
        );
        RetryDecision::Park { delay }
    }

    /// Parks `partition` at `offset` for `delay` without counting an attempt: the event waits
    /// for something else than its plugin (an operator's decision).
    pub fn hold(&mut self, partition: &TopicPartition, offset: i64, delay: Duration) {
        let attempts = match self.parked.get(partition) {
            Some(parked) if parked.offset == offset => parked.attempts,
            _ => 0,
        };
        self.parked.insert(
            partition.clone(),
            Parked {
                offset,
                attempts,
                due: Some(Instant::now() + delay),
            },
        );
    }

    /// The event at `offset` of `partition` was handled (published or dead-lettered).
    pub fn settled(&mut self, partition: &TopicPartition, offset: i64) {
        if self
            .inherited
            .get(partition)
            .is_some_and(|(at, _)| *at <= offset)
        {
            self.inherited.remove(partition);
        }
        if self
            .parked
            .get(partition)
            .is_some_and(|parked| parked.offset <= offset)
        {
            self.parked.remove(partition);
        }
    }

    /// The earliest time a parked partition may resume.
    pub fn next_due(&self) -> Option<Instant> {
        self.parked.values().filter_map(|parked| parked.due).min()
    }

    /// Partitions whose backoff is over; they are marked resumed (their event keeps its
    /// attempt count until it is settled).
    pub fn take_due(&mut self, now: Instant) -> Vec<TopicPartition> {
        let mut due = Vec::new();
        for (partition, parked) in &mut self.parked {
            if parked.due.is_some_and(|at| at <= now) {
                parked.due = None;
                due.push(partition.clone());
            }
        }
        due
    }

    /// Forgets the partitions this worker no longer owns.
    pub fn forget(&mut self, revoked: &[TopicPartition]) {
        for partition in revoked {
            self.parked.remove(partition);
            self.inherited.remove(partition);
        }
    }

    /// Number of parked partitions.
    pub fn len(&self) -> usize {
        self.parked.len()
    }

    /// Whether no partition is parked.
    pub fn is_empty(&self) -> bool {
        self.parked.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_attempts: u32) -> RetryConfig {
        RetryConfig {
            max_attempts,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(250),
        }
    }

    fn p(n: i32) -> TopicPartition {
        ("Readings".into(), n)
    }

    #[test]
    fn parks_with_growing_capped_delays_then_gives_up() {
        let mut book = RetryBook::default();
        let settings = settings(4);
        let mut delays = Vec::new();
        for attempt in 1..4 {
            assert_eq!(book.attempt(&p(0), 7), attempt);
            match book.failed(&settings, &p(0), 7, attempt) {
                RetryDecision::Park { delay } => delays.push(delay),
                RetryDecision::GiveUp => panic!("gave up after {attempt} attempts"),
            }
            assert!(book.is_waiting(&p(0)));
            book.take_due(Instant::now() + Duration::from_secs(1));
            assert!(!book.is_waiting(&p(0)));
        }
        let ms = Duration::from_millis;
        assert!(delays[0] >= ms(50) && delays[0] <= ms(100), "{delays:?}");
        assert!(delays[1] >= ms(100) && delays[1] <= ms(200), "{delays:?}");
        assert!(delays[2] >= ms(125) && delays[2] <= ms(250), "{delays:?}");
        assert_eq!(book.attempt(&p(0), 7), 4);
        assert_eq!(book.failed(&settings, &p(0), 7, 4), RetryDecision::GiveUp);
        assert!(book.is_empty());
    }

    #[test]
    fn the_attempt_count_travels_in_the_committed_metadata() {
        let mut book = RetryBook::default();
        book.failed(&settings(5), &p(0), 7, 1);
        book.failed(&settings(5), &p(0), 7, 2);
        let metadata = book.metadata(&p(0), 7).unwrap();
        assert_eq!(book.metadata(&p(0), 8), None, "only at the parked offset");
        // Another owner reads it back with the committed offset.
        let mut next = RetryBook::default();
        next.inherit(&p(0), 7, &metadata);
        next.inherit(&p(1), 3, "something else");
        assert_eq!(next.attempt(&p(0), 7), 3);
        assert_eq!(next.attempt(&p(0), 8), 1, "another offset starts at 1");
        assert_eq!(next.attempt(&p(1), 3), 1, "no count in foreign metadata");
        assert_eq!(
            next.failed(&settings(3), &p(0), 7, 3),
            RetryDecision::GiveUp
        );
        assert_eq!(next.attempt(&p(0), 7), 1, "given up: forgotten");
    }

    #[test]
    fn only_the_parked_partition_waits() {
        let mut book = RetryBook::default();
        book.failed(&settings(3), &p(1), 10, 1);
        assert!(book.is_waiting(&p(1)));
        assert!(!book.is_waiting(&p(0)));
        assert_eq!(book.attempt(&p(0), 10), 1, "another partition starts at 1");
        assert_eq!(book.attempt(&p(1), 11), 1, "another offset starts at 1");
        assert!(book.take_due(Instant::now()).is_empty(), "not due yet");
        assert!(book.next_due().is_some());
    }

    #[test]
    fn settling_or_revoking_forgets_the_partition() {
        let mut book = RetryBook::default();
        book.failed(&settings(3), &p(1), 10, 1);
        book.take_due(Instant::now() + Duration::from_secs(1));
        book.settled(&p(1), 10);
        assert!(book.is_empty());
        book.failed(&settings(3), &p(2), 5, 1);
        book.forget(&[p(2)]);
        assert!(book.is_empty());
        assert_eq!(book.next_due(), None);
    }
}
