//! A stage's live plugin and its deployment history: hot swaps and rollbacks.
//!
//! A swap compiles the new component, checks it against the stage world, instantiates it and
//! makes one smoke call, all before anything changes; only then does the slot's generation
//! move on. Every worker of the stage holds a [`PluggedInstance`], which looks at the
//! generation before each event and adopts the new version between two events, so each event
//! is handled by exactly one version.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::bindings::InputEvent;
use super::engine::{LoadedPlugin, PluginEngine, PluginError};
use super::instance::{CallError, InstanceSettings, StageInstance};
use super::outputs::OutputContract;
use crate::event::cloudevents::rfc3339;

/// Id of the event a candidate plugin is smoke-tested with.
pub const SMOKE_EVENT_ID: &str = "stagehost-smoke-test";

/// Why a swap was refused; the live version keeps running.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    /// The component does not compile, does not fit the world or cannot start.
    #[error("{0}")]
    Plugin(#[from] PluginError),
    /// The component's use of keyed state differs from the live one's.
    #[error(
        "plugin {path} {} the keyed state interface but the live version of stage {stage} {}; a stage cannot gain or lose state while it runs (restart the host with the new plugin in pipeline.toml)",
        if *uses_state { "imports" } else { "does not import" },
        if *uses_state { "does not" } else { "does" }
    )]
    StateMismatch {
        /// The stage.
        stage: String,
        /// The candidate file.
        path: PathBuf,
        /// Whether the candidate imports state.
        uses_state: bool,
    },
    /// The component trapped on a smoke event.
    #[error(
        "plugin {path} failed its smoke call (an empty JSON object as {event_type}): {message}"
    )]
    Smoke {
        /// The candidate file.
        path: PathBuf,
        /// The event type of the smoke event.
        event_type: String,
        /// The trap.
        message: String,
    },
    /// There is no earlier version to roll back to.
    #[error("stage {0} has no earlier version to roll back to")]
    NothingToRollBack(String),
}

/// What a swap did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SwapOutcome {
    /// The stage.
    pub stage: String,
    /// The version now live (or about to be adopted by the stage's workers).
    pub version: String,
    /// The version it replaced.
    pub previous: String,
    /// False when the new component is the live one already (nothing changed).
    pub changed: bool,
}

/// One version that was (or is) live.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deployment {
    /// Content hash.
    pub version: String,
    /// Where it was loaded from.
    pub path: PathBuf,
    /// When it was accepted (RFC 3339).
    pub deployed_at: String,
    /// When the first worker started handling events with it (RFC 3339).
    pub live_since: Option<String>,
    /// When it was replaced (RFC 3339).
    pub retired_at: Option<String>,
    /// Longest time a worker spent switching to it, in microseconds: the processing stall.
    pub stall_us: Option<u64>,
}

/// What `plugin list` shows for one stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlotReport {
    /// The stage.
    pub stage: String,
    /// The live version.
    pub version: String,
    /// Accepted swaps and rollbacks since start.
    pub swaps: u64,
    /// Refused swaps since start.
    pub refused: u64,
    /// Longest stall any swap of this stage caused, in microseconds.
    pub max_stall_us: u64,
    /// Every version in the order they went live, the current one last.
    pub history: Vec<Deployment>,
}

struct SlotInner {
    current: Arc<LoadedPlugin>,
    /// An instance made while checking the current version, handed to the first worker.
    prepared: Option<StageInstance>,
    /// Deployments, oldest first; the last is the current one.
    history: Vec<Deployment>,
    /// Every version seen, so that a rollback needs no file.
    known: HashMap<String, Arc<LoadedPlugin>>,
    swaps: u64,
    refused: u64,
    max_stall: Duration,
}

/// The live plugin of one stage.
pub struct PluginSlot {
    stage: Arc<str>,
    engine: PluginEngine,
    settings: InstanceSettings,
    /// Event type and topic of the smoke event (the stage's first input).
    smoke_event_type: String,
    smoke_topic: String,
    /// What a plugin's declared output names must fit.
    outputs: OutputContract,
    generation: AtomicU64,
    inner: Mutex<SlotInner>,
}

