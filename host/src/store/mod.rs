//! The host's local store (an embedded `fjall` log-structured store on disk): which events
//! each at-least-once stage has processed, the answers the at-least-once ingress gave, and
//! the tables ([`Table`]) that keep on disk, as copies of their topics, what would otherwise
//! grow in memory with every event: keyed state, exactly-once processed ids and answers, read
//! models.
//!
//! The first two survive a restart and are bounded by the configured retention (`prune`);
//! tables are caught up from their topics.
//! A log-structured store suits the processed ids: they are random (hashes), written in
//! batches of hundreds per stage, and looked up mostly to find them absent. Each batch is one
//! sequential journal append and one `fdatasync`, where a B-tree rewrote a page per id.
//!
//! A failing disk (full, read-only, I/O errors) is loud and heals: the store reports itself
//! unready and refuses calls until it could be reopened from disk, without a restart.
//!
//! - `keyspaces`: the `fjall` database, its keyspaces and the operations on them.
//! - `handle`: [`LocalStore`], the shared handle that closes a failed database and reopens it.
//! - `table`: [`Table`], the latest value per key of a topic, with a checkpoint per partition.
//! - `stamp`: the write time that begins each value of an expiring table ([`stamp()`]).
//! - `upkeep`: the background task that reopens a failed store and prunes old records.
//! - `error`: [`StoreError`].

mod error;
mod handle;
mod keyspaces;
mod stamp;
mod table;
mod upkeep;

pub use error::{StoreError, StoreReplaced};
pub use handle::{LocalStore, REOPEN_EVERY};
pub use keyspaces::{IngressRecord, TableEntry, unix_ms};
pub use stamp::{stamp, unstamp};
pub use table::{Scope, Table};
pub use upkeep::upkeep;
