//! [`Host`]: a pipeline started from its configuration, run until a shutdown signal (or a
//! failure), then stopped in order: no new requests, stages finish their batch and commit,
//! helpers stop, the producer is flushed. [`run`] does all three.

use std::future::Future;
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, Producer};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::stages::{Shared, Stages, coverage_targets, start_stages};
use super::start::{
    HttpServer, STORE_PATIENCE, Watched, admin_tokens, check_kafka_access, engine, load_logged,
    open_store, producer_and_topics, record_limits, slots_of, start_admin, start_http, start_kpis,
    start_watches,
};
use crate::config::PipelineConfig;
use crate::event::schema::SchemaRegistry;
use crate::health::Health;
use crate::kafka::KafkaClients;
use crate::kpi::KpiHub;
use crate::observe::Exporter;
use crate::plugin::PluginEngine;
use crate::stage::StuckBook;
use crate::store::{LocalStore, StoreReplaced};

/// How long a stop waits for the KPI publisher and the admin API.
const HELPER_STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long stages may take to finish their batch and commit once asked to stop (a
/// transactional call may block for 30 s).
const STAGE_STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// How to run a pipeline besides its configuration.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Development mode: hot-swap a stage's plugin when its file changes.
    pub watch_plugins: bool,
}

/// Runs the pipeline until `shutdown` completes or a stage fails.
pub async fn run(
    config: PipelineConfig,
    options: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    Host::start(config, options)
        .await?
        .run_until(shutdown)
        .await
}

/// A started pipeline: its stages, helper tasks and servers, and what stopping them takes.
pub struct Host {
    /// Compiles and runs the plugins; its last clone stops the epoch ticker, so it lives as
    /// long as the host.
    _engine: PluginEngine,
    /// The shared producer, flushed last, once nothing writes to it any more.
    producer: FutureProducer,
    /// Watched while running: a store that came back as another database stops the host.
    store: LocalStore,
    /// Tells the stages and the helper tasks to stop.
    stop: watch::Sender<bool>,
    /// The topic-fed stages, each supervised on a thread of its own.
    stages: JoinSet<anyhow::Result<()>>,
    /// The KPI publisher, when KPIs are enabled; it publishes a last window when stopped.
    kpi_task: Option<JoinHandle<()>>,
    /// The admin API, when it is enabled.
    admin_task: Option<JoinHandle<anyhow::Result<()>>>,
    /// The HTTP server, stopped first so that no new request arrives.
    http: HttpServer,
}

impl Host {
    /// Starts the pipeline of `config`: loads the plugins, checks that Kafka accepts the host,
    /// opens the store, creates the topics, builds and starts every stage, the helper tasks,
    /// the admin API and the HTTP server. Fails on a first start that cannot work.
    pub async fn start(config: PipelineConfig, options: RunOptions) -> anyhow::Result<Host> {
        let started = Instant::now();
        // First: an admin API that cannot be secured stops the start before anything else.
        let admin_tokens = admin_tokens(&config)?;
        // Before anything makes a metric handle: one made earlier would count nowhere.
        let exporter = if config.telemetry.metrics {
            Some(Exporter::install()?)
        } else {
            None
        };
        crate::observe::trace::install(&config.telemetry)?;
        let engine = engine(&config)?;
        let plugins = load_logged(&engine, &config, started)?;
        let slots = slots_of(&plugins);
        let schemas = SchemaRegistry::from_config(&config)?;
        let kafka = KafkaClients::new(&config.kafka);
        let cluster = check_kafka_access(&kafka).await?;
        // The ingress gets the plain handle (a request gets 503 at once while the store is
        // failed); stages a patient one.
        let store = open_store(&config, &cluster)?;
        let stage_store = store.patient(STORE_PATIENCE);
        let producer = producer_and_topics(&config, &kafka).await?;
        let limits = record_limits(&config, &kafka).await;

        let (stop, stop_rx) = watch::channel(false);
        let health = Health::default();
        store.report_to(health.reporter("store", "opening"));
        let shared = Shared {
            producer,
            store,
            stage_store,
            stuck: StuckBook::new(health.clone()),
            health,
            kpis: KpiHub::default(),
        };
        let coverage = coverage_targets(&config, &plugins);
        let Stages { tasks, ingress } =
            start_stages(&config, plugins, &schemas, &limits, &shared, &stop_rx).await?;

        let kpi_task = start_kpis(&config, &shared, &stop_rx);
        let watched = Watched {
            coverage,
            kafka,
            slots: slots.clone(),
            watch_plugins: options.watch_plugins,
            started,
        };
        start_watches(&config, watched, &shared, &stop_rx);
        let admin_task =
            start_admin(&config, admin_tokens, &slots, &shared, exporter, &stop_rx).await?;
        let http = start_http(&config, ingress, &slots, &shared.health, &shared.store).await?;
        Ok(Host {
            _engine: engine,
            producer: shared.producer,
            store: shared.store,
            stop,
            stages: tasks,
            kpi_task,
            admin_task,
            http,
        })
    }

