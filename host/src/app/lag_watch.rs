//! The lag watch: every few seconds, each topic-fed stage's lag per input partition (its
//! group's committed offsets against the partitions' ends) and how long it has had lag without
//! committing progress, for `/metrics`. Read from outside the group, so a stage that is stuck,
//! rejoining or rebuilt shows its lag growing all the same.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::PipelineConfig;
use crate::kafka::{GroupLag, KafkaClients, LagPeeker, PartitionLag};
use crate::observe::{HostEvent, LagMeasured};

/// How often the lag is read.
const LAG_INTERVAL: Duration = Duration::from_secs(5);

/// How long a stage has had lag without committing progress.
#[derive(Debug, Default)]
struct ProgressClock {
    /// The committed offsets last seen.
    committed: BTreeMap<(String, i32), i64>,
    /// Since when the stage has had lag and committed nothing (`None`: no lag).
    stuck_since: Option<Instant>,
}

impl ProgressClock {
    /// Takes a reading at `now`: how long the stage has had lag without progress (zero while it
    /// has none or just moved).
    fn observe(&mut self, partitions: &[PartitionLag], now: Instant) -> Duration {
        let committed: BTreeMap<_, _> = partitions
            .iter()
            .map(|p| ((p.topic.clone(), p.partition), p.committed))
            .collect();
        let moved = committed != self.committed;
        self.committed = committed;
        let lag: i64 = partitions.iter().map(PartitionLag::lag).sum();
        if lag == 0 {
            self.stuck_since = None;
        } else if moved || self.stuck_since.is_none() {
            self.stuck_since = Some(now);
        }
        self.stuck_since
            .map(|since| now.duration_since(since))
            .unwrap_or_default()
    }
}

/// One stage as the watch reads it.
struct Watched {
    stage: String,
    topics: Vec<String>,
    group: GroupLag,
    clock: ProgressClock,
}

/// Reads the lag of every topic-fed stage of `config` until `stop`.
pub(super) async fn watch_lag(
    config: &PipelineConfig,
    kafka: KafkaClients,
    mut stop: watch::Receiver<bool>,
) {
    let peeker = match LagPeeker::new(&kafka) {
        Ok(peeker) => peeker,
        Err(error) => {
            tracing::warn!(%error, "cannot read the stages' lag; /metrics shows none");
            return;
        }
    };
    let mut watched = Vec::new();
    for stage in config.stages.iter().filter(|stage| !stage.is_http()) {
        match GroupLag::new(&kafka, &stage.group_id(), peeker.clone()) {
            Ok(group) => watched.push(Watched {
                stage: stage.name.clone(),
                topics: stage.inputs().iter().map(|t| t.to_string()).collect(),
                group,
                clock: ProgressClock::default(),
            }),
            Err(error) => {
                tracing::warn!(stage = %stage.name, %error, "cannot read the stage's lag; /metrics shows none for it")
            }
        }
    }
    let mut tick = tokio::time::interval(LAG_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        watched = tokio::task::spawn_blocking(move || {
            for stage in &mut watched {
                read_one(stage);
            }
            watched
        })
        .await
        .expect("the lag reader does not panic");
    }
}

fn read_one(stage: &mut Watched) {
    match stage.group.read(&stage.topics) {
        Ok(partitions) => {
            let stalled_for = stage.clock.observe(&partitions, Instant::now());
            LagMeasured {
                stage: &stage.stage,
                partitions: &partitions,
                stalled_for,
            }
            .emit();
        }
        Err(error) => {
            tracing::debug!(stage = %stage.stage, error = format!("{error:#}"), "cannot read the stage's lag now")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(committed: i64, end: i64) -> Vec<PartitionLag> {
        vec![PartitionLag {
            topic: "In".into(),
            partition: 0,
            committed,
            end,
        }]
    }

    #[test]
    fn lag_without_progress_counts_up_from_when_it_appeared() {
        let mut clock = ProgressClock::default();
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(clock.observe(&at(5, 5), t0), Duration::ZERO, "no lag");
        assert_eq!(
            clock.observe(&at(5, 9), t0 + s(5)),
            Duration::ZERO,
            "lag appears"
        );
        assert_eq!(clock.observe(&at(5, 12), t0 + s(10)), s(5), "no progress");
        assert_eq!(clock.observe(&at(5, 12), t0 + s(15)), s(10));
        assert_eq!(
            clock.observe(&at(8, 12), t0 + s(20)),
            Duration::ZERO,
            "progress"
        );
        assert_eq!(clock.observe(&at(8, 12), t0 + s(25)), s(5));
        assert_eq!(
            clock.observe(&at(12, 12), t0 + s(30)),
            Duration::ZERO,
            "caught up"
        );
    }
}
