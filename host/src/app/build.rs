//! Building the parts of a pipeline from its configuration: plugin instances, stage contexts,
//! topic-fed stage runners (consumer, producer, changelog) and the ingress's answer store.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureProducer;

use crate::admin::Slots;
use crate::config::{PipelineConfig, StageConfig, path_params};
use crate::event::schema::SchemaRegistry;
use crate::health::{Health, Reporter};
use crate::http::{IngressEndpoint, TopicView, ViewEndpoint, ViewShaper};
use crate::ingress::{Ingress, IngressRoute, RouteIngress};
use crate::kafka::{
    KafkaClients, Partitioner, RecordLimits, ensure_changelog, partition_count, refuse_lost_topic,
};
use crate::kpi::{KpiSink, StageKpis};
use crate::plugin::{InstanceSettings, OutputContract, PluggedInstance, PluginEngine, PluginSlot};
/// How the ingress remembers answers: chosen with the stages' guarantees.
pub(super) use crate::stage::ingress_answers;
use crate::stage::{
    Committer, Counting, Deferred, FusableStage, FusionPlan, KpiTarget, LatestOutputs, LivePlugin,
    Pacing, RebalanceTracker, Route, Settling, SilentPause, StageConsumer, StageContext,
    StageGuarantee, StageRunner, StageStateParts, StageTask, StuckBook, Watchdog, Worker,
    fused_ids, not_fusable, rejoin_if_inputs_changed, stage_guarantee,
};
use crate::state::{KeyedState, changelog_topic, check_layout};
use crate::store::{LocalStore, Scope, Table};

pub(super) fn settings(stage: &StageConfig) -> InstanceSettings {
    let config = serde_json::to_value(&stage.config)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    InstanceSettings {
        stage: Arc::from(stage.name.as_str()),
        config: Arc::new(config),
        limits: stage.limits.clone(),
        capabilities: stage.capabilities.clone(),
    }
}

pub(super) fn event_type(config: &PipelineConfig, topic: &str) -> String {
    config
        .topics
        .get(topic)
        .and_then(|t| t.event_type.clone())
        .unwrap_or_else(|| topic.to_string())
}

pub(super) fn context(
    config: &PipelineConfig,
    stage: &StageConfig,
    schemas: &SchemaRegistry,
    limits: &Arc<RecordLimits>,
) -> Arc<StageContext> {
    let route = |topic: &str| Route {
        topic: topic.to_string(),
        event_type: event_type(config, topic),
        latest_per_key: config.topics.get(topic).is_some_and(|t| t.latest_per_key),
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
        limits: limits.clone(),
    })
}

/// What the stages of a host share.
#[derive(Clone, Copy)]
pub(super) struct HostParts<'a> {
    /// The shared idempotent producer.
    pub(super) producer: &'a FutureProducer,
    /// The local store (a patient handle).
    pub(super) store: &'a LocalStore,
    /// Records held because they cannot be dead-lettered.
    pub(super) stuck: &'a StuckBook,
    /// Which stages run fused into which workers.
    pub(super) fusion: &'a FusionPlan,
    /// Every topic-fed stage's KPI recorder, shared by its worker and the workers it is
    /// fused into.
    pub(super) kpis: &'a BTreeMap<String, StageKpis>,
}

