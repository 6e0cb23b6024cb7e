//! Telling a stage that restarts now and then from one that restarts in a loop.
//!
//! A stage is rebuilt whenever an incarnation fails. One rebuild after a broker outage is
//! healing; incarnations that keep failing soon after they start are a loop, and a loop must
//! be loud: the stage is unready (part `restarts:<stage>`) from the third short incarnation in
//! a row until one runs for [`STABLE_AFTER`], each rebuild in the loop is logged as such with
//! the last cause, and an incarnation fenced out of its group by another consumer with the
//! same `group.instance.id` (another host started with the same instance id) says so at once.

use std::time::Duration;

use crate::health::{Health, Reporter};
use crate::stage::FencedOut;

/// An incarnation that fails sooner than this after it started counts towards a loop.
pub const STABLE_AFTER: Duration = Duration::from_secs(30);
/// Short incarnations in a row that make a loop.
const LOOP_AFTER: u32 = 3;

/// The restart history of one stage.
pub struct RestartLoop {
    stage: String,
    /// The instance id the host runs with, to name it when another host shares it.
    instance_id: String,
    health: Health,
    /// Incarnations in a row that failed before [`STABLE_AFTER`].
    short_runs: u32,
    /// Set while the stage counts as in a loop.
    reporter: Option<Reporter>,
}

impl RestartLoop {
    /// No restarts yet for `stage` of the host instance `instance_id`.
    pub fn new(stage: &str, instance_id: &str, health: Health) -> Self {
        Self {
            stage: stage.to_string(),
            instance_id: instance_id.to_string(),
            health,
            short_runs: 0,
            reporter: None,
        }
    }

    /// Whether the stage counts as in a restart loop now.
    pub fn in_loop(&self) -> bool {
        self.reporter.is_some()
    }

    /// An incarnation that ran for `ran` failed with `error`.
    pub fn failed(&mut self, ran: Duration, error: &anyhow::Error) {
        self.short_runs = if ran < STABLE_AFTER {
            self.short_runs + 1
        } else {
            1
        };
        let cause = format!("{error:#}");
        let fenced =
            fenced_out(error).filter(|fenced| fenced.by_same_member || self.short_runs >= 2);
        let reason = if let Some(fenced) = fenced {
            Some(format!(
                "another host with the same instance id ({}) is fencing this one: {fenced}; give every host its own state.instance_id (STAGEHOST_INSTANCE)",
                self.instance_id
            ))
        } else if self.short_runs >= LOOP_AFTER {
            Some(format!(
                "in a restart loop: rebuilt {} times in a row, each incarnation failing within {:?}; last cause: {cause}",
                self.short_runs, STABLE_AFTER
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            tracing::error!(stage = %self.stage, rebuilds = self.short_runs, last_cause = %cause,
                "stage keeps failing: {reason}");
            let part = format!("restarts:{}", self.stage);
            let reporter = self
                .reporter
                .get_or_insert_with(|| self.health.reporter(&part, "restarting"));
            reporter.unready(reason);
        }
    }

    /// The current incarnation has run for [`STABLE_AFTER`]: the loop, if any, is over.
    pub fn stable(&mut self) {
        self.short_runs = 0;
        if let Some(reporter) = self.reporter.take() {
            tracing::info!(stage = %self.stage, "stage runs again without failing");
            reporter.remove();
        }
    }

    /// The stage stopped on purpose.
    pub fn remove(&mut self) {
        if let Some(reporter) = self.reporter.take() {
            reporter.remove();
        }
    }
}

/// What fenced the stage out, if another client with its identity did: a consumer with its
/// `group.instance.id` always means another host with the same instance id; a producer with its
/// `transactional.id` does when it happens again and again (once, it may be the broker aborting
/// a transaction that outlived its timeout).
fn fenced_out(error: &anyhow::Error) -> Option<&FencedOut> {
    error
        .chain()
        .find_map(|cause| cause.downcast_ref::<FencedOut>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure() -> anyhow::Error {
        anyhow::anyhow!("the transaction failed")
    }

    #[test]
    fn three_short_incarnations_in_a_row_are_a_loop_until_one_runs_long_enough() {
        let health = Health::default();
        let mut restarts = RestartLoop::new("s", "host-a", health.clone());
        restarts.failed(Duration::from_secs(1), &failure());
        restarts.failed(Duration::from_secs(1), &failure());
        assert!(health.ready(), "two rebuilds are healing, not a loop");
        restarts.failed(Duration::from_secs(1), &failure());
        assert!(restarts.in_loop());
        let problems = health.problems();
        let reason = problems["restarts:s"]["reason"].as_str().unwrap();
        assert!(reason.contains("rebuilt 3 times"), "{reason}");
        assert!(reason.contains("the transaction failed"), "{reason}");
        restarts.stable();
        assert!(health.ready());
    }

    #[test]
    fn a_long_incarnation_starts_the_count_again() {
        let health = Health::default();
        let mut restarts = RestartLoop::new("s", "host-a", health.clone());
        restarts.failed(Duration::from_secs(1), &failure());
        restarts.failed(Duration::from_secs(1), &failure());
        restarts.failed(STABLE_AFTER * 2, &failure());
        restarts.failed(Duration::from_secs(1), &failure());
        assert!(health.ready());
    }

    #[test]
    fn a_duplicate_instance_is_named_at_once() {
        let health = Health::default();
        let mut restarts = RestartLoop::new("s", "host-a", health.clone());
        let fenced = anyhow::Error::new(FencedOut {
            by_same_member: true,
            detail: "FencedInstanceId".into(),
        })
        .context("stage s: the consumer was fenced");
        restarts.failed(STABLE_AFTER * 2, &fenced);
        let problems = health.problems();
        let reason = problems["restarts:s"]["reason"].as_str().unwrap();
        assert!(reason.contains("same instance id (host-a)"), "{reason}");
    }

    #[test]
    fn a_fenced_producer_names_a_duplicate_instance_only_when_it_repeats() {
        let health = Health::default();
        let mut restarts = RestartLoop::new("s", "host-a", health.clone());
        let fenced = || {
            anyhow::Error::new(FencedOut {
                by_same_member: false,
                detail: "ProducerFenced".into(),
            })
        };
        restarts.failed(STABLE_AFTER * 2, &fenced());
        assert!(health.ready(), "once may be a transaction that timed out");
        restarts.failed(Duration::from_secs(1), &fenced());
        assert!(!health.ready());
        let problems = health.problems();
        let reason = problems["restarts:s"]["reason"].as_str().unwrap();
        assert!(reason.contains("same instance id"), "{reason}");
    }
}
