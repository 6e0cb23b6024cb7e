//! What every observable event shares: how it is emitted, and the record it is about.

use crate::stage::Input;

/// An observable event: logs one line and counts itself.
pub trait HostEvent {
    /// Logs the event with its fields and counts it.
    fn emit(self);
}

/// The input record an event is about: the fields every record event logs.
#[derive(Debug, Clone, Copy)]
pub struct RecordAt<'a> {
    /// The stage handling it.
    pub stage: &'a str,
    /// Its event id (`ce_id`).
    pub id: &'a str,
    /// Its record key, if it has a UTF-8 one.
    pub key: Option<&'a str>,
    /// The topic it was read from.
    pub topic: &'a str,
    /// Its partition.
    pub partition: i32,
    /// Its offset (-1 for an event handled in process, before it was written).
    pub offset: i64,
}

impl<'a> RecordAt<'a> {
    /// Where `input` of `stage` came from.
    pub fn of(stage: &'a str, input: &'a Input<'_>) -> Self {
        Self {
            stage,
            id: &input.id,
            key: input.key,
            topic: &input.origin.source_topic,
            partition: input.origin.partition,
            offset: input.origin.offset,
        }
    }
}

/// Logs at `$level` with the record fields of `$at` (a [`RecordAt`]) and the given fields and
/// message.
macro_rules! log_at_record {
    ($level:ident, $at:expr, $($rest:tt)*) => {{
        let at: &$crate::observe::RecordAt<'_> = &$at;
        tracing::$level!(stage = %at.stage, id = %at.id, key = at.key.unwrap_or_default(),
            topic = %at.topic, partition = at.partition, offset = at.offset, $($rest)*)
    }};
}
pub(crate) use log_at_record;

/// Adds one to the counter `name` of `stage`.
pub(crate) fn count(name: &'static str, stage: &str) {
    metrics::counter!(name, "stage" => stage.to_string()).increment(1);
}
