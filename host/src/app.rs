//! Wiring: load plugins, open the store, connect to Kafka, start the stages, the HTTP server
//! and the KPI publisher; on shutdown stop them in order and flush.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::Consumer;
use rdkafka::producer::{FutureProducer, Producer};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::{PipelineConfig, ProcessingMode, StageConfig};
use crate::event::schema::SchemaRegistry;
use crate::http::TopicView;
use crate::kafka::{
    consumer_config, ensure_changelog, ensure_topics, producer_config,
    transactional_producer_config,
};
use crate::kpi::{KpiHub, StageKpis, publish_loop};
use crate::plugin::{InstanceSettings, LoadedPlugin, PluginEngine, StageInstance};
use crate::stage::{
    Answers, Ingress, KpiTarget, RebalanceTracker, Route, StageConsumer, StageContext, StageRunner,
    StageStateParts, TransactionalAnswers,
};
use crate::state::{KeyedState, changelog_topic};
use crate::store::StateStore;

/// How often the idempotency store forgets records older than the retention.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// How often readiness re-checks that Kafka answers.
const READINESS_EVERY: Duration = Duration::from_secs(2);

/// Loads every stage's plugin; reports every plugin that fails, not just the first.
pub fn load_plugins(
    engine: &PluginEngine,
    config: &PipelineConfig,
) -> anyhow::Result<BTreeMap<String, (Arc<LoadedPlugin>, StageInstance)>> {
    let mut loaded = BTreeMap::new();
    let mut failures = Vec::new();
    for stage in &config.stages {
        let result = engine.load(&stage.plugin).and_then(|plugin| {
            StageInstance::new(engine, plugin.clone(), settings(stage)).map(|i| (plugin, i))
        });
        match result {
            Ok(pair) => {
                loaded.insert(stage.name.clone(), pair);
            }
            Err(error) => failures.push(format!("  - stages[{}].plugin: {error}", stage.name)),
        }
    }
    if failures.is_empty() {
        Ok(loaded)
    } else {
        anyhow::bail!(
            "{} plugin(s) failed to load:\n{}",
            failures.len(),
            failures.join("\n")
        )
    }
}

fn settings(stage: &StageConfig) -> InstanceSettings {
    let config = serde_json::to_value(&stage.config)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    InstanceSettings {
        stage: Arc::from(stage.name.as_str()),
        config: Arc::new(config),
        limits: stage.limits.clone(),
    }
}

fn event_type(config: &PipelineConfig, topic: &str) -> String {
    config
        .topics
        .get(topic)
        .and_then(|t| t.event_type.clone())
        .unwrap_or_else(|| topic.to_string())
}

fn context(
    config: &PipelineConfig,
    stage: &StageConfig,
    schemas: &SchemaRegistry,
) -> Arc<StageContext> {
    let route = |topic: &str| Route {
        topic: topic.to_string(),
        event_type: event_type(config, topic),
    };
    Arc::new(StageContext {
        name: Arc::from(stage.name.as_str()),
        routes: stage
            .outputs
            .iter()
            .map(|(name, topic)| (name.clone(), route(topic)))
            .collect(),
        dead_letter: route(&config.dead_letter.topic),
        schemas: schemas.clone(),
    })
}

/// What it takes to build a stage again after it failed.
struct Restart {
    config: PipelineConfig,
    stage: StageConfig,
    context: Arc<StageContext>,
    plugin: Arc<LoadedPlugin>,
    engine: PluginEngine,
    producer: FutureProducer,
    store: StateStore,
}

/// Longest pause between restarts of a failing stage.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);