impl PluginSlot {
    /// A slot whose first version is `plugin`; smoke events use `event_type` and `topic`, and
    /// every version's declared outputs must fit `outputs` (check the first one with
    /// [`PluginSlot::check_outputs`]).
    pub fn new(
        engine: &PluginEngine,
        plugin: Arc<LoadedPlugin>,
        settings: InstanceSettings,
        smoke_event_type: &str,
        smoke_topic: &str,
        outputs: OutputContract,
    ) -> Arc<Self> {
        let now = rfc3339(SystemTime::now());
        let deployment = Deployment {
            version: plugin.version.clone(),
            path: plugin.path.clone(),
            deployed_at: now.clone(),
            live_since: Some(now),
            retired_at: None,
            stall_us: None,
        };
        Arc::new(Self {
            stage: settings.stage.clone(),
            engine: engine.clone(),
            settings,
            smoke_event_type: smoke_event_type.to_string(),
            smoke_topic: smoke_topic.to_string(),
            outputs,
            generation: AtomicU64::new(0),
            inner: Mutex::new(SlotInner {
                known: HashMap::from([(plugin.version.clone(), plugin.clone())]),
                current: plugin,
                prepared: None,
                history: vec![deployment],
                swaps: 0,
                refused: 0,
                max_stall: Duration::ZERO,
            }),
        })
    }

    /// The stage's name.
    pub fn stage(&self) -> &str {
        &self.stage
    }

    /// The live plugin.
    pub fn current(&self) -> Arc<LoadedPlugin> {
        self.lock().current.clone()
    }

    /// A worker's instance of the live version.
    pub fn instance(self: &Arc<Self>) -> Result<PluggedInstance, PluginError> {
        let generation = self.generation.load(Ordering::Acquire);
        let plugin = self.current();
        let instance = StageInstance::new(&self.engine, plugin, self.settings.clone())?;
        Ok(PluggedInstance {
            slot: self.clone(),
            generation,
            instance,
        })
    }

    /// Checks the component in `bytes` and, if it passes, makes it the live version.
    /// `path` names it in messages and in the history. Blocking (it may compile): call it
    /// off the async runtime's worker threads.
    pub fn swap_bytes(&self, path: &Path, bytes: &[u8]) -> Result<SwapOutcome, SwapError> {
        let result = self
            .engine
            .load_bytes(path, bytes)
            .map_err(SwapError::from)
            .and_then(|plugin| self.install(plugin));
        self.note_refusal(&result);
        result
    }

    /// Reads `path` and swaps to it (see [`PluginSlot::swap_bytes`]).
    pub fn swap_file(&self, path: &Path) -> Result<SwapOutcome, SwapError> {
        let result = self
            .engine
            .load(path)
            .map_err(SwapError::from)
            .and_then(|plugin| self.install(plugin));
        self.note_refusal(&result);
        result
    }

    /// Returns to the version that was live before the current one.
    pub fn rollback(&self) -> Result<SwapOutcome, SwapError> {
        let previous = {
            let inner = self.lock();
            let current = &inner.current.version;
            inner
                .history
                .iter()
                .rev()
                .find(|d| &d.version != current)
                .and_then(|d| inner.known.get(&d.version).cloned())
        };
        let previous =
            previous.ok_or_else(|| SwapError::NothingToRollBack(self.stage.to_string()))?;
        self.install(previous)
    }

    /// The stage's versions and swap counts.
    pub fn report(&self) -> SlotReport {
        let inner = self.lock();
        SlotReport {
            stage: self.stage.to_string(),
            version: inner.current.version.clone(),
            swaps: inner.swaps,
            refused: inner.refused,
            max_stall_us: micros(inner.max_stall),
            history: inner.history.clone(),
        }
    }

    fn note_refusal(&self, result: &Result<SwapOutcome, SwapError>) {
        if let Err(error) = result {
            self.lock().refused += 1;
            tracing::warn!(stage = %self.stage, %error, "plugin swap refused; the live version keeps running");
        }
    }

    /// Checks a compiled candidate (state, instantiation, smoke call) and makes it live.
    fn install(&self, plugin: Arc<LoadedPlugin>) -> Result<SwapOutcome, SwapError> {
        let live = self.current();
        if live.version == plugin.version {
            return Ok(SwapOutcome {
                stage: self.stage.to_string(),
                version: live.version.clone(),
                previous: live.version.clone(),
                changed: false,
            });
        }
        if live.uses_state != plugin.uses_state {
            return Err(SwapError::StateMismatch {
                stage: self.stage.to_string(),
                path: plugin.path.clone(),
                uses_state: plugin.uses_state,
            });
        }
        let mut instance = StageInstance::new(&self.engine, plugin.clone(), self.settings.clone())?;
        self.check_outputs(&mut instance)?;
        self.smoke(&mut instance, &plugin)?;

        let mut inner = self.lock();
        let previous = inner.current.version.clone();
        let now = rfc3339(SystemTime::now());
        if let Some(last) = inner.history.last_mut() {
            last.retired_at = Some(now.clone());
        }
        inner.history.push(Deployment {
            version: plugin.version.clone(),
            path: plugin.path.clone(),
            deployed_at: now,
            live_since: None,
            retired_at: None,
            stall_us: None,
        });
        inner.known.insert(plugin.version.clone(), plugin.clone());
        inner.current = plugin.clone();
        inner.prepared = Some(instance);
        inner.swaps += 1;
        // Workers compare generations before each event; bump it last, under the lock, so a
        // worker that sees the new generation finds the new plugin.
        self.generation.fetch_add(1, Ordering::AcqRel);
        drop(inner);
        tracing::info!(stage = %self.stage, version = %plugin.version, %previous,
            path = %plugin.path.display(), "plugin swapped");
        Ok(SwapOutcome {
            stage: self.stage.to_string(),
            version: plugin.version.clone(),
            previous,
            changed: true,
        })
    }

