//! Readiness that tells the truth: every part of the host that can fail on its own (each
//! topic-fed stage, the ingress, the connection to Kafka) reports here whether it works, and
//! `/readyz` is ready only when all of them do. An unready answer names each part that is not
//! working and why, so an operator (or a load balancer's log) can see what to fix.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// A part busy with one piece of work (a batch, a commit) for longer than this is stalled.
pub const STALL_AFTER: Duration = Duration::from_secs(20);

/// One part's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// Working.
    Ok,
    /// Not working yet or not working now; the text says why.
    Unready(String),
}

#[derive(Debug, Clone)]
struct Entry {
    condition: Condition,
    /// When the part's current piece of work began (ms since `Health::epoch`), 0 when idle.
    busy_since: Arc<AtomicU64>,
    /// When the condition last changed.
    since: Instant,
    /// Wall-clock time of the change, for the report.
    since_wall: SystemTime,
}

/// Shared registry of the host's parts and their condition.
#[derive(Clone)]
pub struct Health {
    parts: Arc<Mutex<BTreeMap<String, Entry>>>,
    epoch: Instant,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            parts: Arc::default(),
            epoch: Instant::now(),
        }
    }
}

/// The handle one part reports through.
#[derive(Clone)]
pub struct Reporter {
    health: Health,
    part: String,
    busy_since: Arc<AtomicU64>,
}

impl Health {
    /// A handle for `part` (for instance `stage:enricher`), registered as not ready with
    /// `initial` as its reason until it reports otherwise.
    pub fn reporter(&self, part: &str, initial: &str) -> Reporter {
        let reporter = Reporter {
            health: self.clone(),
            part: part.to_string(),
            busy_since: Arc::default(),
        };
        reporter.set(Condition::Unready(initial.to_string()));
        reporter
    }

    /// Whether every registered part is working (and none is stalled).
    pub fn ready(&self) -> bool {
        self.lock()
            .values()
            .all(|entry| entry.condition == Condition::Ok && self.stalled(entry).is_none())
    }

    /// How long `entry` has been busy with one piece of work, if longer than [`STALL_AFTER`].
    fn stalled(&self, entry: &Entry) -> Option<Duration> {
        let since = entry.busy_since.load(Ordering::Relaxed);
        if since == 0 {
            return None;
        }
        let busy = self
            .epoch
            .elapsed()
            .saturating_sub(Duration::from_millis(since));
        (busy > STALL_AFTER).then_some(busy)
    }

    /// Every part, and whether it is working (and not stalled).
    pub fn parts(&self) -> Vec<(String, bool)> {
        self.lock()
            .iter()
            .map(|(part, entry)| {
                let ok = entry.condition == Condition::Ok && self.stalled(entry).is_none();
                (part.clone(), ok)
            })
            .collect()
    }

    /// The parts that are not working, with their reason and for how long, as JSON.
    pub fn problems(&self) -> serde_json::Value {
        let parts = self.lock();
        let mut problems = serde_json::Map::new();
        for (part, entry) in parts.iter() {
            let stalled = self.stalled(entry).map(|busy| {
                Condition::Unready(format!(
                    "stalled: one piece of work has taken {:.0} s (Kafka does not answer, or a call blocks)",
                    busy.as_secs_f64()
                ))
            });
            if let Some(Condition::Unready(reason)) = stalled.as_ref().or(Some(&entry.condition)) {
                let since = entry
                    .since_wall
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or_default();
                problems.insert(
                    part.clone(),
                    serde_json::json!({
                        "reason": reason,
                        "since_unix_ms": since,
                        "for_ms": entry.since.elapsed().as_millis() as u64,
                    }),
                );
            }
        }
        serde_json::Value::Object(problems)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.parts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Reporter {
    /// Reports the part's condition; logs when it changes.
    pub fn set(&self, condition: Condition) {
        let mut parts = self.health.lock();
        let changed = parts
            .get(&self.part)
            .is_none_or(|entry| entry.condition != condition);
        if !changed {
            return;
        }
        match &condition {
            Condition::Ok => tracing::info!(part = %self.part, "ready"),
            Condition::Unready(reason) => tracing::info!(part = %self.part, %reason, "not ready"),
        }
        parts.insert(
            self.part.clone(),
            Entry {
                condition,
                busy_since: self.busy_since.clone(),
                since: Instant::now(),
                since_wall: SystemTime::now(),
            },
        );
    }

    /// Reports the part as working.
    pub fn ok(&self) {
        self.set(Condition::Ok);
    }

    /// Reports the part as not working, for `reason`.
    pub fn unready(&self, reason: impl Into<String>) {
        self.set(Condition::Unready(reason.into()));
    }

    /// The part starts a piece of work (a batch, a commit): if it is still at it after
    /// [`STALL_AFTER`], the part counts as stalled until [`Reporter::idle`].
    pub fn busy(&self) {
        self.busy_from(Instant::now());
    }

    /// Like [`Reporter::busy`], for a piece of work that began at `started`: a part doing
    /// several at once reports the oldest of them.
    pub fn busy_from(&self, started: Instant) {
        let since = started
            .saturating_duration_since(self.health.epoch)
            .as_millis() as u64;
        self.busy_since.store(since.max(1), Ordering::Relaxed);
    }

    /// The part finished its piece of work.
    pub fn idle(&self) {
        self.busy_since.store(0, Ordering::Relaxed);
    }

    /// Removes the part (it stopped on purpose).
    pub fn remove(&self) {
        self.health.lock().remove(&self.part);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_part_is_ok_and_problems_name_the_others() {
        let health = Health::default();
        assert!(health.ready(), "nothing registered yet");
        let stage = health.reporter("stage:a", "starting");
        let ingress = health.reporter("ingress", "starting");
        assert!(!health.ready());
        stage.ok();
        assert!(!health.ready());
        ingress.ok();
        assert!(health.ready());
        stage.unready("no partitions assigned");
        assert!(!health.ready());
        let problems = health.problems();
        assert_eq!(
            problems["stage:a"]["reason"], "no partitions assigned",
            "{problems}"
        );
        assert!(problems.get("ingress").is_none());
        stage.remove();
        assert!(health.ready());
    }

    #[test]
    fn a_part_busy_for_too_long_is_stalled() {
        let health = Health::default();
        let stage = health.reporter("stage:a", "starting");
        stage.ok();
        stage.busy();
        assert!(health.ready(), "just started");
        // Pretend the work began long ago.
        stage.busy_since.store(1, Ordering::Relaxed);
        let mut old = health.clone();
        old.epoch = Instant::now() - STALL_AFTER * 2;
        assert!(!old.ready());
        assert!(
            old.problems()["stage:a"]["reason"]
                .as_str()
                .unwrap()
                .starts_with("stalled"),
            "{}",
            old.problems()
        );
        stage.idle();
        assert!(old.ready());
    }

    #[test]
    fn a_part_doing_several_pieces_of_work_is_stalled_by_the_oldest() {
        let health = Health {
            epoch: Instant::now() - STALL_AFTER * 3,
            ..Health::default()
        };
        let ingress = health.reporter("ingress", "starting");
        ingress.ok();
        ingress.busy_from(Instant::now() - STALL_AFTER * 2);
        assert!(!health.ready(), "{}", health.problems());
        // The oldest ended; the next began just now.
        ingress.busy_from(Instant::now());
        assert!(health.ready(), "{}", health.problems());
    }
}