    /// Runs until `shutdown` completes, a stage fails or the store is replaced, then stops in
    /// order (see [`Host::shutdown`]). A failure is the result, once the host has stopped.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let failure = self.wait(shutdown).await;
        self.stop(failure).await
    }

    /// Stops in order: no new requests, then the stages finish their batch and commit, then
    /// the helper tasks stop and the producer is flushed.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        tracing::info!("shutting down");
        self.stop(None).await
    }

    /// Waits for `shutdown`, a stage's failure or the store's replacement; returns the failure.
    async fn wait(&mut self, shutdown: impl Future<Output = ()>) -> Option<anyhow::Error> {
        tokio::pin!(shutdown);
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("shutting down");
                None
            }
            Some(result) = self.stages.join_next() => {
                Some(flatten(result).err().unwrap_or_else(|| anyhow::anyhow!("a stage stopped unexpectedly")))
            }
            replaced = store_replaced(&self.store) => Some(anyhow::Error::new(replaced)),
        }
    }

    /// The stop, after `failure` (if any) ended the run; a failure while stopping is kept too.
    async fn stop(self, mut failure: Option<anyhow::Error>) -> anyhow::Result<()> {
        let Host {
            producer,
            stop,
            mut stages,
            kpi_task,
            admin_task,
            http,
            ..
        } = self;
        // Stop order: no new requests, then stages finish their batch and commit, then flush.
        http.stop().await;
        stop.send(true).ok();
        stop_stages(&mut stages, &mut failure).await;
        tracing::debug!("stages stopped");
        if let Some(task) = kpi_task {
            finish("KPI publisher", task).await;
        }
        if let Some(task) = admin_task {
            finish("admin API", task).await;
        }
        let flush = tokio::task::spawn_blocking(move || {
            crate::observe::trace::flush();
            producer.flush(Duration::from_secs(10))
        });
        if let Ok(Err(error)) = flush.await {
            tracing::warn!(%error, "producer flush failed");
        }
        tracing::info!("stopped");
        match failure {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// Waits up to [`STAGE_STOP_TIMEOUT`] for every stage to finish its batch and commit; the
/// first failure (or the timeout) goes into `failure` unless one is there already.
async fn stop_stages(
    stages: &mut JoinSet<anyhow::Result<()>>,
    failure: &mut Option<anyhow::Error>,
) {
    let stages_stopped = async {
        while let Some(result) = stages.join_next().await {
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
        tracing::error!(stages = stages.len(), timeout = ?STAGE_STOP_TIMEOUT,
            "stages did not stop in time; stopping without them (their open work is read again at the next start)");
        failure.get_or_insert_with(|| {
            anyhow::anyhow!(
                "{} stage(s) did not stop within {STAGE_STOP_TIMEOUT:?}",
                stages.len()
            )
        });
    }
}

/// Waits for a helper task to finish, but not forever: a clean stop must not hang on it.
async fn finish<T>(name: &str, mut task: JoinHandle<T>) {
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

/// Completes when the store came back as another database (see [`StoreReplaced`]): woken by
/// the store when that happens, not by a timer (an idle host looked every 200 ms).
async fn store_replaced(store: &LocalStore) -> StoreReplaced {
    store.replacement().await;
    StoreReplaced {
        path: store.path().to_path_buf(),
    }
}
