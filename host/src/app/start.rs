//! The start-up steps of a host, in the order [`super::Host::start`] takes them: plugins, the
//! Kafka access check, the store, the producer and topics, record limits, then (after the
//! stages) the helper tasks, the admin API and the HTTP server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::producer::FutureProducer;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::build::{event_type, load_plugins, views};
use super::declared::DeclaredTopics;
use super::lag_watch::watch_lag;
use super::plugin_watch::watch_plugins;
use super::readiness::watch_readiness;
use super::stages::{Plugins, Shared};
use crate::admin::{AdminGuard, AdminTokens, MetricsEndpoint, Slots};
use crate::config::PipelineConfig;
use crate::health::Health;
use crate::http::IngressEndpoint;
use crate::kafka::{ACCESS_PATIENCE, KafkaClients, RecordLimits, check_access, ensure_topics};
use crate::kpi::{KpiSink, publish_loop};
use crate::observe::Exporter;
use crate::plugin::PluginEngine;
use crate::stage::{CoverageTarget, watch_coverage};
use crate::state::changelog_topic;
use crate::store::LocalStore;

/// How long an at-least-once stage waits for a failed idempotency store to be reopened before
/// it fails (and is rebuilt). Waiting keeps its open work, whose outputs are out already: a
/// rebuilt stage would read and publish it again. Shorter than the time stages get to stop
/// (`STAGE_STOP_TIMEOUT`), and a stop ends the wait anyway.
pub(super) const STORE_PATIENCE: Duration = Duration::from_secs(30);

/// The engine for `config`: compiled components cached under the state folder; fuel metering
/// only when some stage sets a fuel limit.
pub fn engine(config: &PipelineConfig) -> anyhow::Result<PluginEngine> {
    let meter_fuel = config.stages.iter().any(|s| s.limits.fuel.is_some());
    PluginEngine::new(Some(&config.state.dir.join("compiled")), meter_fuel)
        .context("cannot start the WebAssembly engine")
}

/// Loads every stage's plugin (see [`load_plugins`]) and logs each, and how long it took
/// since `started`.
pub(super) fn load_logged(
    engine: &PluginEngine,
    config: &PipelineConfig,
    started: Instant,
) -> anyhow::Result<Plugins> {
    let plugins = load_plugins(engine, config)?;
    for (stage, (slot, _)) in &plugins {
        let plugin = slot.current();
        tracing::info!(stage, version = %plugin.version, path = %plugin.path.display(), "plugin loaded");
    }
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "plugins loaded"
    );
    Ok(plugins)
}

/// The live plugin slot of every stage, for the admin API, the read models and the watch.
pub(super) fn slots_of(plugins: &Plugins) -> Slots {
    Arc::new(
        plugins
            .iter()
            .map(|(stage, (slot, _))| (stage.clone(), slot.clone()))
            .collect(),
    )
}

/// Checks that the brokers accept the host's credentials and TLS settings, and returns the
/// cluster's id. Refused credentials or TLS settings end the start here, with one clear error.
pub(super) async fn check_kafka_access(kafka: &KafkaClients) -> anyhow::Result<String> {
    let checking = kafka.clone();
    tokio::task::spawn_blocking(move || {
        check_access(&checking, ACCESS_PATIENCE)?;
        crate::kafka::cluster_id(&checking)
    })
    .await
    .context("the Kafka access check panicked")?
}

/// Opens the local store, bound to `cluster`.
pub(super) fn open_store(config: &PipelineConfig, cluster: &str) -> anyhow::Result<LocalStore> {
    Ok(tokio::task::block_in_place(|| {
        LocalStore::open_for_cluster(&config.state.dir, cluster)
    })?)
}

/// The host's producer; creates the declared topics first when `kafka.create_topics` is set.
pub(super) async fn producer_and_topics(
    config: &PipelineConfig,
    kafka: &KafkaClients,
) -> anyhow::Result<FutureProducer> {
    let producer = kafka.shared_producer()?;
    if config.kafka.create_topics {
        ensure_topics(kafka, config).await?;
    }
    Ok(producer)
}

/// The largest record each declared topic and each stage's changelog takes.
pub(super) async fn record_limits(
    config: &PipelineConfig,
    kafka: &KafkaClients,
) -> Arc<RecordLimits> {
    let limited: Vec<String> = config
        .topics
        .keys()
        .cloned()
        .chain(
            config
                .stages
                .iter()
                .map(|stage| changelog_topic(&stage.group_id())),
        )
        .collect();
    Arc::new(RecordLimits::read(kafka, &limited).await)
}

/// Starts the KPI publisher, when KPIs are enabled.
pub(super) fn start_kpis(
    config: &PipelineConfig,
    shared: &Shared,
    stop: &watch::Receiver<bool>,
) -> Option<JoinHandle<()>> {
    config.kpi.enabled.then(|| {
        tokio::spawn(publish_loop(
            shared.kpis.clone(),
            KpiSink::new(shared.producer.clone()),
            config.kpi.topic.clone(),
            event_type(config, &config.kpi.topic),
            config.kpi.interval,
            stop.clone(),
        ))
    })
}

/// What the background watches look at besides the configuration.
pub(super) struct Watched {
    /// Every topic-fed stage's group and inputs, for the coverage watch.
    pub(super) coverage: Vec<CoverageTarget>,
    /// How clients reach the brokers.
    pub(super) kafka: KafkaClients,
    /// The stages' plugins, swapped by the plugin watch in development mode.
    pub(super) slots: Slots,
    /// Whether the plugin watch runs (development mode).
    pub(super) watch_plugins: bool,
    /// When the start began, for the `ready` log line.
    pub(super) started: Instant,
}

