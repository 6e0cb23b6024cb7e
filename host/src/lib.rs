//! stagehost: a WebAssembly-plugin stage host for Kafka event pipelines.
//!
//! # Layout
//! - [`config`]: `pipeline.toml` — model, environment overrides, validation of every problem.
//! - [`plugin`]: the WebAssembly side — engine, sandboxed instances, hot-swap slots, the WIT
//!   bindings.
//! - [`event`]: what travels on topics — CloudEvents headers and ids, dead letters, schemas.
//! - [`kafka`]: the one front door every client is configured through (`[kafka]` and its role
//!   tables), the start-up access check, topic creation, publishing with acknowledgement, `tail`,
//!   the partitioner librdkafka would apply (for fused stages).
//! - [`state`]: keyed plugin state — partitioned, transactional, logged to a changelog; how a
//!   table catches up with its topic.
//! - [`store`]: the local store (`fjall`) — at-least-once processed ids and answers, and the
//!   tables (keyed state, exactly-once processed ids and answers, read models) that keep on
//!   disk, as copies of their topics, what would otherwise grow in memory.
//! - [`stage`]: the per-event processing shared with the ingress, and topic-fed stages: the
//!   poll loop, the stage task (one batch), the committer that owns the open work and tells
//!   its participants how it ended, the two guarantees (exactly-once, at-least-once: the one
//!   place the mode is read), stage fusion (a stateless stage run in process, as its own task,
//!   in the workers that write its input).
//! - [`ingress`]: the HTTP trigger — a request's checks, plugin call and publishing; its answer
//!   book; the exactly-once group-commit loop.
//! - [`kpi`]: windowed KPIs published to the KPI topic.
//! - [`observe`]: the host's observable events, one struct each, whose `emit` logs with the
//!   common fields and counts a `stagehost_*_total` metric.
//! - [`http`]: the HTTP server (declared routes and read models, health, readiness).
//! - [`health`]: what each part of the host reports for `/readyz` (stages, ingress, Kafka).
//! - [`admin`]: the admin API (plugin list, hot swap, rollback, held records) and its client.
//! - [`console`]: the page on the admin listener that shows the pipeline live, and its JSON
//!   endpoints (topology, pending dead letters and replay, trace).
//! - [`dlq`]: listing and replaying dead letters.
//! - [`trace`]: `stagehost trace <key>`: one key's events on every topic of the pipeline, in time
//!   order, with hops (not the OTLP spans of [`observe`]).
//! - [`backoff`]: exponential backoff with jitter.
//! - [`load`]: the load generator of `stagehost load` (any pipeline: body template, done topic).
//! - [`app`]: wiring and orderly shutdown ([`app::Host`]: start, run until shutdown, stop in
//!   order; [`app::run`] is the entry point); building stages from the configuration;
//!   restarting a stage that fails; the dev-mode plugin watch.
//!
//! Where does an event get deduplicated? In the stage task (`stage/task.rs`), which asks its
//! guarantee's `ProcessedIds` (`stage/guarantee/`) before calling the plugin: processed ids in
//! a transactional topic (exactly-once) or in [`store`] (at-least-once). Where do failures go? [`stage`]'s processor
//! builds an [`event::dead_letter`]; a record whose letter the broker refuses for good holds
//! its partition ([`stage::StuckBook`]). What does `/readyz` know? What each part reports to
//! [`health`].

pub mod admin;
pub mod app;
pub mod backoff;
pub mod config;
pub mod console;
pub mod dlq;
pub mod event;
pub mod health;
pub mod http;
pub mod ingress;
pub mod kafka;
pub mod kpi;
pub mod load;
pub mod observe;
pub mod plugin;
pub mod stage;
pub mod state;
pub mod store;
pub mod trace;
