//! Keyed state for plugins: partitioned like the stage's input, changed atomically with the
//! event's outputs, durable in a compacted changelog topic, restored on partition assignment.

mod changelog;
mod keyed;

pub use changelog::{changelog_topic, restore};
pub use keyed::{KeyedState, Write, Writes};