/// Builds the runner of a topic-fed stage: its consumer, its guarantee (its own
/// transactional producer in exactly-once mode), its changelog when the plugin keeps state.
pub(super) async fn topic_stage(
    config: &PipelineConfig,
    stage: &StageConfig,
    context: Arc<StageContext>,
    instance: PluggedInstance,
    host: HostParts<'_>,
    health: &Reporter,
) -> anyhow::Result<StageRunner> {
    let fusion = host
        .fusion
        .for_writer(stage, host.stuck)
        .with_context(|| format!("cannot instantiate the stages fused into {}", stage.name))?;
    let state = if stage.keeps_state(instance.uses_state()) {
        Some(stage_state(config, stage, host.store).await?)
    } else {
        None
    };
    let StageGuarantee {
        way,
        dedup,
        consumer: settings,
    } = stage_guarantee(config, stage, host.producer, host.store).await?;
    let committer = Committer::new(
        way,
        stage.commit_interval,
        &stage.name,
        &context.dead_letter.topic,
        host.stuck.clone(),
    );
    let consumer = stage_consumer(config, stage, settings, state.is_some(), health)?;
    let inputs = stage.inputs();
    let kpis = host
        .kpis
        .get(&stage.name)
        .cloned()
        .unwrap_or_else(|| StageKpis::new(&stage.name));
    Ok(StageRunner {
        consumer,
        worker: Worker {
            task: StageTask {
                context,
                plugin: LivePlugin::new(instance),
                dedup,
                state,
                fusion: Box::new(fusion),
                pacing: Pacing::new(stage.retry.clone()),
                stuck: host.stuck.clone(),
                settling: Settling::new(host.fusion.deferred(&stage.name)),
                counting: Counting::new(kpis),
                latest: LatestOutputs::default(),
            },
            committer,
            kpi: kpi_target(config, host.producer),
            input_event_types: inputs
                .iter()
                .map(|topic| (topic.to_string(), event_type(config, topic)))
                .collect(),
            max_batch: stage.max_batch,
            health: health.clone(),
            watchdog: Watchdog::new(stage.stall_timeout),
            fault: SilentPause::from_env(&stage.name),
        },
    })
}

/// The keyed state of the stateful `stage`: its changelog (made when missing, refused when
/// lost or laid out unlike the inputs) and its local copy.
async fn stage_state(
    config: &PipelineConfig,
    stage: &StageConfig,
    store: &LocalStore,
) -> anyhow::Result<StageStateParts> {
    let group = stage.group_id();
    let inputs = stage.inputs();
    let kafka = KafkaClients::new(&config.kafka);
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
    let replication = config.replication_after(&inputs);
    let changelog = changelog_topic(&group);
    if config.kafka.create_topics {
        tokio::task::block_in_place(|| refuse_lost_topic(&kafka, &changelog, &group, &inputs))?;
        ensure_changelog(&kafka, &changelog, first, replication).await?;
    }
    tokio::task::block_in_place(|| check_layout(&kafka, &stage.name, &changelog, &inputs))?;
    Ok(StageStateParts {
        keyed: Arc::new(std::sync::Mutex::new(KeyedState::new(Table::new(
            store,
            &format!("state:{group}"),
            Scope::Partition,
        )))),
        changelog,
        kafka,
        max_keys: stage.state_max_keys,
    })
}

/// The consumer of `stage` with `settings` (from its guarantee), subscribed to its inputs.
fn stage_consumer(
    config: &PipelineConfig,
    stage: &StageConfig,
    mut settings: ClientConfig,
    stateful: bool,
    health: &Reporter,
) -> anyhow::Result<StageConsumer> {
    let inputs = stage.inputs();
    if stateful && inputs.len() > 1 {
        // State is scoped by partition number across the inputs: partition i of every input
        // must go to the same instance, which the range assignor guarantees.
        settings.set("partition.assignment.strategy", "range");
    }
    // A static member rejoining with other inputs than last time would keep its old
    // assignment (KAFKA-12759): make its group rebalance first.
    tokio::task::block_in_place(|| {
        rejoin_if_inputs_changed(&settings, &config.state.dir, &inputs, &stage.name)
    });
    let strategy = settings
        .get("partition.assignment.strategy")
        .unwrap_or_default()
        .to_string();
    let consumer: StageConsumer = settings
        .create_with_context(RebalanceTracker::for_strategy(&strategy).with_health(health.clone()))
        .with_context(|| format!("cannot create the consumer of stage {}", stage.name))?;
    consumer.subscribe(&inputs).with_context(|| {
        format!(
            "stage {} cannot subscribe to {}",
            stage.name,
            inputs.join(", ")
        )
    })?;
    Ok(consumer)
}

/// Where a stage publishes its KPI windows, if KPIs are enabled.
fn kpi_target(config: &PipelineConfig, producer: &FutureProducer) -> Option<KpiTarget> {
    config.kpi.enabled.then(|| KpiTarget {
        route: Route {
            topic: config.kpi.topic.clone(),
            event_type: event_type(config, &config.kpi.topic),
            latest_per_key: false,
        },
        interval: config.kpi.interval,
        instance: config.state.instance_id.clone(),
        sink: KpiSink::new(producer.clone()),
    })
}

