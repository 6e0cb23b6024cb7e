//! Running stages: the shared per-event processing, the topic consume loop (exactly-once or
//! at-least-once), retries that park a partition, stage fusion, the HTTP ingress; how a
//! stage's consumer keeps its static group membership across a change of its inputs.

mod answer_log;
mod answers;
mod commit;
mod coverage;
mod dedup;
mod fault;
mod fenced;
mod fusion;
mod ingress;
mod membership;
mod processor;
mod rebalance;
mod retry;
mod runner;
mod stuck;
mod watchdog;

pub use answers::{Answers, ProducerFactory, Published, TransactionalAnswers};
pub use commit::{Committer, InputPositions};
pub use coverage::{CoverageTarget, watch_coverage};
pub use dedup::{Deduplicator, ProcessedLog, processed_topic};
pub use fault::SilentPause;
pub use fenced::FencedOut;
pub use fusion::{
    Deferred, FusableStage, Fusion, FusionPlan, HANDLED_BY_HEADER, fuses_into, handled_upstream,
    not_fusable,
};
pub use ingress::{Ingress, IngressRoute, PATH_HEADER_PREFIX, Reply};
pub use membership::{InputsRecord, REJOIN_PATIENCE, move_subscription, rejoin_if_inputs_changed};
pub use processor::{Failure, Input, Processed, Route, StageContext};
pub use rebalance::RebalanceTracker;
pub use retry::{ATTEMPT_HEADER, RetryBook};
pub use runner::{
    KpiTarget, StageConsumer, StageRunner, StageStateParts, TARGET_STAGE_HEADER, Worker,
};
pub use stuck::{Decision, StuckBook, StuckRecord, Verdict};
pub use watchdog::Watchdog;