/// Runs a stage; when it fails (the broker went away, its transaction was fenced) it is
/// rebuilt from scratch — new consumer, new producer, state restored — after a pause that
/// doubles with each consecutive failure. Exactly-once makes the restart safe.
async fn supervise(
    first: StageRunner,
    restart: Restart,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let name = restart.stage.name.clone();
    let mut runner = first;
    let mut delay = Duration::from_millis(500);
    loop {
        let started = std::time::Instant::now();
        match runner.run(stop.clone()).await {
            Ok(()) => return Ok(()),
            Err(error) if *stop.borrow() => return Err(error),
            Err(error) => {
                tracing::error!(stage = %name, error = format!("{error:#}"), ?delay, "stage failed; restarting it");
            }
        }
        if started.elapsed() > MAX_RESTART_DELAY {
            delay = Duration::from_millis(500);
        }
        loop {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_RESTART_DELAY);
            if *stop.borrow() {
                return Ok(());
            }
            let rebuilt = match StageInstance::new(
                &restart.engine,
                restart.plugin.clone(),
                settings(&restart.stage),
            ) {
                Ok(instance) => {
                    topic_stage(
                        &restart.config,
                        &restart.stage,
                        restart.context.clone(),
                        instance,
                        &restart.producer,
                        &restart.store,
                    )
                    .await
                }
                Err(error) => Err(error.into()),
            };
            match rebuilt {
                Ok(next) => {
                    runner = next;
                    break;
                }
                Err(error) => {
                    tracing::warn!(stage = %name, error = format!("{error:#}"), "stage cannot restart yet")
                }
            }
        }
    }
}

/// How the ingress stage remembers answers: in a compacted topic committed with its events
/// (exactly-once), or in the local store (at-least-once).
async fn ingress_answers(
    config: &PipelineConfig,
    stage: &StageConfig,
    shared_producer: &FutureProducer,
    store: &StateStore,
) -> anyhow::Result<Answers> {
    if stage.mode == ProcessingMode::AtLeastOnce {
        return Ok(Answers::Local {
            store: store.clone(),
            producer: shared_producer.clone(),
        });
    }
    let group = stage.group_id();
    let topic = format!("{group}-answers");
    let partitions = stage
        .outputs
        .values()
        .filter_map(|t| config.topics.get(t).map(|t| t.partitions))
        .max()
        .unwrap_or(1);
    if config.kafka.create_topics {
        ensure_changelog(&config.kafka.brokers, &topic, partitions, 1).await?;
    }
    let producer = transactional_producer(
        config,
        &stage.name,
        &format!("{group}.{}", config.state.instance_id),
    )?;
    let answers =
        TransactionalAnswers::start(&config.kafka.brokers, &topic, partitions, producer).await?;
    Ok(Answers::Transactional(answers))
}

fn transactional_producer(
    config: &PipelineConfig,
    stage: &str,
    transactional_id: &str,
) -> anyhow::Result<FutureProducer> {
    let producer: FutureProducer = transactional_producer_config(&config.kafka, transactional_id)
        .create()
        .with_context(|| format!("cannot create the transactional producer of stage {stage}"))?;
    tokio::task::block_in_place(|| producer.init_transactions(Duration::from_secs(60)))
        .with_context(|| {
            format!(
                "stage {stage} cannot initialise transactions (transactional.id {transactional_id})"
            )
        })?;
    Ok(producer)
}

