//! Wiring: load plugins, open the store, connect to Kafka, start the stages, the HTTP server
//! and the KPI publisher; on shutdown stop them in order and flush.

mod build;
mod declared;
mod plugin_watch;
mod restarts;
mod supervise;

pub use build::load_plugins;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rdkafka::producer::{FutureProducer, Producer};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::admin::Slots;
use crate::config::PipelineConfig;
use crate::event::schema::SchemaRegistry;
use crate::health::Health;
use crate::kafka::{ACCESS_PATIENCE, KafkaClients, RecordLimits, check_access, ensure_topics};
use crate::kpi::{KpiHub, KpiSink, publish_loop};
use crate::plugin::PluginEngine;
use crate::stage::Ingress;
use crate::stage::{CoverageTarget, StuckBook, watch_coverage};
use crate::state::changelog_topic;
use crate::store::{LocalStore, StoreReplaced};
use build::{
    HostParts, context, event_type, fusion_plan, ingress_answers, ingress_endpoints, topic_stage,
    views,
};
use declared::DeclaredTopics;
use supervise::{Restart, supervise};

/// How long an at-least-once stage waits for a failed idempotency store to be reopened before
/// it fails (and is rebuilt). Waiting keeps its open work, whose outputs are out already: a
/// rebuilt stage would read and publish it again. Shorter than [`STAGE_STOP_TIMEOUT`], and a
/// stop ends the wait anyway.
const STORE_PATIENCE: Duration = Duration::from_secs(30);
/// How long a stop waits for the KPI publisher and the admin API.
const HELPER_STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long stages may take to finish their batch and commit once asked to stop (a
/// transactional call may block for 30 s).
const STAGE_STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// How often readiness re-checks that Kafka answers.
const READINESS_EVERY: Duration = Duration::from_secs(2);

/// How to run a pipeline besides its configuration.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Development mode: hot-swap a stage's plugin when its file changes.
    pub watch_plugins: bool,
}

/// The engine for `config`: compiled components cached under the state folder; fuel metering
/// only when some stage sets a fuel limit.
pub fn engine(config: &PipelineConfig) -> anyhow::Result<PluginEngine> {
    let meter_fuel = config.stages.iter().any(|s| s.limits.fuel.is_some());
    PluginEngine::new(Some(&config.state.dir.join("compiled")), meter_fuel)
        .context("cannot start the WebAssembly engine")
}

