//! Wiring: load plugins, open the store, connect to Kafka, start the stages, the HTTP server
//! and the KPI publisher; on shutdown stop them in order and flush.
//!
//! - `host`: [`Host`] — start, run until shutdown, stop in order; [`run`] does all three.
//! - `start`: the start-up steps, each a function, in the order the host takes them.
//! - `stages`: building every stage at once and starting the topic-fed ones supervised.
//! - `build` (the parts of a stage from its configuration), `supervise` and `restarts` (a
//!   failed stage is rebuilt), `readiness` (the `/readyz` Kafka and topic checks),
//!   `declared` (declared topics that disappear), `plugin_watch` (development mode),
//!   `lag_watch` (each stage's lag, for `/metrics`).

mod build;
mod declared;
mod host;
mod lag_watch;
mod plugin_watch;
mod readiness;
mod restarts;
mod stages;
mod start;
mod supervise;

pub use build::load_plugins;
pub use host::{Host, RunOptions, run};
pub use start::engine;