/// Builds the runner of a topic-fed stage: its consumer, its producer (its own transactional
/// one in exactly-once mode), its changelog when the plugin keeps state.
async fn topic_stage(
    config: &PipelineConfig,
    stage: &StageConfig,
    context: Arc<StageContext>,
    instance: StageInstance,
    shared_producer: &FutureProducer,
    store: &StateStore,
) -> anyhow::Result<StageRunner> {
    let group = stage.group_id();
    let exactly_once = stage.mode == ProcessingMode::ExactlyOnce;
    let inputs = stage.inputs();
    let state = if instance.uses_state() {
        let partitions: Vec<i32> = inputs
            .iter()
            .filter_map(|topic| config.topics.get(*topic).map(|t| t.partitions))
            .collect();
        let first = partitions.first().copied().unwrap_or(1);
        anyhow::ensure!(
            partitions.iter().all(|&p| p == first),
            "stage {} keeps state, so its input topics must have the same number of partitions ({})",
            stage.name,
            inputs.join(", ")
        );
        let replication = inputs
            .iter()
            .filter_map(|topic| config.topics.get(*topic).map(|t| t.replication))
            .max()
            .unwrap_or(1);
        let changelog = changelog_topic(&group);
        if config.kafka.create_topics {
            ensure_changelog(&config.kafka.brokers, &changelog, first, replication).await?;
        }
        Some(StageStateParts {
            keyed: Arc::new(std::sync::Mutex::new(KeyedState::default())),
            changelog,
            brokers: config.kafka.brokers.clone(),
        })
    } else {
        None
    };
    let producer = if exactly_once {
        transactional_producer(
            config,
            &stage.name,
            &format!("{group}.{}", config.state.instance_id),
        )?
    } else {
        shared_producer.clone()
    };
    let mut consumer_settings = consumer_config(
        &config.kafka,
        &group,
        &config.state.instance_id,
        exactly_once,
    );
    if state.is_some() && inputs.len() > 1 {
        // State is scoped by partition number across the inputs: partition i of every input
        // must go to the same instance, which the range assignor guarantees.
        consumer_settings.set("partition.assignment.strategy", "range");
    }
    let consumer: StageConsumer = consumer_settings
        .create_with_context(RebalanceTracker::default())
        .with_context(|| format!("cannot create the consumer of stage {}", stage.name))?;
    consumer.subscribe(&inputs).with_context(|| {
        format!(
            "stage {} cannot subscribe to {}",
            stage.name,
            inputs.join(", ")
        )
    })?;
    let kpi = config.kpi.enabled.then(|| KpiTarget {
        route: Route {
            topic: config.kpi.topic.clone(),
            event_type: event_type(config, &config.kpi.topic),
        },
        interval: config.kpi.interval,
        instance: config.state.instance_id.clone(),
    });
    Ok(StageRunner {
        context,
        instance,
        consumer,
        producer,
        mode: stage.mode,
        store: store.clone(),
        kpis: StageKpis::new(&stage.name),
        kpi,
        input_event_types: inputs
            .iter()
            .map(|topic| (topic.to_string(), event_type(config, topic)))
            .collect(),
        max_batch: stage.max_batch,
        commit_interval: stage.commit_interval,
        state,
    })
}