/// Which stages run fused (see `stage::fusion`): every fusable stage, with its input topic's
/// partition count (from the brokers, or the configuration when they cannot tell). No stage
/// is fused when the producers use a partitioner the host cannot reproduce.
pub(super) async fn fusion_plan(
    config: &PipelineConfig,
    plugins: &BTreeMap<String, (Arc<PluginSlot>, PluggedInstance)>,
    contexts: &BTreeMap<String, Arc<StageContext>>,
    kpis: &BTreeMap<String, StageKpis>,
    store: &LocalStore,
) -> FusionPlan {
    let kafka = KafkaClients::new(&config.kafka);
    let configured = kafka.producer().get("partitioner").map(str::to_string);
    let Some(partitioner) = Partitioner::named(configured.as_deref()) else {
        tracing::warn!(
            partitioner = configured.unwrap_or_default(),
            "the producers' partitioner is not one the host can reproduce; no stage is fused"
        );
        return FusionPlan::default();
    };
    let mut stages = Vec::new();
    let mut partitions = HashMap::new();
    for stage in &config.stages {
        let (Some((slot, instance)), Some(context), Some(recorder)) = (
            plugins.get(&stage.name),
            contexts.get(&stage.name),
            kpis.get(&stage.name),
        ) else {
            continue;
        };
        if let Some(why) = not_fusable(stage, stage.keeps_state(instance.uses_state())) {
            tracing::debug!(stage = %stage.name, why, "stage is not fusable");
            continue;
        }
        let Some(topic) = stage.inputs().first().map(|t| t.to_string()) else {
            continue;
        };
        let (reader, name) = (kafka.clone(), topic.clone());
        let counted = tokio::task::spawn_blocking(move || partition_count(&reader, &name))
            .await
            .ok()
            .and_then(Result::ok)
            .or_else(|| config.topics.get(&topic).map(|t| t.partitions));
        let Some(count) = counted else {
            tracing::warn!(stage = %stage.name, topic, "cannot tell how many partitions the stage's input has; it is not fused");
            continue;
        };
        partitions.insert(topic, count);
        stages.push(FusableStage {
            config: stage.clone(),
            context: context.clone(),
            slot: slot.clone(),
            kpis: recorder.clone(),
            dedup: fused_ids(config, stage, store),
            deferred: Arc::new(Deferred::new(Deferred::patience_for(
                stage.retry.max_attempts,
                stage.retry.max_delay,
            ))),
        });
    }
    FusionPlan::new(stages, partitions, partitioner)
}

