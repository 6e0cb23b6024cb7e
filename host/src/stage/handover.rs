//! How a writer hands a record to a fused stage's own worker (see [`super::fusion`]): the
//! header naming the stages that already handled the record in process, and the book of
//! records left to the worker because the in-process call did not simply succeed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::event::cloudevents;

/// Header of a record whose reading stage(s) a writer ran in process: a comma list of stage
/// names. Each stage it names skips the record.
pub const HANDLED_BY_HEADER: &str = "stagehost-handled-by";

/// Whether `headers` (of an input of `stage`) say a writer handled it in process for `stage`.
pub fn handled_upstream(headers: &[(String, String)], stage: &str) -> bool {
    cloudevents::find(headers, HANDLED_BY_HEADER)
        .is_some_and(|names| names.split(',').any(|name| name == stage))
}

/// The records of a fused stage B that writers of this host left to B's own worker (B did not
/// simply succeed on them in process), by partition of B's input, until that worker has
/// handled them. While a partition has one, the writers leave every later record of that
/// partition to B's worker too, so that B's outputs keep each key's order (a record B's worker
/// retries is not overtaken by a later one run in process).
///
/// An entry is forgotten after `patience` (longer than B's retries can take): a record whose
/// partition B's worker on another host instance owns is never handled here, and must not keep
/// this host from fusing that partition for good. Within that time such a partition is simply
/// not fused; past it (another instance still retrying the record, or a crash that lost this
/// book) a later record may overtake the left one, the limit of fusion across instances.
#[derive(Debug)]
pub struct Deferred {
    patience: Duration,
    /// Ids left to the worker, by partition, with when they were left.
    left: Mutex<HashMap<i32, HashMap<String, Instant>>>,
}

impl Deferred {
    /// An empty book whose entries are forgotten after `patience`.
    pub fn new(patience: Duration) -> Self {
        Self {
            patience,
            left: Mutex::default(),
        }
    }

    /// The patience for a stage whose retries take at most `max_attempts` × `max_delay`.
    pub fn patience_for(max_attempts: u32, max_delay: Duration) -> Duration {
        (max_delay * max_attempts + Duration::from_secs(30)).max(Duration::from_secs(60))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, HashMap<String, Instant>>> {
        self.left.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether records of `partition` must go to the stage's own worker (one left before is not
    /// handled yet).
    pub fn is_waiting(&self, partition: i32) -> bool {
        let mut left = self.lock();
        let Some(ids) = left.get_mut(&partition) else {
            return false;
        };
        ids.retain(|_, at| at.elapsed() < self.patience);
        if ids.is_empty() {
            left.remove(&partition);
            return false;
        }
        true
    }

    /// The record `id` of `partition` is left to the stage's own worker.
    pub fn leave(&self, partition: i32, id: &str) {
        self.lock()
            .entry(partition)
            .or_default()
            .insert(id.to_string(), Instant::now());
    }

    /// The writer's work holding the record `id` was dropped: it never reaches the worker.
    pub fn withdraw(&self, partition: i32, id: &str) {
        self.handled([(partition, id)]);
    }

    /// Whether the record `id` of `partition` was left to the worker (and is not handled yet).
    pub fn contains(&self, partition: i32, id: &str) -> bool {
        self.lock()
            .get(&partition)
            .is_some_and(|ids| ids.contains_key(id))
    }

    /// The stage's own worker committed its handling of these records.
    pub fn handled<'a>(&self, records: impl IntoIterator<Item = (i32, &'a str)>) {
        let mut left = self.lock();
        for (partition, id) in records {
            if let Some(ids) = left.get_mut(&partition) {
                ids.remove(id);
                if ids.is_empty() {
                    left.remove(&partition);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_waits_while_a_record_left_to_the_worker_is_not_handled() {
        let book = Deferred::new(Duration::from_secs(60));
        assert!(!book.is_waiting(0));
        book.leave(0, "a");
        book.leave(0, "b");
        assert!(book.is_waiting(0) && !book.is_waiting(1));
        assert!(book.contains(0, "a") && !book.contains(1, "a"));
        book.handled([(0, "a")]);
        assert!(book.is_waiting(0), "b is still left");
        book.withdraw(0, "b");
        assert!(!book.is_waiting(0));
        let impatient = Deferred::new(Duration::ZERO);
        impatient.leave(2, "c");
        assert!(!impatient.is_waiting(2), "forgotten after its patience");
        assert_eq!(
            Deferred::patience_for(5, Duration::from_secs(10)),
            Duration::from_secs(80)
        );
    }
}
