//! Starting a host's stages: every stage built at once, each topic-fed stage then supervised on
//! a thread of its own, the ingress stages turned into HTTP endpoints; and what the coverage
//! watch looks at.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rdkafka::producer::FutureProducer;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::build::{
    HostParts, context, fusion_plan, ingress_answers, ingress_endpoints, topic_stage,
};
use super::supervise::{Restart, supervise};
use crate::config::{PipelineConfig, StageConfig};
use crate::event::schema::SchemaRegistry;
use crate::health::Health;
use crate::http::IngressEndpoint;
use crate::ingress::{InProcessFactory, Ingress};
use crate::kafka::RecordLimits;
use crate::kpi::{KpiHub, StageKpis};
use crate::plugin::{PluggedInstance, PluginSlot};
use crate::stage::{
    CoverageTarget, FusionPlan, InProcess, NothingInProcess, StageContext, StageRunner, StuckBook,
};
use crate::store::LocalStore;

/// Every stage's plugin slot and its first instance, by stage name.
pub(super) type Plugins = BTreeMap<String, (Arc<PluginSlot>, PluggedInstance)>;

/// The parts of the host every stage shares.
pub(super) struct Shared {
    /// The host's producer, for the at-least-once stages and the ingress.
    pub(super) producer: FutureProducer,
    /// The plain store handle: the ingress answers `503` at once while the store is failed.
    pub(super) store: LocalStore,
    /// The patient store handle (see [`super::start::STORE_PATIENCE`]): topic-fed stages wait.
    pub(super) stage_store: LocalStore,
    /// Where every stage and ingress reports whether it works.
    pub(super) health: Health,
    /// Records held because they cannot be dead-lettered.
    pub(super) stuck: StuckBook,
    /// The KPI recorders of the ingress stages.
    pub(super) kpis: KpiHub,
}

/// The stages once started.
pub(super) struct Stages {
    /// Every topic-fed stage, supervised on a thread of its own.
    pub(super) tasks: JoinSet<anyhow::Result<()>>,
    /// The HTTP endpoints of the ingress stages.
    pub(super) ingress: Vec<IngressEndpoint>,
}

/// What the topic-fed stages share besides [`Shared`].
struct TopicFed {
    /// Which stages run fused into which workers.
    fusion: Arc<FusionPlan>,
    /// Every topic-fed stage's KPI recorder.
    kpis: Arc<BTreeMap<String, StageKpis>>,
}

/// A topic-fed stage being built: its first runner and what rebuilding it takes.
type Building = JoinHandle<anyhow::Result<(StageRunner, Restart)>>;
/// An ingress stage being built: its endpoints.
type BuildingIngress = JoinHandle<anyhow::Result<Vec<IngressEndpoint>>>;