/// Runs the pipeline until `shutdown` completes or a stage fails.
pub async fn run(
    config: PipelineConfig,
    options: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let engine = engine(&config)?;
    let mut plugins = load_plugins(&engine, &config)?;
    for (stage, (slot, _)) in &plugins {
        let plugin = slot.current();
        tracing::info!(stage, version = %plugin.version, path = %plugin.path.display(), "plugin loaded");
    }
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "plugins loaded"
    );
    let slots: Slots = Arc::new(
        plugins
            .iter()
            .map(|(stage, (slot, _))| (stage.clone(), slot.clone()))
            .collect(),
    );
    let schemas = SchemaRegistry::from_config(&config)?;
    let kafka = KafkaClients::new(&config.kafka);
    // Refused credentials or TLS settings end the start here, with one clear error.
    let checking = kafka.clone();
    let cluster = tokio::task::spawn_blocking(move || {
        check_access(&checking, ACCESS_PATIENCE)?;
        crate::kafka::cluster_id(&checking)
    })
    .await
    .context("the Kafka access check panicked")??;
    // The ingress gets the plain handle (a request gets 503 at once while the store is failed);
    // stages a patient one.
    let store =
        tokio::task::block_in_place(|| LocalStore::open_for_cluster(&config.state.dir, &cluster))?;
    let stage_store = store.patient(STORE_PATIENCE);
    let producer: FutureProducer = kafka
        .producer()
        .create()
        .context("cannot create the Kafka producer")?;
    if config.kafka.create_topics {
        ensure_topics(&kafka, &config).await?;
    }
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
    let limits = Arc::new(RecordLimits::read(&kafka, &limited).await);

    let (stop_tx, stop_rx) = watch::channel(false);
    let kpis = KpiHub::default();
    let health = Health::default();
    store.report_to(health.reporter("store", "opening"));
    let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();
    // Build every stage at once: each waits for Kafka (its transactional producer's
    // `init_transactions`, its consumer, its changelog), and start-up time is their longest
    // wait instead of their sum.
    let mut ingresses = Vec::new();
    let mut building = Vec::new();
    let stuck = StuckBook::new(health.clone());
    let coverage = coverage_targets(&config, &kafka, &plugins);
    let contexts: std::collections::BTreeMap<String, Arc<crate::stage::StageContext>> = config
        .stages
        .iter()
        .map(|stage| {
            (
                stage.name.clone(),
                context(&config, stage, &schemas, &limits),
            )
        })
        .collect();
    let stage_kpis: Arc<std::collections::BTreeMap<String, crate::kpi::StageKpis>> = Arc::new(
        config
            .stages
            .iter()
            .filter(|stage| !stage.is_http())
            .map(|stage| (stage.name.clone(), crate::kpi::StageKpis::new(&stage.name)))
            .collect(),
    );
    let fusion =
        Arc::new(fusion_plan(&config, &plugins, &contexts, &stage_kpis, &stage_store).await);
    let fused = fusion.fused_names(&config.stages);
    tracing::info!(
        fused = fused.join(", "),
        count = fused.len(),
        "stage fusion: these stages also run in process in the workers that write their input"
    );
    for stage in &config.stages {
        let (slot, instance) = plugins
            .remove(&stage.name)
            .with_context(|| format!("plugin of stage {} missing", stage.name))?;
        let context = contexts
            .get(&stage.name)
            .cloned()
            .with_context(|| format!("context of stage {} missing", stage.name))?;
        let (config, stage, producer) = (config.clone(), stage.clone(), producer.clone());
        if stage.is_http() {
            let store = store.clone();
            let kpis = kpis.stage(&stage.name);
            let reporter = health.reporter(&format!("ingress:{}", stage.name), "starting");
            ingresses.push(tokio::spawn(async move {
                let answers = ingress_answers(&config, &stage, &producer, &store, reporter).await?;
                let ingress = Arc::new(
                    Ingress::new(context, instance, producer, answers, kpis)
                        .with_limits(config.http.request_timeout, config.http.max_id_bytes),
                );
                anyhow::Ok(ingress_endpoints(&config, &stage.name, &ingress))
            }));
            continue;
        }
        let reporter = health.reporter(&format!("stage:{}", stage.name), "starting");
        let store = stage_store.clone();
        let stuck = stuck.clone();
        let (fusion, stage_kpis) = (fusion.clone(), stage_kpis.clone());
        let readiness = health.clone();
        building.push(tokio::spawn(async move {
            let runner = topic_stage(
                &config,
                &stage,
                context.clone(),
                instance,
                HostParts {
                    producer: &producer,
                    store: &store,
                    stuck: &stuck,
                    fusion: &fusion,
                    kpis: &stage_kpis,
                },
                &reporter,
            )
            .await?;
            anyhow::Ok((
                runner,
                Restart {
                    config,
                    stage,
                    context,
                    slot,
                    producer,
                    store,
                    health: reporter,
                    stuck,
                    fusion,
                    kpis: stage_kpis,
                    readiness,
                },
            ))
        }));
    }
    // Fail fast on a first start that cannot work (bad topic, no broker); later failures
    // restart the stage instead of the host.
    for built in building {
        let (runner, restart) = built.await.context("building a stage panicked")??;
        tasks.spawn(on_own_thread(
            format!("stage-{}", restart.stage.name),
            supervise(runner, restart, stop_rx.clone()),
        )?);
    }
    let mut ingress = Vec::new();
    for built in ingresses {
        ingress.extend(built.await.context("building an ingress panicked")??);
    }

    let kpi_task = config.kpi.enabled.then(|| {
        tokio::spawn(publish_loop(
            kpis.clone(),
            KpiSink::new(producer.clone()),
            config.kpi.topic.clone(),
            event_type(&config, &config.kpi.topic),
            config.kpi.interval,
            stop_rx.clone(),
        ))
    });
    tokio::spawn(watch_coverage(
        coverage,
        kafka.clone(),
        health.clone(),
        stop_rx.clone(),
    ));
    tokio::spawn(watch_readiness(
        producer.clone(),
        DeclaredTopics::of(&config, &health),
        health.clone(),
        stop_rx.clone(),
        started,
    ));
    tokio::spawn(crate::store::upkeep(
        store.clone(),
        config.state.idempotency_retention,
        stop_rx.clone(),
    ));

    if options.watch_plugins {
        let files = config
            .stages
            .iter()
            .map(|stage| (stage.name.clone(), stage.plugin.clone()))
            .collect();
        tokio::spawn(plugin_watch::watch_plugins(
            slots.clone(),
            files,
            stop_rx.clone(),
        ));
    }
    let admin_task = if config.admin.enabled {
        let listener = crate::http::bind(&config.admin.listen).await?;
        tracing::info!(address = %config.admin.listen, "admin API listening");
        let router =
            crate::admin::router(slots.clone(), stuck.clone(), config.admin.max_plugin_bytes);
        let mut stop = stop_rx.clone();
        Some(tokio::spawn(crate::http::serve(
            listener,
            router,
            async move {
                stop.changed().await.ok();
            },
        )))
    } else {
        None
    };

    let listener = crate::http::bind(&config.http.listen).await?;
    let routes: Vec<String> = config.http.routes.iter().map(|r| r.name()).collect();
    tracing::info!(address = %config.http.listen, routes = routes.join(", "), views = config.http.views.len(), "HTTP server listening");
    let router = crate::http::router(
        crate::http::HttpState {
            health: health.clone(),
            max_body_bytes: config.http.max_body_bytes,
        },
        ingress,
        views(&config, &slots, &health, &store).await?,
    )?;
    let (http_stop_tx, http_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let http_task = tokio::spawn(crate::http::serve(listener, router, async {
        http_stop_rx.await.ok();
    }));

    // Run until asked to stop, or until a stage fails.
    let mut failure = None;
    tokio::pin!(shutdown);
    tokio::select! {
        _ = &mut shutdown => tracing::info!("shutting down"),
        Some(result) = tasks.join_next() => {
            failure = Some(flatten(result).err().unwrap_or_else(|| anyhow::anyhow!("a stage stopped unexpectedly")));
        }
        replaced = store_replaced(&store) => failure = Some(anyhow::Error::new(replaced)),
    }

    // Stop order: no new requests, then stages finish their batch and commit, then flush.
    http_stop_tx.send(()).ok();
    tracing::debug!("stopping the HTTP server");
    if let Ok(Err(error)) = http_task.await {
        tracing::warn!(%error, "HTTP server stopped with an error");
    }
    stop_tx.send(true).ok();
    let stages_stopped = async {
        while let Some(result) = tasks.join_next().await {
            if let Err(error) = flatten(result) {
                tracing::error!(error = format!("{error:#}"), "stage failed while stopping");
                failure.get_or_insert(error);
            }
        }
    };
    if tokio::time::timeout(STAGE_STOP_TIMEOUT, stages_stopped)
        .await
        .is_err()
    {
        tracing::error!(stages = tasks.len(), timeout = ?STAGE_STOP_TIMEOUT,
            "stages did not stop in time; stopping without them (their open work is read again at the next start)");
        failure.get_or_insert_with(|| {
            anyhow::anyhow!(
                "{} stage(s) did not stop within {STAGE_STOP_TIMEOUT:?}",
                tasks.len()
            )
        });
    }
    tracing::debug!("stages stopped");
    if let Some(task) = kpi_task {
        finish("KPI publisher", task).await;
    }
    if let Some(task) = admin_task {
        finish("admin API", task).await;
    }
    let flush = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10)));
    if let Ok(Err(error)) = flush.await {
        tracing::warn!(%error, "producer flush failed");
    }
    tracing::info!("stopped");
    match failure {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Runs a stage's loop on a thread of its own, inside the runtime's context (timers, I/O) but
/// not on one of its workers. A stage blocks in every plugin call; on a worker that took a
/// `block_in_place` per batch, which hands the worker's other tasks to another thread (two
/// thread switches per batch, most of the host's context switches under light load). On its
/// own thread the plugin (and the WASI calls that block) just runs. Returns a future that
/// resolves with the stage's result.
fn on_own_thread(
    name: String,
    stage: impl Future<Output = anyhow::Result<()>> + Send + 'static,
) -> anyhow::Result<impl Future<Output = anyhow::Result<()>> + Send + 'static> {
    let runtime = tokio::runtime::Handle::current();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let _context = runtime.enter();
            done_tx.send(futures::executor::block_on(stage)).ok();
        })
        .with_context(|| format!("cannot start the thread of {name}"))?;
    Ok(async move {
        done_rx
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("{name} panicked")))
    })
}

