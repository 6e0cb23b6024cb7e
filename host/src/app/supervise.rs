//! Keeping topic-fed stages running: a stage that fails is rebuilt instead of stopping the host.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::FutureProducer;
use tokio::sync::watch;

use super::build::{HostParts, topic_stage};
use super::restarts::{RestartLoop, STABLE_AFTER};
use crate::config::{PipelineConfig, StageConfig};
use crate::health::{Health, Reporter};
use crate::kpi::StageKpis;
use crate::observe::{HostEvent, StageRebuilt};
use crate::plugin::PluginSlot;
use crate::stage::{FusionPlan, StuckBook};
use crate::stage::{StageContext, StageRunner};
use crate::store::LocalStore;

/// What it takes to build a stage again after it failed.
pub(super) struct Restart {
    pub(super) config: PipelineConfig,
    pub(super) stage: StageConfig,
    pub(super) context: Arc<StageContext>,
    pub(super) slot: Arc<PluginSlot>,
    pub(super) producer: FutureProducer,
    pub(super) store: LocalStore,
    /// Where the stage reports that it is failing.
    pub(super) health: Reporter,
    /// Records held because they cannot be dead-lettered.
    pub(super) stuck: StuckBook,
    /// Which stages run fused into which workers.
    pub(super) fusion: Arc<FusionPlan>,
    /// Every topic-fed stage's KPI recorder.
    pub(super) kpis: Arc<BTreeMap<String, StageKpis>>,
    /// The host's readiness, for the restart-loop part.
    pub(super) readiness: Health,
}

/// Longest pause between restarts of a failing stage.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);

/// Runs a stage; when it fails (the broker went away, its transaction was fenced) it is
/// rebuilt from scratch — new consumer, new producer, state restored — after a pause that
/// doubles with each consecutive failure. Exactly-once makes the restart safe.
pub(super) async fn supervise(
    first: StageRunner,
    restart: Restart,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let name = restart.stage.name.clone();
    let mut runner = first;
    let mut delay = Duration::from_millis(500);
    let mut restarts = RestartLoop::new(
        &name,
        &restart.config.state.instance_id,
        restart.readiness.clone(),
    );
    loop {
        let started = std::time::Instant::now();
        match run_once(runner, &stop, &mut restarts).await {
            Ok(()) => {
                restart.health.remove();
                restarts.remove();
                return Ok(());
            }
            Err(error) if *stop.borrow() => {
                // Stopping: what this incarnation could not commit (say its last transaction
                // failed because the broker just went away) is not lost, it is read again at
                // the next start; the stop itself is clean.
                tracing::warn!(stage = %name, error = format!("{error:#}"),
                    "stage could not commit its last work while stopping; it is processed again at the next start");
                restart.health.remove();
                restarts.remove();
                return Ok(());
            }
            Err(error) => {
                StageRebuilt {
                    stage: &name,
                    error: &error,
                    delay,
                }
                .emit();
                restart
                    .health
                    .unready(format!("failed, restarting: {error:#}"));
                restarts.failed(started.elapsed(), &error);
            }
        }
        if started.elapsed() > MAX_RESTART_DELAY {
            delay = Duration::from_millis(500);
        }
        match rebuild(&restart, &stop, &mut delay).await {
            Some(next) => runner = next,
            None => return Ok(()),
        }
    }
}

/// Runs `runner` until it ends; once it has run [`STABLE_AFTER`] the restart loop it may be
/// in is over.
async fn run_once(
    runner: StageRunner,
    stop: &watch::Receiver<bool>,
    restarts: &mut RestartLoop,
) -> anyhow::Result<()> {
    let run = runner.run(stop.clone());
    tokio::pin!(run);
    tokio::select! {
        outcome = &mut run => outcome,
        _ = tokio::time::sleep(STABLE_AFTER), if restarts.in_loop() => {
            restarts.stable();
            run.await
        }
    }
}

/// Builds the stage again after a pause of about `delay` (doubled, up to
/// [`MAX_RESTART_DELAY`], for each attempt), until it builds; `None` once stopping.
async fn rebuild(
    restart: &Restart,
    stop: &watch::Receiver<bool>,
    delay: &mut Duration,
) -> Option<StageRunner> {
    let name = &restart.stage.name;
    loop {
        tokio::time::sleep(crate::backoff::equal_jitter(*delay)).await;
        *delay = (*delay * 2).min(MAX_RESTART_DELAY);
        if *stop.borrow() {
            return None;
        }
        let rebuilt = match restart.slot.instance() {
            Ok(instance) => {
                topic_stage(
                    &restart.config,
                    &restart.stage,
                    restart.context.clone(),
                    instance,
                    HostParts {
                        producer: &restart.producer,
                        store: &restart.store,
                        stuck: &restart.stuck,
                        fusion: &restart.fusion,
                        kpis: &restart.kpis,
                    },
                    &restart.health,
                )
                .await
            }
            Err(error) => Err(error.into()),
        };
        match rebuilt {
            Ok(next) => return Some(next),
            Err(error) => {
                tracing::warn!(stage = %name, error = format!("{error:#}"), "stage cannot restart yet");
                restart
                    .health
                    .unready(format!("cannot restart yet: {error:#}"));
            }
        }
    }
}
