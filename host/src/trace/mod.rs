//! `stagehost trace <key>`: every event one key (an order id) produced on every topic of the
//! pipeline, in time order, with the hop latency between consecutive events, and its dead
//! letters. The admin API serves the same [`Trace`] at `GET /api/trace/{key}` for the console.
//!
//! Which records belong to a key is [`matching`]'s rule; [`lookup`] reads the topics
//! `read_committed` up to the end offsets they have when it starts; [`render`] is the table.

pub mod matching;
mod model;
mod read;
mod render;

pub use matching::KeyMatcher;
pub use model::{Trace, TraceEvent};
pub use read::{lookup, pipeline_topics};
pub use render::render;