/// Loads every stage's plugin (each file compiled once, however many stages run it) into
/// the stage's slot, and makes one instance of each so that a plugin that cannot start is
/// reported now. Reports every plugin that fails, not just the first.
pub fn load_plugins(
    engine: &PluginEngine,
    config: &PipelineConfig,
) -> anyhow::Result<BTreeMap<String, (Arc<PluginSlot>, PluggedInstance)>> {
    let mut compiled = HashMap::new();
    let mut loaded = BTreeMap::new();
    let mut failures = Vec::new();
    for stage in &config.stages {
        let plugin = match compiled.get(&stage.plugin) {
            Some(plugin) => Ok(Arc::clone(plugin)),
            None => engine.load(&stage.plugin).inspect(|plugin| {
                compiled.insert(stage.plugin.clone(), plugin.clone());
            }),
        };
        let (smoke_type, smoke_topic) = smoke_input(config, stage);
        let outputs = output_contract(config, stage);
        let result = plugin.and_then(|plugin| {
            let slot = PluginSlot::new(
                engine,
                plugin,
                settings(stage),
                &smoke_type,
                &smoke_topic,
                outputs,
            );
            let mut instance = slot.instance()?;
            slot.check_outputs(instance.current())?;
            Ok((slot, instance))
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

/// What the stage's plugin must fit when it declares its outputs: the names the stage's
/// `outputs` table maps and the event types of its inputs.
fn output_contract(config: &PipelineConfig, stage: &StageConfig) -> OutputContract {
    let input_types = if stage.is_http() {
        config
            .http
            .routes
            .iter()
            .filter(|route| route.stage == stage.name)
            .map(|route| route.event_type.clone())
            .collect()
    } else {
        stage
            .inputs()
            .into_iter()
            .map(|topic| event_type(config, topic))
            .collect()
    };
    OutputContract {
        mapped: stage.outputs.keys().cloned().collect(),
        input_types,
    }
}

/// Event type and topic of the smoke event a swapped-in plugin is tried with: the stage's
/// first input (for an ingress stage, the event type of the first route that names it).
fn smoke_input(config: &PipelineConfig, stage: &StageConfig) -> (String, String) {
    let first = stage
        .inputs()
        .first()
        .map(|s| s.to_string())
        .unwrap_or_default();
    if stage.is_http() {
        let event_type = config
            .http
            .routes
            .iter()
            .find(|route| route.stage == stage.name)
            .map(|route| route.event_type.clone())
            .unwrap_or_default();
        return (event_type, first);
    }
    (event_type(config, &first), first)
}

/// The ingress endpoints of `stage`'s routes, sharing its `ingress`.
pub(super) fn ingress_endpoints(
    config: &PipelineConfig,
    stage: &str,
    ingress: &Arc<Ingress>,
) -> Vec<IngressEndpoint> {
    config
        .http
        .routes
        .iter()
        .filter(|route| route.stage == stage)
        .map(|route| IngressEndpoint {
            method: route.method.clone(),
            path: route.path.clone(),
            params: path_params(&route.path),
            handler: Arc::new(RouteIngress {
                ingress: ingress.clone(),
                route: IngressRoute {
                    name: route.name(),
                    id_field: route.id_field.clone(),
                    key_template: route.key_template(),
                    event_type: route.event_type.clone(),
                },
            }),
        })
        .collect()
}

/// How long a read model may wait for its topic's partitions to get leaders (a topic the host
/// has just created may have none for a moment).
const VIEW_START_PATIENCE: Duration = Duration::from_secs(15);

/// Starts a view, trying again while its topic's metadata or end offsets cannot be read yet.
async fn start_view(
    kafka: &KafkaClients,
    topic: &str,
    store: &LocalStore,
    reporter: Reporter,
) -> anyhow::Result<Arc<TopicView>> {
    let deadline = std::time::Instant::now() + VIEW_START_PATIENCE;
    loop {
        match TopicView::start(kafka, topic, store, reporter.clone()).await {
            Ok(view) => return Ok(view),
            Err(error) if std::time::Instant::now() < deadline => {
                tracing::debug!(
                    topic,
                    error = format!("{error:#}"),
                    "view not startable yet; trying again"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Starts the read models: each view's topic reader, and its shaping plugin instance.
pub(super) async fn views(
    config: &PipelineConfig,
    slots: &Slots,
    health: &Health,
    store: &LocalStore,
) -> anyhow::Result<Vec<ViewEndpoint>> {
    let mut endpoints = Vec::new();
    let kafka = KafkaClients::new(&config.kafka);
    for view in &config.http.views {
        let reporter = health.reporter(&format!("view:{}", view.topic), "reading its topic");
        let topic = start_view(&kafka, &view.topic, store, reporter).await?;
        let shaper = match (&view.stage, &view.event_type) {
            (Some(stage), Some(event_type)) => {
                let slot = slots
                    .get(stage)
                    .with_context(|| format!("http.views[{}]: no stage {stage}", view.path))?;
                let instance = slot.instance().with_context(|| {
                    format!(
                        "http.views[{}]: cannot instantiate stage {stage}",
                        view.path
                    )
                })?;
                Some(ViewShaper {
                    stage: stage.clone(),
                    event_type: event_type.clone(),
                    instance: std::sync::Mutex::new(instance),
                })
            }
            _ => None,
        };
        endpoints.push(ViewEndpoint {
            path: view.path.clone(),
            key_param: view.key_param().unwrap_or_default(),
            topic: view.topic.clone(),
            view: topic,
            shaper,
        });
    }
    Ok(endpoints)
}
