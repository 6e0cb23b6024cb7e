//! The console: a small page on the admin listener that shows the pipeline live — the
//! topology with each stage's rate, lag and dead letters (from `GET /metrics`), the plugin
//! versions with a rollback button, the pending dead letters with a replay button, and a key
//! lookup drawn as a timeline. The page is vanilla JS and SVG, embedded in the binary
//! ([`page`]); it polls the admin API, and its actions use the same endpoints as the CLI.
//!
//! - `GET /` and `GET /console`: the page; `GET /console/<file>`: its style and ES modules.
//! - `GET /api/topology`: the stages (inputs, outputs, mode), the ingress routes as sources,
//!   the topics ([`topology`]).
//! - `GET /api/dlq`: the dead letters not replayed yet, newest first, with their age.
//! - `POST /api/dlq/replay`: body `{"stage", "id"}` (one letter; `stage` may be left out) or
//!   `{"stage", "since"}` (a filter): replays like `stagehost dlq replay`.
//! - `GET /api/trace/{key}`: what `stagehost trace <key> --json` prints.
//!
//! The plugin list and rollback (`GET /plugins`, `POST /plugins/{stage}/rollback`) are the
//! admin API's own ([`crate::admin`]).

mod api;
mod page;
pub mod topology;

pub use api::router;
