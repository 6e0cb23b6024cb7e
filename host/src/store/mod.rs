//! The host's durable local state (an embedded `fjall` log-structured store on disk):
//! which events each at-least-once stage has processed, and the answers the at-least-once
//! ingress gave.
//!
//! Both survive a restart; both are bounded by the configured retention (`prune`).
//! A log-structured store suits the processed ids: they are random (hashes), written in
//! batches of hundreds per stage, and looked up mostly to find them absent. Each batch is one
//! sequential journal append and one `fdatasync`, where a B-tree rewrote a page per id.
//!
//! A failing disk (full, read-only, I/O errors) is loud and heals: the store reports itself
//! unready and refuses calls until it could be reopened from disk, without a restart.
//!
//! - `keyspaces`: the `fjall` database, its keyspaces and the operations on them.
//! - `handle`: [`StateStore`], the shared handle that closes a failed database and reopens it.
//! - `upkeep`: the background task that reopens a failed store and prunes old records.
//! - `error`: [`StoreError`].

mod error;
mod handle;
mod keyspaces;
mod upkeep;

pub use error::StoreError;
pub use handle::{REOPEN_EVERY, StateStore};
pub use keyspaces::{IngressRecord, unix_ms};
pub use upkeep::upkeep;
