//! `stagehost dlq list | replay`: the dead letters of a pipeline, and sending them back to
//! their source topic once the plugin is fixed.
//!
//! A replay publishes the original event to its source topic with a new id derived from the
//! dead letter (so stages that remember processed ids do not drop it as a duplicate) and a
//! [`TARGET_STAGE_HEADER`] naming the failed stage, so the other stages reading that topic
//! skip it. In the same Kafka transaction it writes a marker keyed by the dead letter's id to
//! the compacted `<dead-letter topic>-replayed` topic; a dead letter with a marker is never
//! replayed again. The replay producer has one fixed transactional id, so a concurrent replay
//! fences this one, and markers are read only after fencing: replaying twice publishes once.
//!
//! A dead letter is replayed only to a stage that still reads its source topic (the
//! configuration may have changed since), and a letter whose `original_event` was cut to fit
//! is replayed with the whole event, read back from its source partition and offset
//! ([`original`]).

mod list;
mod original;
mod replay;

pub use crate::stage::TARGET_STAGE_HEADER;
pub use list::{DeadLetterEntry, Filter, list, marker_topic, parse_since, render};
pub use replay::{REPLAY_OF_HEADER, ReplayReport, replay};