/// Waits for a helper task to finish, but not forever: a clean stop must not hang on it.
async fn finish<T>(name: &str, mut task: tokio::task::JoinHandle<T>) {
    if tokio::time::timeout(HELPER_STOP_TIMEOUT, &mut task)
        .await
        .is_err()
    {
        tracing::warn!(task = name, "did not stop in time; abandoning it");
        task.abort();
    } else {
        tracing::debug!(task = name, "stopped");
    }
}

fn flatten(result: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    match result {
        Ok(result) => result,
        Err(error) => Err(anyhow::anyhow!("stage task panicked: {error}")),
    }
}

/// Completes when the store came back as another database (see [`StoreReplaced`]).
async fn store_replaced(store: &LocalStore) -> StoreReplaced {
    while !store.was_replaced() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    StoreReplaced {
        path: store.path().to_path_buf(),
    }
}

/// What the coverage watch looks at: every topic-fed stage's group and inputs.
fn coverage_targets(
    config: &PipelineConfig,
    kafka: &KafkaClients,
    plugins: &std::collections::BTreeMap<
        String,
        (
            Arc<crate::plugin::PluginSlot>,
            crate::plugin::PluggedInstance,
        ),
    >,
) -> Vec<CoverageTarget> {
    config
        .stages
        .iter()
        .filter(|stage| !stage.is_http())
        .map(|stage| {
            let group = stage.group_id();
            let exactly_once = stage.mode == crate::config::ProcessingMode::ExactlyOnce;
            let consumer = kafka.consumer(&group, &config.state.instance_id, exactly_once);
            let processed = exactly_once.then(|| crate::stage::processed_topic(&group));
            let session_timeout = consumer
                .get("session.timeout.ms")
                .and_then(|ms| ms.parse().ok())
                .map_or(Duration::from_secs(10), Duration::from_millis);
            CoverageTarget {
                stage: stage.name.clone(),
                group,
                inputs: stage.inputs().iter().map(|s| s.to_string()).collect(),
                stateful: plugins
                    .get(&stage.name)
                    .is_some_and(|(_, instance)| instance.uses_state()),
                consumer,
                // Two looks in a row, well within the session timeout.
                grace: session_timeout.min(Duration::from_secs(2)),
                processed,
            }
        })
        .collect()
}

