//! The parts of a stage task that keep something for its open work — keyed state, retries and
//! slow partitions, records settled for or left to a fused stage's worker, KPIs — each a
//! [`Participant`] the committer tells how the work ended.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::handover::Deferred;
use super::outcome::Fate;
use super::participant::{Committed, Participant};
use super::retry::{RetryBook, TopicPartition};
use crate::config::RetryConfig;
use crate::event::headers::RecordHeaders;
use crate::kafka::{KafkaClients, OutRecord};
use crate::kpi::StageKpis;
use crate::observe::{EventsFinished, HostEvent};
use crate::state::KeyedState;

/// State of a stateful stage.
pub struct StageStateParts {
    /// The keyed state of the partitions this instance owns.
    pub keyed: Arc<Mutex<KeyedState>>,
    /// The changelog topic.
    pub changelog: String,
    /// Brokers, for catching up.
    pub kafka: KafkaClients,
    /// Most entries the state may hold (`state_max_keys`); an event that writes a value while
    /// it holds that many is dead-lettered.
    pub max_keys: Option<u64>,
}

/// The retry book of a stage and what paces its partitions.
pub struct Pacing {
    /// Retry settings.
    pub retry: RetryConfig,
    /// Events waiting for their next attempt.
    pub retries: RetryBook,
    /// Partitions whose last events ran into `max_event_time`, with how many did in a row:
    /// such a partition cools down (parked like a retry) before its next event, so one slow
    /// key cannot take the stage's one thread from every other partition.
    pub slow: HashMap<TopicPartition, u32>,
}

impl Pacing {
    /// Pacing with `retry` settings and nothing parked.
    pub fn new(retry: RetryConfig) -> Self {
        Self {
            retry,
            retries: RetryBook::default(),
            slow: HashMap::new(),
        }
    }
}

/// The book of records a fused stage's writers left to the stage's own worker (see
/// [`Deferred`]), as the open work uses it: run in process, the stage leaves records (withdrawn
/// if the work is dropped); run by its own worker, it settles them once its work is committed.
#[derive(Default)]
pub struct Settling {
    /// The book shared with the writers, if this stage is fused into others.
    pub deferred: Option<Arc<Deferred>>,
    /// Records the open work settled for the writers: `(partition, id)`.
    settled: Vec<(i32, String)>,
    /// Records the open work (in process) left to the stage's own worker: `(partition, id)`.
    left: Vec<(i32, String)>,
}

impl Settling {
    /// Settles and leaves records in `deferred`.
    pub fn new(deferred: Option<Arc<Deferred>>) -> Self {
        Self {
            deferred,
            settled: Vec::new(),
            left: Vec::new(),
        }
    }

    /// The open work settles the record `id` of `partition`, if a writer left it to this
    /// worker.
    pub(super) fn settle(&mut self, partition: i32, id: &str) {
        if let Some(deferred) = &self.deferred
            && deferred.contains(partition, id)
        {
            self.settled.push((partition, id.to_string()));
        }
    }

    /// Whether records of `partition` must go to the stage's own worker (one left before is
    /// not handled yet).
    pub(super) fn must_leave(&self, partition: i32) -> bool {
        self.deferred
            .as_ref()
            .is_some_and(|deferred| deferred.is_waiting(partition))
    }

    /// Leaves the record `id` of `partition` to the stage's own worker.
    pub(super) fn leave(&mut self, partition: i32, id: &str) {
        if let Some(deferred) = &self.deferred {
            deferred.leave(partition, id);
            self.left.push((partition, id.to_string()));
        }
    }
}

/// A stage's KPI recorder, and the fates of the events it handled in process in the open work
/// of a writer (its own work's fates come with the commit).
pub struct Counting {
    /// The recorder, shared by the stage's worker and the writers it is fused into.
    pub kpis: StageKpis,
    in_process: Vec<Fate>,
}

impl Counting {
    /// Counts in `kpis`.
    pub fn new(kpis: StageKpis) -> Self {
        Self {
            kpis,
            in_process: Vec::new(),
        }
    }

    /// The fate of an event handled in process in a writer's open work.
    pub(super) fn in_process(&mut self, fate: Fate) {
        self.in_process.push(fate);
    }

    fn count(&self, fate: &Fate, latency: Duration) {
        match fate {
            Fate::Duplicate => self.kpis.duplicate(),
            Fate::NotOurs => {}
            Fate::HandledUpstream => self.kpis.handled_upstream(),
            Fate::DeadLettered(version, _) => self.kpis.dead_lettered(version),
            Fate::Published(outputs, version) => self.kpis.processed(version, *outputs, latency),
        }
    }
}

/// The work's state writes go into the local copy of the changelog (a copy that cannot take
/// them is caught up before it is read again); dropped work's writes are undone.
impl Participant for StageStateParts {
    /// The last value the work wrote to each key, one changelog record each.
    fn closing_records(&mut self) -> Vec<OutRecord> {
        lock(&self.keyed)
            .pending()
            .map(|(partition, key, value)| OutRecord {
                topic: self.changelog.clone(),
                partition: Some(partition),
                key: Some(key.to_string()),
                payload: value.clone(),
                headers: RecordHeaders::new(),
                id: format!("state:{key}"),
            })
            .collect()
    }

    fn on_safe(&mut self) -> anyhow::Result<()> {
        if let Err(error) = lock(&self.keyed).commit() {
            tracing::warn!(changelog = %self.changelog, %error,
                "cannot write committed state into the local store; it is read back from the changelog");
        }
        Ok(())
    }

    fn on_dropped(&mut self, revoked: &[TopicPartition]) {
        let mut keyed = lock(&self.keyed);
        keyed.rollback();
        for (_, partition) in revoked {
            keyed.forget(*partition);
        }
    }
}

/// Records settled for the writers are handled once the work is committed; records left to
/// the stage's worker are on their way to it then (it settles them), and withdrawn when the
/// work is dropped.
impl Participant for Settling {
    fn on_committed(&mut self, _work: &Committed) {
        if let Some(deferred) = &self.deferred
            && !self.settled.is_empty()
        {
            deferred.handled(self.settled.iter().map(|(p, id)| (*p, id.as_str())));
        }
        self.settled.clear();
        self.left.clear();
    }

    fn on_dropped(&mut self, _revoked: &[TopicPartition]) {
        self.settled.clear();
        if let Some(deferred) = &self.deferred {
            for (partition, id) in self.left.drain(..) {
                deferred.withdraw(partition, &id);
            }
        }
    }
}

/// What the work's inputs became counts in the stage's KPIs.
impl Participant for Counting {
    fn on_committed(&mut self, work: &Committed) {
        for fate in work.fates.iter().chain(&self.in_process) {
            self.count(fate, work.latency);
        }
        EventsFinished {
            stage: self.kpis.stage(),
            fates: work.fates.iter().chain(&self.in_process),
            open_for: work.latency,
        }
        .emit();
        self.in_process.clear();
    }

    fn on_dropped(&mut self, _revoked: &[TopicPartition]) {
        self.in_process.clear();
    }
}

/// Revoked partitions' retries and slowness are the next owner's.
impl Participant for Pacing {
    fn on_dropped(&mut self, revoked: &[TopicPartition]) {
        self.retries.forget(revoked);
        self.slow
            .retain(|partition, _| !revoked.contains(partition));
    }
}

/// The keyed state, even if a plugin call panicked while holding it.
pub(super) fn lock(state: &Mutex<KeyedState>) -> std::sync::MutexGuard<'_, KeyedState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}
