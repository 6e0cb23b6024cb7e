//! Readiness that tells the truth: every part of the host that can fail on its own (each
//! topic-fed stage, the ingress, the connection to Kafka) reports here whether it works, and
//! `/readyz` is ready only when all of them do. An unready answer names each part that is not
//! working and why, so an operator (or a load balancer's log) can see what to fix.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

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
    /// When the condition last changed.
    since: Instant,
    /// Wall-clock time of the change, for the report.
    since_wall: SystemTime,
}

/// Shared registry of the host's parts and their condition.
#[derive(Clone, Default)]
pub struct Health {
    parts: Arc<Mutex<BTreeMap<String, Entry>>>,
}

/// The handle one part reports through.
#[derive(Clone)]
pub struct Reporter {
    health: Health,
    part: String,
}

impl Health {
    /// A handle for `part` (for instance `stage:inventory`), registered as not ready with
    /// `initial` as its reason until it reports otherwise.
    pub fn reporter(&self, part: &str, initial: &str) -> Reporter {
        let reporter = Reporter {
            health: self.clone(),
            part: part.to_string(),
        };
        reporter.set(Condition::Unready(initial.to_string()));
        reporter
    }

    /// Whether every registered part is working.
    pub fn ready(&self) -> bool {
        self.lock()
            .values()
            .all(|entry| entry.condition == Condition::Ok)
    }

    /// The parts that are not working, with their reason and for how long, as JSON.
    pub fn problems(&self) -> serde_json::Value {
        let parts = self.lock();
        let mut problems = serde_json::Map::new();
        for (part, entry) in parts.iter() {
            if let Condition::Unready(reason) = &entry.condition {
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
}
