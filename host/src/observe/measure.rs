//! Readings taken now and then (gauges): a stage's lag, its keyed state's size.

use std::time::Duration;

use super::HostEvent;
use super::catalogue;
use crate::kafka::PartitionLag;

/// A stage's lag was read (see `app::lag_watch`).
pub struct LagMeasured<'a> {
    /// The stage.
    pub stage: &'a str,
    /// Each input partition's lag.
    pub partitions: &'a [PartitionLag],
    /// How long the stage has had lag without committing progress.
    pub stalled_for: Duration,
}

impl HostEvent for LagMeasured<'_> {
    fn emit(self) {
        let stage = self.stage.to_string();
        let mut total = 0;
        for partition in self.partitions {
            total += partition.lag();
            metrics::gauge!(catalogue::CONSUMER_LAG, "stage" => stage.clone(),
                "topic" => partition.topic.clone(), "partition" => partition.partition.to_string())
            .set(partition.lag() as f64);
        }
        metrics::gauge!(catalogue::STAGE_LAG, "stage" => stage.clone()).set(total as f64);
        metrics::gauge!(catalogue::STAGE_STALLED_SECONDS, "stage" => stage)
            .set(self.stalled_for.as_secs_f64());
        if self.stalled_for >= Duration::from_secs(60) {
            tracing::warn!(stage = %self.stage, lag = total, stalled_s = self.stalled_for.as_secs(),
                "the stage has had input waiting and committed nothing for a minute or more; see /readyz and its log");
        }
    }
}

/// A stateful stage's keyed state was measured.
pub struct StateMeasured<'a> {
    /// The stage.
    pub stage: &'a str,
    /// Keys it holds.
    pub keys: u64,
}

impl HostEvent for StateMeasured<'_> {
    fn emit(self) {
        metrics::gauge!(catalogue::STATE_KEYS, "stage" => self.stage.to_string())
            .set(self.keys as f64);
    }
}
