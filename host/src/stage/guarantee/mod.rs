//! The processing guarantee of a stage, chosen once ([`stage_guarantee`]): exactly-once and
//! at-least-once implement the same [`Guarantee`] (how open work reaches Kafka and becomes
//! safe) and [`ProcessedIds`] (where repeats are found), one file each.

mod at_least_once;
mod choose;
mod contract;
mod exactly_once;
mod processed_log;

pub use at_least_once::{AtLeastOnce, LocalIds};
pub use choose::{
    FusedIds, StageGuarantee, consumer_settings, fused_ids, ingress_answers, processed_ids_topic,
    stage_guarantee,
};
pub use contract::{Guarantee, ProcessedIds, Settle};
pub use exactly_once::ExactlyOnce;
pub use processed_log::{ProcessedLog, processed_topic};
