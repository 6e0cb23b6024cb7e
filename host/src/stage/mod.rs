//! Running stages: the per-event processing shared with the HTTP ingress ([`crate::ingress`]),
//! the topic stages' poll loop, stage task and committer, the processing guarantees
//! (exactly-once, at-least-once), retries that park a partition, stage fusion; how a stage's
//! consumer keeps its static group membership across a change of its inputs.

mod commit;
mod coverage;
mod dedup;
mod fault;
mod fenced;
mod fusion;
mod guarantee;
mod handover;
mod latest;
mod live_plugin;
mod membership;
mod outcome;
mod participant;
mod positions;
mod processor;
mod rebalance;
mod retry;
mod runner;
mod stage_parts;
mod stuck;
mod task;
mod watchdog;

pub use commit::{Committer, SKIPPED_WORK_INTERVAL};
pub use coverage::{CoverageTarget, watch_coverage};
pub use dedup::dedup_key;
pub use fault::SilentPause;
pub use fenced::FencedOut;
pub use fusion::{FusableStage, Fusion, FusionPlan, fuses_into, not_fusable};
pub use guarantee::{
    AtLeastOnce, ExactlyOnce, FusedIds, Guarantee, LocalIds, ProcessedIds, ProcessedLog,
    StageGuarantee, consumer_settings, fused_ids, ingress_answers, processed_ids_topic,
    processed_topic, stage_guarantee,
};
pub use handover::{Deferred, HANDLED_BY_HEADER, handled_upstream};
pub use latest::LatestOutputs;
pub use live_plugin::{LivePlugin, Plugin};
pub use membership::{InputsRecord, REJOIN_PATIENCE, move_subscription, rejoin_if_inputs_changed};
pub use outcome::{Done, Fate, Handled, Move};
pub use participant::{Committed, Participant, Participants};
pub use positions::{InputPositions, StageConsumer};
pub use processor::{Failure, Input, Processed, Route, StageContext};
pub use rebalance::RebalanceTracker;
pub use retry::{ATTEMPT_HEADER, RetryBook};
pub use runner::{KpiTarget, StageRunner, Worker};
pub use stage_parts::{Counting, Pacing, Settling, StageStateParts};
pub use stuck::{Decision, StuckBook, StuckRecord, Verdict};
pub use task::{InProcess, InProcessRun, NothingInProcess, StageTask, TARGET_STAGE_HEADER};
pub use watchdog::Watchdog;
