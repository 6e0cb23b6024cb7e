//! stagehost: a WebAssembly-plugin stage host for Kafka event pipelines.
//!
//! # Layout
//! - [`config`]: `pipeline.toml` — model, environment overrides, validation of every problem.
//! - [`plugin`]: the WebAssembly side — engine, sandboxed instances, hot-swap slots, the WIT
//!   bindings.
//! - [`event`]: what travels on topics — CloudEvents headers and ids, dead letters, schemas.
//! - [`kafka`]: the one front door every client is configured through (`[kafka]` and its role
//!   tables), the start-up access check, topic creation, publishing with acknowledgement, `tail`.
//! - [`state`]: keyed plugin state — partitioned, transactional, restored from a changelog.
//! - [`store`]: durable local state — processed event ids and ingress answers (`fjall`).
//! - [`stage`]: per-event processing, the topic consume loop, the HTTP ingress stage.
//! - [`kpi`]: windowed KPIs published to the KPI topic.
//! - [`http`]: the HTTP server (ingress route, health, readiness).
//! - [`health`]: what each part of the host reports for `/readyz` (stages, ingress, Kafka).
//! - [`admin`]: the admin API (plugin list, hot swap, rollback) and its client.
//! - [`dlq`]: listing and replaying dead letters.
//! - [`backoff`]: exponential backoff with jitter.
//! - [`load`]: the open-loop load generator (`stagehost load`).
//! - [`app`]: wiring and orderly shutdown ([`app::run`] is the entry point); building stages
//!   from the configuration; restarting a stage that fails; the dev-mode plugin watch.
//!
//! Where does an event get deduplicated? In [`stage`]'s deduplicator (`stage/dedup.rs`), which
//! the consume loop asks before calling the plugin: processed ids in a transactional topic
//! (exactly-once) or in [`store`] (at-least-once). Where do failures go? [`stage`]'s processor
//! builds an [`event::dead_letter`]. What does `/readyz` know? What each part reports to
//! [`health`].

pub mod admin;
pub mod app;
pub mod backoff;
pub mod config;
pub mod dlq;
pub mod event;
pub mod health;
pub mod http;
pub mod kafka;
pub mod kpi;
pub mod load;
pub mod plugin;
pub mod stage;
pub mod state;
pub mod store;
