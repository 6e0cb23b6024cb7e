//! Events of topic-fed stages: their lifecycle, and what became of records that were not
//! simply processed.

use std::time::Duration;

use super::emit::{HostEvent, RecordAt, count, log_at_record};

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
        count("stagehost_stage_starts_total", self.stage);
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
        count("stagehost_stage_stalls_total", self.stage);
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
        count("stagehost_stage_rebuilds_total", self.stage);
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
        count("stagehost_repeats_dropped_total", self.at.stage);
    }
}

/// An event was dead-lettered.
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
        count("stagehost_records_dead_lettered_total", self.at.stage);
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
        count("stagehost_retries_total", self.at.stage);
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
        count("stagehost_event_timeouts_total", self.stage);
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
        count("stagehost_open_work_dropped_total", self.stage);
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
        count("stagehost_transactions_aborted_total", self.stage);
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
        count("stagehost_consumer_errors_total", self.stage);
    }
}

#[cfg(test)]
mod tests {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::*;

    /// The counters `emit` adds to, by name and stage label.
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
                let stage = key
                    .labels()
                    .find(|label| label.key() == "stage")
                    .map(|label| label.value().to_string())
                    .unwrap_or_default();
                let DebugValue::Counter(value) = value else {
                    panic!("not a counter: {}", key.name())
                };
                (key.name().to_string(), stage, value)
            })
            .collect()
    }

    #[test]
    fn a_dead_letter_is_counted_for_its_stage() {
        let at = RecordAt {
            stage: "pack",
            id: "o-1",
            key: Some("k"),
            topic: "In",
            partition: 2,
            offset: 7,
        };
        let counts = counted(|| {
            RecordDeadLettered {
                at,
                reason: "no",
                attempt: 1,
            }
            .emit();
            RecordDeadLettered {
                at,
                reason: "no",
                attempt: 2,
            }
            .emit();
            RepeatDropped { at }.emit();
        });
        assert!(counts.contains(&(
            "stagehost_records_dead_lettered_total".into(),
            "pack".into(),
            2
        )));
        assert!(counts.contains(&("stagehost_repeats_dropped_total".into(), "pack".into(), 1)));
    }
}