/// Starts the watches that run until the stop: partition coverage, readiness, the stages' lag
/// (with metrics on), the store's upkeep, and (in development mode) the plugin files.
pub(super) fn start_watches(
    config: &PipelineConfig,
    watched: Watched,
    shared: &Shared,
    stop: &watch::Receiver<bool>,
) {
    tokio::spawn(watch_coverage(
        watched.coverage,
        watched.kafka.clone(),
        shared.health.clone(),
        stop.clone(),
    ));
    tokio::spawn(watch_readiness(
        shared.producer.clone(),
        DeclaredTopics::of(config, &shared.health),
        shared.health.clone(),
        stop.clone(),
        watched.started,
    ));
    if config.telemetry.metrics {
        let (config, kafka, stop) = (config.clone(), watched.kafka.clone(), stop.clone());
        tokio::spawn(async move { watch_lag(&config, kafka, stop).await });
    }
    tokio::spawn(crate::store::upkeep(
        shared.store.clone(),
        config.state.idempotency_retention,
        stop.clone(),
    ));
    if watched.watch_plugins {
        let files = config
            .stages
            .iter()
            .map(|stage| (stage.name.clone(), stage.plugin.clone()))
            .collect();
        tokio::spawn(watch_plugins(watched.slots.clone(), files, stop.clone()));
    }
}

/// The tokens of the admin API, when it is enabled: from the environment or files, or
/// generated into `state.dir` on loopback. Fails, naming what to set, for an admin API off
/// loopback without a token.
pub(super) fn admin_tokens(config: &PipelineConfig) -> anyhow::Result<Option<AdminTokens>> {
    if !config.admin.enabled {
        return Ok(None);
    }
    let tokens = AdminTokens::resolve(&config.admin, &config.state.dir, |name| {
        std::env::var(name).ok()
    })?;
    if let Some(why) = &tokens.unwritten {
        tracing::warn!(error = %why,
            "admin API: the generated token is kept in memory only, so every admin call is refused until the host restarts with room in state.dir; or set STAGEHOST_ADMIN_TOKEN");
    }
    match &tokens.generated {
        Some(file) => tracing::info!(file = %file.display(),
            "admin API: no token configured, generated one (readable by this user only); the CLI reads it there, `stagehost console` prints the console's address with it"),
        None => tracing::info!(
            read_only_token = tokens.read.is_some(),
            "admin API: every call needs its token"
        ),
    }
    Ok(Some(tokens))
}

/// Starts the admin API, `/metrics` and the console on their own listener, guarded by
/// `tokens` (none: the admin API is disabled).
pub(super) async fn start_admin(
    config: &PipelineConfig,
    tokens: Option<AdminTokens>,
    slots: &Slots,
    shared: &Shared,
    exporter: Option<&'static Exporter>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Option<JoinHandle<anyhow::Result<()>>>> {
    let Some(tokens) = tokens else {
        return Ok(None);
    };
    let listener = crate::http::bind(&config.admin.listen).await?;
    tracing::info!(address = %config.admin.listen, metrics = exporter.is_some(), "admin API listening");
    let mut router = crate::admin::router(
        slots.clone(),
        shared.stuck.clone(),
        config.admin.max_plugin_bytes,
    )
    .merge(crate::console::router(Arc::new(config.clone())));
    if let Some(exporter) = exporter {
        let endpoint = MetricsEndpoint::new(exporter, shared.health.clone(), slots.clone());
        router = router.merge(endpoint.router());
    }
    let guard = Arc::new(AdminGuard::new(tokens, &config.admin));
    let router = router.layer(axum::middleware::from_fn_with_state(
        guard,
        crate::admin::guard::guard,
    ));
    let mut stop = stop.clone();
    Ok(Some(tokio::spawn(crate::http::serve(
        listener,
        router,
        async move {
            stop.changed().await.ok();
        },
    ))))
}

/// The running HTTP server, and how to stop it.
pub(super) struct HttpServer {
    /// Stops the server: it takes no new request and finishes those in flight.
    stop: oneshot::Sender<()>,
    /// The server, ending once it stopped.
    task: JoinHandle<anyhow::Result<()>>,
}

impl HttpServer {
    /// Stops the server and waits for the requests in flight.
    pub(super) async fn stop(self) {
        self.stop.send(()).ok();
        tracing::debug!("stopping the HTTP server");
        if let Ok(Err(error)) = self.task.await {
            tracing::warn!(%error, "HTTP server stopped with an error");
        }
    }
}

/// Starts the HTTP server: the ingress endpoints, the read models, `/healthz` and `/readyz`.
pub(super) async fn start_http(
    config: &PipelineConfig,
    ingress: Vec<IngressEndpoint>,
    slots: &Slots,
    health: &Health,
    store: &LocalStore,
) -> anyhow::Result<HttpServer> {
    let listener = crate::http::bind(&config.http.listen).await?;
    let routes: Vec<String> = config.http.routes.iter().map(|r| r.name()).collect();
    tracing::info!(address = %config.http.listen, routes = routes.join(", "), views = config.http.views.len(), "HTTP server listening");
    let router = crate::http::router(
        crate::http::HttpState {
            health: health.clone(),
            max_body_bytes: config.http.max_body_bytes,
        },
        ingress,
        views(config, slots, health, store).await?,
    )?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(crate::http::serve(listener, router, async {
        stopped.await.ok();
    }));
    Ok(HttpServer { stop, task })
}
