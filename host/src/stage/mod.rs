//! Running stages: the shared per-event processing, the topic consume loop, the HTTP ingress.

mod ingress;
mod processor;
mod runner;

pub use ingress::{Ingress, Reply};
pub use processor::{Failure, Input, Route, StageContext};
pub use runner::StageRunner;
