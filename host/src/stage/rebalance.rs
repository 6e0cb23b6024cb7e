//! Consumer context that records partition revocations, so a stage can abandon the work of a
//! transaction whose partitions it no longer owns instead of committing it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};

/// Counts rebalances and keeps the partitions revoked since they were last taken.
#[derive(Default)]
pub struct RebalanceTracker {
    revoked: Mutex<Vec<(String, i32)>>,
    rebalances: AtomicU64,
}

impl RebalanceTracker {
    /// Partitions revoked since the last call.
    pub fn take_revoked(&self) -> Vec<(String, i32)> {
        std::mem::take(&mut *self.revoked.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// How many rebalances this consumer has seen.
    pub fn rebalances(&self) -> u64 {
        self.rebalances.load(Ordering::Relaxed)
    }
}

impl ClientContext for RebalanceTracker {}

impl ConsumerContext for RebalanceTracker {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.rebalances.fetch_add(1, Ordering::Relaxed);
        if let Rebalance::Revoke(partitions) = rebalance {
            let mut revoked = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
            for element in partitions.elements() {
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
            for element in partitions.elements() {
                tracing::info!(
                    topic = element.topic(),
                    partition = element.partition(),
                    "partition assigned"
                );
            }
        }
    }
}