/// Runs the pipeline until `shutdown` completes or a stage fails.
pub async fn run(config: PipelineConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let engine = PluginEngine::new(Some(&config.state.dir.join("compiled")))
        .context("cannot start the WebAssembly engine")?;
    let mut plugins = load_plugins(&engine, &config)?;
    for (stage, (plugin, _)) in &plugins {
        tracing::info!(stage, version = %plugin.version, path = %plugin.path.display(), "plugin loaded");
    }
    let store = StateStore::open(&config.state.dir)?;
    let schemas = SchemaRegistry::from_config(&config)?;
    let producer: FutureProducer = producer_config(&config.kafka)
        .create()
        .context("cannot create the Kafka producer")?;
    if config.kafka.create_topics {
        ensure_topics(&config).await?;
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let kpis = KpiHub::default();
    let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();
    let mut ingress = None;
    for stage in &config.stages {
        let (plugin, instance) = plugins
            .remove(&stage.name)
            .with_context(|| format!("plugin of stage {} missing", stage.name))?;
        let context = context(&config, stage, &schemas);
        if stage.is_http() {
            let answers = ingress_answers(&config, stage, &producer, &store).await?;
            ingress = Some(Arc::new(Ingress::new(
                context,
                instance,
                producer.clone(),
                answers,
                kpis.stage(&stage.name),
                config.http.ingress_id_field.clone(),
                "Order".into(),
            )));
            continue;
        }
        // Fail fast on a first start that cannot work (bad topic, no broker); later failures
        // restart the stage instead of the host.
        let runner =
            topic_stage(&config, stage, context.clone(), instance, &producer, &store).await?;
        tasks.spawn(supervise(
            runner,
            Restart {
                config: config.clone(),
                stage: stage.clone(),
                context,
                plugin,
                engine: engine.clone(),
                producer: producer.clone(),
                store: store.clone(),
            },
            stop_rx.clone(),
        ));
    }

    let kpi_task = config.kpi.enabled.then(|| {
        tokio::spawn(publish_loop(
            kpis.clone(),
            producer.clone(),
            config.kpi.topic.clone(),
            event_type(&config, &config.kpi.topic),
            config.kpi.interval,
            stop_rx.clone(),
        ))
    });
    let ready = Arc::new(AtomicBool::new(false));
    tokio::spawn(watch_readiness(
        producer.clone(),
        ready.clone(),
        stop_rx.clone(),
    ));
    tokio::spawn(prune_loop(
        store.clone(),
        config.state.idempotency_retention,
        stop_rx.clone(),
    ));

    let listener = crate::http::bind(&config.http.listen).await?;
    tracing::info!(address = %config.http.listen, ingress = %config.http.ingress_path, "HTTP server listening");
    let view = |topic: &Option<String>| {
        let topic = topic.clone();
        let brokers = config.kafka.brokers.clone();
        async move {
            match topic {
                Some(topic) => TopicView::start(&brokers, &topic).await.map(Some),
                None => Ok(None),
            }
        }
    };
    let router = crate::http::router(
        crate::http::HttpState {
            ingress,
            ready,
            max_body_bytes: config.http.max_body_bytes,
            order_status: view(&config.http.order_status_topic).await?,
            stock: view(&config.http.stock_topic).await?,
            catalog: Arc::new(catalog(&config)),
            restock: config
                .http
                .inventory_commands_topic
                .as_ref()
                .map(|topic| (topic.clone(), event_type(&config, topic))),
        },
        &config.http.ingress_path,
    );
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
    }

    // Stop order: no new requests, then stages finish their batch and commit, then flush.
    http_stop_tx.send(()).ok();
    if let Ok(Err(error)) = http_task.await {
        tracing::warn!(%error, "HTTP server stopped with an error");
    }
    stop_tx.send(true).ok();
    while let Some(result) = tasks.join_next().await {
        if let Err(error) = flatten(result) {
            tracing::error!(error = format!("{error:#}"), "stage failed while stopping");
            failure.get_or_insert(error);
        }
    }
    if let Some(task) = kpi_task {
        task.await.ok();
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

/// The `config.catalog` table of `http.catalog_stage` (product → starting stock).
fn catalog(config: &PipelineConfig) -> std::collections::HashMap<String, i64> {
    let Some(stage) = &config.http.catalog_stage else {
        return Default::default();
    };
    config
        .stages
        .iter()
        .find(|s| &s.name == stage)
        .and_then(|s| s.config.get("catalog"))
        .and_then(|c| c.as_table())
        .map(|table| {
            table
                .iter()
                .filter_map(|(product, stock)| stock.as_integer().map(|s| (product.clone(), s)))
                .collect()
        })
        .unwrap_or_default()
}

fn flatten(result: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    match result {
        Ok(result) => result,
        Err(error) => Err(anyhow::anyhow!("stage task panicked: {error}")),
    }
}

async fn watch_readiness(
    producer: FutureProducer,
    ready: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let client = producer.clone();
        let reachable = tokio::task::spawn_blocking(move || {
            client
                .client()
                .fetch_metadata(None, Duration::from_secs(2))
                .is_ok()
        })
        .await
        .unwrap_or(false);
        if reachable != ready.swap(reachable, Ordering::Relaxed) {
            tracing::info!(ready = reachable, "readiness changed");
        }
        tokio::select! {
            _ = tokio::time::sleep(READINESS_EVERY) => {}
            _ = stop.changed() => break,
        }
    }
    ready.store(false, Ordering::Relaxed);
}

async fn prune_loop(store: StateStore, retention: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        let pruning = store.clone();
        match tokio::task::spawn_blocking(move || pruning.prune(retention)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(removed)) => tracing::info!(removed, "pruned expired idempotency records"),
            Ok(Err(error)) => tracing::warn!(%error, "pruning the idempotency store failed"),
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
            _ = stop.changed() => break,
        }
    }
}
