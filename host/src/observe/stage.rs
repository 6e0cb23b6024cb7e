//! Events of topic-fed stages: their lifecycle, and what became of records that were not
//! simply processed.

use std::time::Duration;

use super::catalogue;
use super::emit::{HostEvent, RecordAt, count, log_at_record};
use crate::stage::Fate;

/// A stage's worker started (after a start, a rebuild or a swap of its inputs).
pub struct StageStarted<'a> {
    /// The stage.
    pub stage: &'a str,
    /// Its live plugin version.
    pub version: &'a str,
    /// `exactly_once` or `at_least_once`.
    pub mode: &'static str,
    /// Whether its plugin keeps keyed state.
    pub stateful: bool,
    /// The stages it runs in process, comma-separated.
    pub fused: String,
}

impl HostEvent for StageStarted<'_> {
    fn emit(self) {
        tracing::info!(stage = %self.stage, version = %self.version, mode = self.mode,
            stateful = self.stateful, fused = self.fused, "stage started");
        count(catalogue::STAGE_STARTS, self.stage);
    }
}

/// A stage's worker stopped after committing its open work.
pub struct StageStopped<'a> {
    /// The stage.
    pub stage: &'a str,
}

impl HostEvent for StageStopped<'_> {
    fn emit(self) {
        tracing::info!(stage = %self.stage, "stage stopped");
    }
}

/// A stage made no progress for its `stall_timeout`: this incarnation ends and is rebuilt.
pub struct StageStalled<'a> {
    /// The stage.
    pub stage: &'a str,
    /// What the watchdog saw.
    pub reason: &'a str,
}

impl HostEvent for StageStalled<'_> {
    fn emit(self) {
        tracing::error!(stage = %self.stage, reason = %self.reason, "stage stalled");
        count(catalogue::STAGE_STALLS, self.stage);
    }
}

/// A stage's incarnation failed and is rebuilt after a pause.
pub struct StageRebuilt<'a> {
    /// The stage.
    pub stage: &'a str,
    /// Why the incarnation ended.
    pub error: &'a anyhow::Error,
    /// The pause before the rebuild.
    pub delay: Duration,
}

impl HostEvent for StageRebuilt<'_> {
    fn emit(self) {
        tracing::error!(stage = %self.stage, error = format!("{:#}", self.error),
            delay = ?self.delay, "stage failed; restarting it");
        count(catalogue::STAGE_REBUILDS, self.stage);
    }
}

/// A repeat of an event the stage handled before was dropped. Never silent: an outside
/// producer repeating an id with another body loses that body here.
pub struct RepeatDropped<'a> {
    /// The repeat.
    pub at: RecordAt<'a>,
}

impl HostEvent for RepeatDropped<'_> {
    fn emit(self) {
        log_at_record!(info, self.at, "repeat of an event already handled: dropped");
        count(catalogue::STAGE_REPEATS_DROPPED, self.at.stage);
    }
}

/// A stage's work was committed: what became of its events (its own, and those it handled in
/// a writer's work as a fused stage), and how long the work was open. Events a writer handled
/// for it, and replayed dead letters of other stages, are not its events.
pub struct EventsFinished<'a, I> {
    /// The stage.
    pub stage: &'a str,
    /// What became of each event.
    pub fates: I,
    /// How long the work was open (from its first poll to its commit).
    pub open_for: Duration,
}

impl<'a, I: Iterator<Item = &'a Fate>> HostEvent for EventsFinished<'_, I> {
    fn emit(self) {
        let (mut events, mut outputs) = (0u64, 0u64);
        let mut dead_letters: Vec<(&'static str, u64)> = Vec::new();
        for fate in self.fates {
            match fate {
                // Not handled here: by a writer upstream (counted there), or another stage's.
                Fate::HandledUpstream | Fate::NotOurs => continue,
                Fate::Published(made, _) => outputs += *made as u64,
                Fate::DeadLettered(_, reason) => {
                    match dead_letters.iter_mut().find(|(r, _)| r == reason) {
                        Some((_, n)) => *n += 1,
                        None => dead_letters.push((reason, 1)),
                    }
                }
                Fate::Duplicate => {}
            }
            events += 1;
        }
        if events == 0 {
            return;
        }
        let stage = self.stage.to_string();
        metrics::counter!(catalogue::STAGE_EVENTS_IN, "stage" => stage.clone()).increment(events);
        metrics::counter!(catalogue::STAGE_EVENTS_OUT, "stage" => stage.clone()).increment(outputs);
        for (reason, n) in dead_letters {
            metrics::counter!(catalogue::STAGE_DEAD_LETTERS, "stage" => stage.clone(), "reason" => reason)
                .increment(n);
        }
        metrics::histogram!(catalogue::STAGE_PROCESSING_SECONDS, "stage" => stage)
            .record_many(self.open_for.as_secs_f64(), events as usize);
    }
}

/// A stage committed its open work (a transaction, or a flush and an offset commit).
pub struct WorkCommitted<'a> {
    /// The stage.
    pub stage: &'a str,
    /// How long the commit took.
    pub took: Duration,
}

impl HostEvent for WorkCommitted<'_> {
    fn emit(self) {
        metrics::histogram!(catalogue::STAGE_COMMIT_SECONDS, "stage" => self.stage.to_string())
            .record(self.took.as_secs_f64());
    }
}

/// An event was dead-lettered (counted by reason once its work is committed: see
/// [`EventsFinished`]).
pub struct RecordDeadLettered<'a> {
    /// The event.
    pub at: RecordAt<'a>,
    /// Why, in words.
    pub reason: &'a str,
    /// The attempt that failed.
    pub attempt: u32,
}

