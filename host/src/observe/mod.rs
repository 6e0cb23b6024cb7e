//! Observable events of the host, one typed struct each (after Vector's `internal_events`):
//! its [`HostEvent::emit`] writes its log line (with the common fields of a record: stage,
//! event id, topic, partition, offset) and records its metrics. Every metric is listed in
//! [`catalogue`]; the [`Exporter`] (installed when `telemetry.metrics` is on) is the
//! `metrics` recorder that `GET /metrics` renders. Without it, recording costs nothing.

mod admin;
pub mod catalogue;
mod emit;
mod exporter;
mod ingress;
mod measure;
mod stage;
pub mod trace;

pub use admin::{AdminRefused, escaped};
pub use emit::{HostEvent, RecordAt};
pub use exporter::Exporter;
pub use ingress::{IngressCommitted, RepeatRequest, RequestAnswered};
pub use measure::{LagMeasured, StateMeasured};
pub use stage::{
    ConsumerFailed, EventsFinished, OpenWorkDropped, RecordDeadLettered, RepeatDropped,
    RetryParked, SlowPartition, StageRebuilt, StageStalled, StageStarted, StageStopped,
    TransactionAborted, WorkCommitted,
};