/// Reports whether Kafka answers (part `kafka`) and whether every declared topic exists
/// (see [`DeclaredTopics`]), every [`READINESS_EVERY`]; logs once when the whole host is first
/// ready, with its start-up time.
async fn watch_readiness(
    producer: FutureProducer,
    mut topics: DeclaredTopics,
    health: Health,
    mut stop: watch::Receiver<bool>,
    started: std::time::Instant,
) {
    let kafka = health.reporter("kafka", "not connected yet");
    let mut first = true;
    let mut last_check: Option<std::time::Instant> = None;
    loop {
        if last_check.is_none_or(|at| at.elapsed() >= READINESS_EVERY) {
            last_check = Some(std::time::Instant::now());
            let client = producer.clone();
            let existing = tokio::task::spawn_blocking(move || {
                client
                    .client()
                    .fetch_metadata(None, Duration::from_secs(2))
                    .ok()
                    .map(|metadata| {
                        metadata
                            .topics()
                            .iter()
                            .filter(|topic| topic.error().is_none())
                            .map(|topic| topic.name().to_string())
                            .collect::<std::collections::BTreeSet<String>>()
                    })
            })
            .await
            .unwrap_or(None);
            match existing {
                Some(existing) => {
                    kafka.ok();
                    topics.check(&existing).await;
                }
                None => kafka.unready("the brokers do not answer a metadata request"),
            }
        }
        if first && health.ready() {
            first = false;
            tracing::info!(startup_ms = started.elapsed().as_millis() as u64, "ready");
        }
        let pause = if first {
            Duration::from_millis(50)
        } else {
            READINESS_EVERY
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => break,
        }
    }
    kafka.unready("stopping");
}