impl HostEvent for RecordDeadLettered<'_> {
    fn emit(self) {
        log_at_record!(warn, self.at, error = %self.reason, attempt = self.attempt, "dead-lettering event");
    }
}

/// The plugin asked for a retry: the event's partition is parked until its next attempt.
pub struct RetryParked<'a> {
    /// The event.
    pub at: RecordAt<'a>,
    /// The attempt that asked.
    pub attempt: u32,
    /// The plugin's reason.
    pub message: &'a str,
    /// The wait before the next attempt.
    pub delay: Duration,
}

impl HostEvent for RetryParked<'_> {
    fn emit(self) {
        log_at_record!(info, self.at, attempt = self.attempt, message = %self.message, delay = ?self.delay,
            "plugin asked for a retry; pausing the partition");
        count(catalogue::STAGE_RETRIES, self.at.stage);
    }
}

/// An event ran into `max_event_time`: its partition waits before the next event so the other
/// partitions go on.
pub struct SlowPartition<'a> {
    /// The stage.
    pub stage: &'a str,
    /// The partition's topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: i32,
    /// Timeouts of the partition in a row.
    pub timeouts_in_a_row: u32,
    /// How long it waits.
    pub delay: Duration,
}

impl HostEvent for SlowPartition<'_> {
    fn emit(self) {
        tracing::warn!(stage = %self.stage, topic = %self.topic, partition = self.partition,
            timeouts_in_a_row = self.timeouts_in_a_row, delay = ?self.delay,
            "an event ran into max_event_time; its partition waits before the next event so the other partitions go on");
        count(catalogue::STAGE_EVENT_TIMEOUTS, self.stage);
    }
}

/// Partitions were revoked: the open work is dropped and handled again from the committed
/// offsets.
pub struct OpenWorkDropped<'a> {
    /// The stage.
    pub stage: &'a str,
    /// How many partitions were revoked.
    pub revoked: usize,
    /// Whether there was open work.
    pub open: bool,
}

impl HostEvent for OpenWorkDropped<'_> {
    fn emit(self) {
        tracing::info!(stage = %self.stage, revoked = self.revoked, open = self.open,
            "partitions revoked; dropping the open work");
        count(catalogue::STAGE_OPEN_WORK_DROPPED, self.stage);
    }
}

/// An open transaction was aborted (its work is handled again).
pub struct TransactionAborted<'a> {
    /// The stage.
    pub stage: &'a str,
}

impl HostEvent for TransactionAborted<'_> {
    fn emit(self) {
        tracing::info!(stage = %self.stage, "aborting the open transaction");
        count(catalogue::STAGE_TRANSACTIONS_ABORTED, self.stage);
    }
}

/// A poll of a stage's consumer failed; it polls again after a pause.
pub struct ConsumerFailed<'a> {
    /// The stage.
    pub stage: &'a str,
    /// The consumer's error.
    pub error: &'a dyn std::fmt::Display,
    /// The pause before the next poll.
    pub pause: Duration,
}

impl HostEvent for ConsumerFailed<'_> {
    fn emit(self) {
        tracing::warn!(stage = %self.stage, error = %self.error, pause = ?self.pause,
            "consumer error; polling again after a pause");
        count(catalogue::STAGE_CONSUMER_ERRORS, self.stage);
    }
}

#[cfg(test)]
mod tests {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::*;

    /// The counters `emit` adds to, by name and stage label (and reason, after a `/`).
    fn counted(emit: impl FnOnce()) -> Vec<(String, String, u64)> {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, emit);
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let (_, key) = key.into_parts();
                let label = |name: &str| {
                    key.labels()
                        .find(|label| label.key() == name)
                        .map(|label| label.value().to_string())
                };
                let mut stage = label("stage").unwrap_or_default();
                if let Some(reason) = label("reason") {
                    stage = format!("{stage}/{reason}");
                }
                let value = match value {
                    DebugValue::Counter(value) => value,
                    DebugValue::Histogram(values) => values.len() as u64,
                    DebugValue::Gauge(_) => panic!("a gauge: {}", key.name()),
                };
                (key.name().to_string(), stage, value)
            })
            .collect()
    }

    #[test]
    fn committed_events_are_counted_with_dead_letters_by_reason() {
        let version: std::sync::Arc<str> = "v1".into();
        let fates = [
            Fate::Published(2, version.clone()),
            Fate::DeadLettered(version.clone(), "schema"),
            Fate::DeadLettered(version.clone(), "schema"),
            Fate::DeadLettered(version, "trap"),
            Fate::Duplicate,
            Fate::HandledUpstream,
        ];
        let at = RecordAt {
            stage: "pack",
            id: "o-1",
            key: Some("k"),
            topic: "In",
            partition: 2,
            offset: 7,
        };
        let counts = counted(|| {
            EventsFinished {
                stage: "pack",
                fates: fates.iter(),
                open_for: Duration::from_millis(3),
            }
            .emit();
            RepeatDropped { at }.emit();
        });
        let has =
            |name: &str, stage: &str, n: u64| counts.contains(&(name.into(), stage.into(), n));
        assert!(has(catalogue::STAGE_EVENTS_IN, "pack", 5), "{counts:?}");
        assert!(has(catalogue::STAGE_EVENTS_OUT, "pack", 2), "{counts:?}");
        assert!(
            has(catalogue::STAGE_DEAD_LETTERS, "pack/schema", 2),
            "{counts:?}"
        );
        assert!(
            has(catalogue::STAGE_DEAD_LETTERS, "pack/trap", 1),
            "{counts:?}"
        );
        assert!(
            has(catalogue::STAGE_PROCESSING_SECONDS, "pack", 5),
            "{counts:?}"
        );
        assert!(
            has(catalogue::STAGE_REPEATS_DROPPED, "pack", 1),
            "{counts:?}"
        );
    }
}