/// Builds every stage at once: each waits for Kafka (its transactional producer's
/// `init_transactions`, its consumer, its changelog), and start-up time is their longest
/// wait instead of their sum. Fails fast on a first start that cannot work (bad topic, no
/// broker); later failures restart the stage instead of the host.
pub(super) async fn start_stages(
    config: &PipelineConfig,
    mut plugins: Plugins,
    schemas: &SchemaRegistry,
    limits: &Arc<RecordLimits>,
    shared: &Shared,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Stages> {
    let contexts: BTreeMap<String, Arc<StageContext>> = config
        .stages
        .iter()
        .map(|stage| (stage.name.clone(), context(config, stage, schemas, limits)))
        .collect();
    let stage_kpis = Arc::new(topic_stage_kpis(config));
    let fusion = Arc::new(
        fusion_plan(
            config,
            &plugins,
            &contexts,
            &stage_kpis,
            &shared.stage_store,
        )
        .await,
    );
    let fused = fusion.fused_names(&config.stages);
    let topic_fed = TopicFed {
        fusion,
        kpis: stage_kpis,
    };
    tracing::info!(
        fused = fused.join(", "),
        count = fused.len(),
        "stage fusion: these stages also run in process in the workers that write their input"
    );
    let mut ingresses = Vec::new();
    let mut building = Vec::new();
    for stage in &config.stages {
        let (slot, instance) = plugins
            .remove(&stage.name)
            .with_context(|| format!("plugin of stage {} missing", stage.name))?;
        let context = contexts
            .get(&stage.name)
            .cloned()
            .with_context(|| format!("context of stage {} missing", stage.name))?;
        if stage.is_http() {
            let in_process = ingress_in_process(&topic_fed.fusion, stage, &shared.stuck);
            ingresses.push(build_ingress(
                config, stage, context, instance, in_process, shared,
            ));
        } else {
            building.push(build_topic_stage(
                config, stage, context, slot, instance, &topic_fed, shared,
            ));
        }
    }
    let mut tasks = JoinSet::new();
    for built in building {
        let (runner, restart) = built.await.context("building a stage panicked")??;
        tasks.spawn(on_own_thread(
            format!("stage-{}", restart.stage.name),
            supervise(runner, restart, stop.clone()),
        )?);
    }
    let mut ingress = Vec::new();
    for built in ingresses {
        ingress.extend(built.await.context("building an ingress panicked")??);
    }
    Ok(Stages { tasks, ingress })
}

/// Every topic-fed stage's KPI recorder, by stage name.
fn topic_stage_kpis(config: &PipelineConfig) -> BTreeMap<String, StageKpis> {
    config
        .stages
        .iter()
        .filter(|stage| !stage.is_http())
        .map(|stage| (stage.name.clone(), StageKpis::new(&stage.name)))
        .collect()
}

/// Makes, for each transaction slot of the ingress stage `stage`, its own share of the stages
/// fused into it (none when one cannot be made: their own workers then handle everything).
fn ingress_in_process(
    plan: &Arc<FusionPlan>,
    stage: &StageConfig,
    stuck: &StuckBook,
) -> InProcessFactory {
    let (plan, stage, stuck) = (plan.clone(), stage.clone(), stuck.clone());
    Arc::new(move || -> Box<dyn InProcess> {
        match plan.for_writer(&stage, &stuck) {
            Ok(fusion) => Box::new(fusion),
            Err(error) => {
                tracing::warn!(stage = %stage.name, error = format!("{error:#}"),
                    "cannot instantiate the stages fused into the ingress; their own workers handle its events");
                Box::new(NothingInProcess)
            }
        }
    })
}

/// Starts building the ingress stage `stage`: its answer store, then its endpoints; its
/// transactions run what `in_process` makes.
fn build_ingress(
    config: &PipelineConfig,
    stage: &StageConfig,
    context: Arc<StageContext>,
    instance: PluggedInstance,
    in_process: InProcessFactory,
    shared: &Shared,
) -> BuildingIngress {
    let (config, stage) = (config.clone(), stage.clone());
    let producer = shared.producer.clone();
    let store = shared.store.clone();
    let kpis = shared.kpis.stage(&stage.name);
    let reporter = shared
        .health
        .reporter(&format!("ingress:{}", stage.name), "starting");
    tokio::spawn(async move {
        let answers =
            ingress_answers(&config, &stage, &producer, &store, reporter, in_process).await?;
        let ingress = Arc::new(
            Ingress::new(context, instance, producer, answers, kpis)
                .with_limits(config.http.request_timeout, config.http.max_id_bytes),
        );
        anyhow::Ok(ingress_endpoints(&config, &stage.name, &ingress))
    })
}

/// Starts building the topic-fed stage `stage`: its first runner, and what it takes to
/// rebuild it.
fn build_topic_stage(
    config: &PipelineConfig,
    stage: &StageConfig,
    context: Arc<StageContext>,
    slot: Arc<PluginSlot>,
    instance: PluggedInstance,
    topic_fed: &TopicFed,
    shared: &Shared,
) -> Building {
    let (fusion, stage_kpis) = (topic_fed.fusion.clone(), topic_fed.kpis.clone());
    let (config, stage) = (config.clone(), stage.clone());
    let producer = shared.producer.clone();
    let reporter = shared
        .health
        .reporter(&format!("stage:{}", stage.name), "starting");
    let store = shared.stage_store.clone();
    let stuck = shared.stuck.clone();
    let readiness = shared.health.clone();
    tokio::spawn(async move {
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
    })
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

/// What the coverage watch looks at: every topic-fed stage's group and inputs.
pub(super) fn coverage_targets(config: &PipelineConfig, plugins: &Plugins) -> Vec<CoverageTarget> {
    config
        .stages
        .iter()
        .filter(|stage| !stage.is_http())
        .map(|stage| {
            let group = stage.group_id();
            let consumer = crate::stage::consumer_settings(config, stage);
            let processed = crate::stage::processed_ids_topic(stage);
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
                    .is_some_and(|(_, instance)| stage.keeps_state(instance.uses_state())),
                consumer,
                // Two looks in a row, well within the session timeout.
                grace: session_timeout.min(Duration::from_secs(2)),
                processed,
            }
        })
        .collect()
}
