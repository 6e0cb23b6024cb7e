//! Records a stage cannot dead-letter: a record whose dead letter the broker refuses for good
//! (too large for the dead-letter topic's `max.message.bytes`, no permission to write there, a
//! policy that rejects it). Such a record would fail its stage's transaction again and again,
//! and with it every partition of the stage. Instead its partition is **held** at the record:
//! the stage goes on with its other partitions, the host is unready with the reason (`/readyz`
//! part `stuck:<stage>/<topic>/<partition>`), and an operator decides (`stagehost stuck
//! list | skip | retry`, through the admin API): **skip** commits past the record without
//! publishing anything for it (logged with its coordinates, where it stays readable), **retry**
//! handles it again (after the dead-letter topic was fixed).
//!
//! The book is shared by every incarnation of a stage (a failed transaction rebuilds the
//! stage) and by the admin API. It lives in memory: after a restart the record fails once more
//! and is held again.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::health::{Health, Reporter};
use crate::store::unix_ms;

/// Where a record is: stage, topic, partition.
pub type StuckKey = (String, String, i32);

/// A record held because it cannot be dead-lettered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StuckRecord {
    /// The stage that reads it.
    pub stage: String,
    /// Its topic.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Why it cannot be dead-lettered.
    pub reason: String,
    /// When it was held (unix ms).
    pub since_unix_ms: u64,
    /// What an operator decided, not yet carried out.
    pub decision: Option<Decision>,
}

/// What an operator decided for a held record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Commit past it; nothing is published for it.
    Skip,
    /// Handle it again.
    Retry,
}

/// What a stage does with the record at an offset of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Handle it as usual.
    Go,
    /// Leave it (and its partition) where it is until an operator decides.
    Hold,
    /// Commit past it without handling it.
    Skip,
}

/// The held records of the host, by stage, topic and partition.
#[derive(Clone)]
pub struct StuckBook {
    records: Arc<Mutex<BTreeMap<StuckKey, (StuckRecord, Reporter)>>>,
    health: Health,
}

impl StuckBook {
    /// An empty book reporting to `health`.
    pub fn new(health: Health) -> Self {
        Self {
            records: Arc::default(),
            health,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<StuckKey, (StuckRecord, Reporter)>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds the record at `offset` of `topic`/`partition` for `stage`, because of `reason`.
    pub fn hold(&self, stage: &str, topic: &str, partition: i32, offset: i64, reason: &str) {
        let key = (stage.to_string(), topic.to_string(), partition);
        let part = format!("stuck:{stage}/{topic}/{partition}");
        let reporter = self.health.reporter(&part, "held");
        reporter.unready(format!(
            "the record at offset {offset} cannot be dead-lettered ({reason}); its partition is held: `stagehost stuck skip {stage} {topic} {partition}` commits past it, `stagehost stuck retry …` tries it again"
        ));
        tracing::error!(
            stage,
            topic,
            partition,
            offset,
            reason,
            "a record cannot be dead-lettered; holding its partition until an operator skips or retries it (stagehost stuck …)"
        );
        let record = StuckRecord {
            stage: stage.to_string(),
            topic: topic.to_string(),
            partition,
            offset,
            reason: reason.to_string(),
            since_unix_ms: unix_ms(SystemTime::now()),
            decision: None,
        };
        // A record held again on the same partition reports under the same part.
        self.lock().insert(key, (record, reporter));
    }

    /// What `stage` does with the record at `offset` of `topic`/`partition`. A decision is
    /// carried out once: the record is released from the book.
    pub fn verdict(&self, stage: &str, topic: &str, partition: i32, offset: i64) -> Verdict {
        let key = (stage.to_string(), topic.to_string(), partition);
        let mut records = self.lock();
        let Some((record, _)) = records.get(&key) else {
            return Verdict::Go;
        };
        let verdict = if record.offset != offset {
            // Another offset of the partition: the held record was handled elsewhere (or the
            // partition was reset); nothing is held there any more.
            Verdict::Go
        } else {
            match record.decision {
                None => return Verdict::Hold,
                Some(Decision::Retry) => Verdict::Go,
                Some(Decision::Skip) => Verdict::Skip,
            }
        };
        if let Some((record, reporter)) = records.remove(&key) {
            reporter.remove();
            if verdict == Verdict::Skip {
                tracing::warn!(stage, topic, partition, offset = record.offset, reason = %record.reason,
                    "skipping a record that could not be dead-lettered, as an operator decided; it stays readable at its offset");
            }
        }
        verdict
    }

    /// Whether `stage` has a held record on `topic`/`partition` still waiting for a decision.
    pub fn is_held(&self, stage: &str, topic: &str, partition: i32) -> bool {
        self.lock()
            .get(&(stage.to_string(), topic.to_string(), partition))
            .is_some_and(|(record, _)| record.decision.is_none())
    }

    /// Every held record.
    pub fn list(&self) -> Vec<StuckRecord> {
        self.lock()
            .values()
            .map(|(record, _)| record.clone())
            .collect()
    }

    /// Records an operator's decision for the record held on `topic`/`partition` of `stage`;
    /// the record, or why there is none to decide on.
    pub fn decide(
        &self,
        stage: &str,
        topic: &str,
        partition: i32,
        decision: Decision,
    ) -> Result<StuckRecord, String> {
        let mut records = self.lock();
        let key = (stage.to_string(), topic.to_string(), partition);
        match records.get_mut(&key) {
            Some((record, _)) => {
                record.decision = Some(decision);
                Ok(record.clone())
            }
            None => Err(format!(
                "no record of stage {stage} is held on {topic}/{partition}; held: {}",
                describe(records.values().map(|(r, _)| r))
            )),
        }
    }
}

fn describe<'a>(records: impl Iterator<Item = &'a StuckRecord>) -> String {
    let held: Vec<String> = records
        .map(|r| format!("{} {}/{}@{}", r.stage, r.topic, r.partition, r.offset))
        .collect();
    if held.is_empty() {
        "none".into()
    } else {
        held.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_record_waits_for_a_decision_and_makes_the_host_unready() {
        let health = Health::default();
        let book = StuckBook::new(health.clone());
        assert_eq!(book.verdict("s", "t", 0, 5), Verdict::Go);
        book.hold("s", "t", 0, 5, "MessageSizeTooLarge");
        assert!(!health.ready());
        assert!(
            health.problems()["stuck:s/t/0"]["reason"]
                .as_str()
                .unwrap()
                .contains("offset 5")
        );
        assert_eq!(book.verdict("s", "t", 0, 5), Verdict::Hold);
        assert_eq!(
            book.verdict("s", "t", 1, 5),
            Verdict::Go,
            "other partitions go on"
        );
        assert!(book.decide("s", "t", 1, Decision::Skip).is_err());
        book.decide("s", "t", 0, Decision::Skip).unwrap();
        assert_eq!(book.verdict("s", "t", 0, 5), Verdict::Skip);
        assert!(health.ready());
        assert_eq!(
            book.verdict("s", "t", 0, 5),
            Verdict::Go,
            "carried out once"
        );
        assert!(book.list().is_empty());
    }

    #[test]
    fn retry_releases_the_record_and_a_moved_partition_is_not_held() {
        let book = StuckBook::new(Health::default());
        book.hold("s", "t", 0, 5, "no permission");
        book.decide("s", "t", 0, Decision::Retry).unwrap();
        assert_eq!(book.verdict("s", "t", 0, 5), Verdict::Go);
        book.hold("s", "t", 0, 5, "no permission");
        assert_eq!(book.verdict("s", "t", 0, 9), Verdict::Go);
        assert!(book.list().is_empty());
    }
}
