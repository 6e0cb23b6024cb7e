//! Running stages: the shared per-event processing, the topic consume loop (exactly-once or
//! at-least-once), the HTTP ingress.

mod answers;
mod ingress;
mod processor;
mod rebalance;
mod runner;

pub use answers::{Answers, TransactionalAnswers};
pub use ingress::{Ingress, Reply};
pub use processor::{Failure, Input, Processed, Route, StageContext};
pub use rebalance::RebalanceTracker;
pub use runner::{KpiTarget, StageConsumer, StageRunner, StageStateParts};
