//! Keyed state of stateful stages: kept in the local store, logged to a changelog topic.

mod changelog;
mod keyed;
pub mod republish;

pub use changelog::{CaughtUp, Entry, catch_up, changelog_topic, check_layout, plain_entry};
pub use keyed::{KeyedState, Write, Writes};
