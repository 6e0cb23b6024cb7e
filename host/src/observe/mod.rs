//! Observable events of the host, one typed struct each (after Vector's `internal_events`):
//! its [`HostEvent::emit`] writes one log line with the common fields (stage, event id, topic,
//! partition, offset) and counts it in a metric named `stagehost_<noun>_total` labelled by
//! stage. The metrics go to whatever `metrics` recorder the binary installs (none: counting
//! costs nothing).

pub mod catalogue;
mod emit;
mod stage;

pub use emit::{HostEvent, RecordAt};
pub use stage::{
    ConsumerFailed, OpenWorkDropped, RecordDeadLettered, RepeatDropped, RetryParked, SlowPartition,
    StageRebuilt, StageStalled, StageStarted, StageStopped, TransactionAborted,
};
