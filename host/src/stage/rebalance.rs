//! Consumer context that records partition revocations, so a stage can abandon the work of a
//! transaction whose partitions it no longer owns instead of committing it; and that applies
//! each rebalance without asking librdkafka for the group's rebalance protocol, a call that
//! can block forever while the consumer is being closed (it hung a host's shutdown that came
//! during the group join). It also keeps the set of partitions the consumer owns, and reports
//! the stage as unready until its consumer has joined the group, and again from the moment it
//! loses its session (its partitions are gone and nobody here processes them) until it has
//! joined again. A member that joined and was given no partition (more instances than
//! partitions: a standby) is ready.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, TopicPartitionList};

use crate::health::Reporter;

/// Counts rebalances and keeps the partitions revoked since they were last taken.
pub struct RebalanceTracker {
    revoked: Mutex<Vec<(String, i32)>>,
    /// Partitions assigned since they were last taken.
    assigned: Mutex<Vec<(String, i32)>>,
    /// The partitions the consumer owns now.
    owned: Mutex<BTreeSet<(String, i32)>>,
    /// Where the stage reports that it is not a member of its group.
    health: Option<Reporter>,
    rebalances: AtomicU64,
    /// How many assignments (joins of the group, an empty assignment included) it has seen.
    assignments: AtomicU64,
    /// Whether the consumer's assignment strategy is `cooperative-sticky` (incremental
    /// rebalances) rather than an eager one.
    cooperative: bool,
    /// Since when the consumer has not been a member of its group (created and not joined yet,
    /// or its partitions revoked and no assignment since); `None` while it is one.
    out_of_group_since: Mutex<Option<Instant>>,
}

impl Default for RebalanceTracker {
    fn default() -> Self {
        Self {
            revoked: Mutex::default(),
            assigned: Mutex::default(),
            owned: Mutex::default(),
            health: None,
            rebalances: AtomicU64::default(),
            assignments: AtomicU64::default(),
            cooperative: false,
            out_of_group_since: Mutex::new(Some(Instant::now())),
        }
    }
}

impl RebalanceTracker {
    /// A tracker for a consumer whose `partition.assignment.strategy` is `strategy`.
    pub fn for_strategy(strategy: &str) -> Self {
        Self {
            cooperative: strategy.trim() == "cooperative-sticky",
            ..Self::default()
        }
    }

    /// Reports to `health`: unready until the consumer has joined its group, and while it has
    /// lost its session.
    pub fn with_health(mut self, health: Reporter) -> Self {
        health.unready("joining its consumer group");
        self.health = Some(health);
        self
    }

    /// How many partitions the consumer owns now.
    pub fn owned(&self) -> usize {
        lock(&self.owned).len()
    }

    /// Partitions assigned since the last call.
    pub fn take_assigned(&self) -> Vec<(String, i32)> {
        std::mem::take(&mut *lock(&self.assigned))
    }

    /// Partitions revoked since the last call.
    pub fn take_revoked(&self) -> Vec<(String, i32)> {
        std::mem::take(&mut *lock(&self.revoked))
    }

    /// How many rebalances this consumer has seen.
    pub fn rebalances(&self) -> u64 {
        self.rebalances.load(Ordering::Relaxed)
    }

    /// How many assignments this consumer has been given: each completed join of its group
    /// counts, even one that gave it no partition.
    pub fn assignments(&self) -> u64 {
        self.assignments.load(Ordering::Relaxed)
    }

    /// How long the consumer has not been a member of its group (not joined yet since it was
    /// created, or revoked and not assigned again); `None` while it is a member.
    pub fn out_of_group_for(&self) -> Option<Duration> {
        lock(&self.out_of_group_since).map(|since| since.elapsed())
    }
}

impl ClientContext for RebalanceTracker {}

impl ConsumerContext for RebalanceTracker {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        partitions: &mut TopicPartitionList,
    ) {
        let partitions = &*partitions;
        let rebalance = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => Rebalance::Assign(partitions),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => Rebalance::Revoke(partitions),
            _ => Rebalance::Error(KafkaError::Rebalance(err.into())),
        };
        self.pre_rebalance(consumer, &rebalance);
        let assign = err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS;
        let applied = match (assign, self.cooperative) {
            (true, true) => consumer.incremental_assign(partitions),
            (true, false) => consumer.assign(partitions),
            (false, true) => consumer.incremental_unassign(partitions),
            (false, false) => consumer.unassign(),
        };
        if let Err(error) = applied {
            tracing::warn!(%error, assign, "cannot apply a rebalance");
        }
        self.post_rebalance(consumer, &rebalance);
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.rebalances.fetch_add(1, Ordering::Relaxed);
        if let Rebalance::Revoke(partitions) = rebalance {
            let lost = consumer.assignment_lost();
            if lost && let Some(health) = &self.health {
                health.unready("lost its group session (the broker is unreachable, or the host was paused past session.timeout.ms); rejoining");
            }
            if lost || !self.cooperative {
                // Out of the group until the next assignment (an eager rebalance revokes
                // everything first; a cooperative one keeps the member in unless it was lost).
                lock(&self.out_of_group_since).get_or_insert_with(Instant::now);
            }
            let mut revoked = lock(&self.revoked);
            let mut owned = lock(&self.owned);
            if !self.cooperative {
                owned.clear();
            }
            for element in partitions.elements() {
                owned.remove(&(element.topic().to_string(), element.partition()));
                tracing::info!(
                    topic = element.topic(),
                    partition = element.partition(),
                    "partition revoked"
                );
                revoked.push((element.topic().to_string(), element.partition()));
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            self.assignments.fetch_add(1, Ordering::Relaxed);
            *lock(&self.out_of_group_since) = None;
            let mut owned = lock(&self.owned);
            if !self.cooperative {
                owned.clear();
            }
            let mut assigned = lock(&self.assigned);
            for element in partitions.elements() {
                owned.insert((element.topic().to_string(), element.partition()));
                assigned.push((element.topic().to_string(), element.partition()));
                tracing::info!(
                    topic = element.topic(),
                    partition = element.partition(),
                    "partition assigned"
                );
            }
        }
        if let Rebalance::Assign(_) = rebalance
            && let Some(health) = &self.health
        {
            health.ok();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