    /// Refuses the instance's plugin when it declares (through its optional `describe`
    /// export) an output name that concerns this stage and that the stage does not map.
    pub fn check_outputs(&self, instance: &mut StageInstance) -> Result<(), PluginError> {
        let Some(description) = instance.describe()? else {
            return Ok(());
        };
        let unmapped = self.outputs.unmapped(&description);
        if unmapped.is_empty() {
            return Ok(());
        }
        Err(PluginError::UnmappedOutputs {
            stage: self.stage.to_string(),
            path: instance.plugin().path.clone(),
            unmapped,
            mapped: self.outputs.mapped.iter().cloned().collect(),
        })
    }

    /// One call with an empty JSON object: a business rejection is fine, a trap is not.
    fn smoke(&self, instance: &mut StageInstance, plugin: &LoadedPlugin) -> Result<(), SwapError> {
        let event = InputEvent {
            id: SMOKE_EVENT_ID.into(),
            event_type: self.smoke_event_type.clone(),
            key: None,
            payload: "{}".into(),
            headers: Vec::new(),
            topic: self.smoke_topic.clone(),
        };
        match instance.handle(&event) {
            Ok(_) | Err(CallError::Reject(_) | CallError::Retry(_)) => Ok(()),
            Err(CallError::Trap(message)) => Err(SwapError::Smoke {
                path: plugin.path.clone(),
                event_type: self.smoke_event_type.clone(),
                message,
            }),
        }
    }

    /// The live version for a worker at `generation`: the prepared instance if no other
    /// worker took it, otherwise a fresh one.
    fn adopt(&self) -> (u64, Result<StageInstance, PluginError>) {
        let mut inner = self.lock();
        let generation = self.generation.load(Ordering::Acquire);
        let instance = match inner.prepared.take() {
            Some(instance) if instance.version() == inner.current.version => Ok(instance),
            _ => StageInstance::new(&self.engine, inner.current.clone(), self.settings.clone()),
        };
        (generation, instance)
    }

    fn went_live(&self, version: &str, stall: Duration) {
        let mut inner = self.lock();
        inner.max_stall = inner.max_stall.max(stall);
        if let Some(deployment) = inner
            .history
            .iter_mut()
            .rev()
            .find(|d| d.version == version)
        {
            deployment
                .live_since
                .get_or_insert_with(|| rfc3339(SystemTime::now()));
            deployment.stall_us = Some(deployment.stall_us.unwrap_or(0).max(micros(stall)));
        }
    }

    fn lock(&self) -> MutexGuard<'_, SlotInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A worker's plugin instance that follows its slot's swaps between events.
pub struct PluggedInstance {
    slot: Arc<PluginSlot>,
    generation: u64,
    instance: StageInstance,
}

impl PluggedInstance {
    /// The instance to handle the next event with: the live version, adopted now if the slot
    /// was swapped since the last event.
    pub fn current(&mut self) -> &mut StageInstance {
        if self.slot.generation.load(Ordering::Acquire) != self.generation {
            self.adopt();
        }
        &mut self.instance
    }

    /// The version of the instance (as of the last event).
    pub fn version(&self) -> &str {
        self.instance.version()
    }

    /// Whether the plugin keeps keyed state.
    pub fn uses_state(&self) -> bool {
        self.instance.uses_state()
    }

    /// The slot this instance follows.
    pub fn slot(&self) -> &Arc<PluginSlot> {
        &self.slot
    }

    fn adopt(&mut self) {
        let started = Instant::now();
        let (generation, instance) = self.slot.adopt();
        match instance {
            Ok(instance) => {
                let old = std::mem::replace(&mut self.instance, instance);
                drop(old);
                self.generation = generation;
                let stall = started.elapsed();
                self.slot.went_live(self.instance.version(), stall);
                tracing::info!(stage = %self.slot.stage, version = %self.instance.version(),
                    stall_us = micros(stall), "worker switched plugin version");
            }
            Err(error) => {
                // Cannot happen for a checked plugin short of running out of memory; keep the
                // old version and try again before the next event.
                tracing::error!(stage = %self.slot.stage, %error, "cannot instantiate the new plugin version; keeping the old one");
            }
        }
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}
