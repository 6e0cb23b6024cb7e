//! One live plugin instance of a stage: calls the handler under a deadline and memory limit,
//! and replaces the instance after a trap (a trapped store cannot be entered again).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::{Store, StoreLimitsBuilder, Trap};

use super::bindings::{
    DescribeExport, HandlerExport, InputEvent, OutputEvent, StageDescription, StageError,
};
use super::engine::{EPOCH_TICK, LoadedPlugin, PluginEngine, PluginError};
use super::host_state::{PluginState, StateScope, wasi_context};
use crate::config::{CapabilitiesConfig, LimitsConfig};
use crate::observe::catalogue;
use crate::state::{KeyedState, Writes};

/// Why a call produced no outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The plugin rejected the event: retrying cannot help.
    Reject(String),
    /// The plugin asked for a retry: a later attempt may succeed.
    Retry(String),
    /// The plugin trapped, ran out of time or memory; the message starts with `timeout`,
    /// `memory limit` or `trap:`.
    Trap(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Reject(message) => write!(f, "rejected: {message}"),
            CallError::Retry(message) => write!(f, "retry: {message}"),
            CallError::Trap(message) => f.write_str(message),
        }
    }
}

/// What every instance of a stage is created with.
#[derive(Clone)]
pub struct InstanceSettings {
    /// Stage name, for logs.
    pub stage: Arc<str>,
    /// The stage's `config` table as JSON.
    pub config: Arc<serde_json::Map<String, serde_json::Value>>,
    /// Memory, time and fuel limits.
    pub limits: LimitsConfig,
    /// What the plugin may reach besides its input and configuration.
    pub capabilities: CapabilitiesConfig,
}

struct Live {
    store: Store<PluginState>,
    handler: HandlerExport,
    describe: Option<DescribeExport>,
}

/// A stage's plugin, ready to handle events one at a time.
pub struct StageInstance {
    engine: PluginEngine,
    plugin: Arc<LoadedPlugin>,
    settings: InstanceSettings,
    live: Option<Live>,
    /// The time of each handler call, labelled with the stage and the plugin's version.
    call_time: metrics::Histogram,
}

impl StageInstance {
    /// Instantiates `plugin` now, so a plugin that cannot start is reported at once.
    pub fn new(
        engine: &PluginEngine,
        plugin: Arc<LoadedPlugin>,
        settings: InstanceSettings,
    ) -> Result<Self, PluginError> {
        let live = instantiate(engine, &plugin, &settings)?;
        let call_time = metrics::histogram!(catalogue::PLUGIN_CALL_SECONDS,
            "stage" => settings.stage.to_string(), "version" => plugin.version.clone());
        Ok(Self {
            engine: engine.clone(),
            plugin,
            settings,
            live: Some(live),
            call_time,
        })
    }

    /// The content hash of the plugin this instance runs.
    pub fn version(&self) -> &str {
        &self.plugin.version
    }

    /// The plugin this instance runs.
    pub fn plugin(&self) -> &Arc<LoadedPlugin> {
        &self.plugin
    }

    /// Whether the plugin imports the keyed state interface.
    pub fn uses_state(&self) -> bool {
        self.plugin.uses_state
    }

    /// Calls the plugin's handler for one event (without state).
    pub fn handle(&mut self, event: &InputEvent) -> Result<Vec<OutputEvent>, CallError> {
        self.handle_with_state(event, None)
            .map(|(outputs, _)| outputs)
    }

    /// Calls the plugin's handler for one event that may read and write `state`; returns the
    /// outputs and the state writes, which the caller applies only if it publishes the outputs.
    pub fn handle_with_state(
        &mut self,
        event: &InputEvent,
        state: Option<(Arc<Mutex<KeyedState>>, i32)>,
    ) -> Result<(Vec<OutputEvent>, Writes), CallError> {
        let live = match self.live.as_mut() {
            Some(live) => live,
            None => {
                let live = instantiate(&self.engine, &self.plugin, &self.settings)
                    .map_err(|error| CallError::Trap(format!("trap: {error}")))?;
                self.live.insert(live)
            }
        };
        live.store
            .set_epoch_deadline(deadline_ticks(&self.settings.limits));
        if self.engine.meters_fuel() {
            live.store
                .set_fuel(self.settings.limits.fuel.unwrap_or(u64::MAX))
                .map_err(|error| CallError::Trap(format!("trap: cannot set fuel: {error}")))?;
        }
        live.store.data_mut().host_wait = Duration::ZERO;
        live.store.data_mut().stateless_write = None;
        live.store.data_mut().state = state.map(|(store, partition)| StateScope {
            store,
            partition,
            writes: Writes::new(),
        });
        let running = self.engine.running();
        let started = Instant::now();
        let result = live.handler.call_handle(&mut live.store, event);
        self.call_time.record(started.elapsed().as_secs_f64());
        drop(running);
        let writes = live
            .store
            .data_mut()
            .state
            .take()
            .map(|scope| scope.writes)
            .unwrap_or_default();
        if let (Ok(Ok(_)), Some(key)) = (&result, live.store.data_mut().stateless_write.take()) {
            return Err(CallError::Trap(format!(
                "the plugin wrote state key {key:?}, but this call keeps no state (an HTTP route or view, or a stage with `stateless = true`): remove `stateless` from the stage or stop writing state there"
            )));
        }
        match result {
            Ok(Ok(outputs)) => Ok((outputs, writes)),
            Ok(Err(StageError::Reject(message))) => Err(CallError::Reject(message)),
            Ok(Err(StageError::Retry(message))) => Err(CallError::Retry(message)),
            Err(error) => {
                // A store that trapped cannot be entered again: start afresh next time.
                self.live = None;
                Err(CallError::Trap(describe_trap(
                    &error,
                    &self.settings.limits,
                )))
            }
        }
    }
}

impl StageInstance {
    /// What the plugin says about itself through its optional `describe` export (`None` when
    /// it has none), asked under the same deadline and limits as an event.
    pub fn describe(&mut self) -> Result<Option<StageDescription>, PluginError> {
        let describe_error = |message: String| PluginError::Describe {
            path: self.plugin.path.clone(),
            message,
        };
        let live = match self.live.as_mut() {
            Some(live) => live,
            None => self
                .live
                .insert(instantiate(&self.engine, &self.plugin, &self.settings)?),
        };
        let Some(describe) = &live.describe else {
            return Ok(None);
        };
        live.store
            .set_epoch_deadline(deadline_ticks(&self.settings.limits));
        if self.engine.meters_fuel() {
            live.store
                .set_fuel(self.settings.limits.fuel.unwrap_or(u64::MAX))
                .map_err(|error| describe_error(format!("cannot set fuel: {error}")))?;
        }
        let running = self.engine.running();
        let described = describe.call_describe(&mut live.store);
        drop(running);
        match described {
            Ok(description) => Ok(Some(description)),
            Err(error) => {
                let message = describe_trap(&error, &self.settings.limits);
                // A store that trapped cannot be entered again.
                self.live = None;
                Err(describe_error(message))
            }
        }
    }
}

fn instantiate(
    engine: &PluginEngine,
    plugin: &LoadedPlugin,
    settings: &InstanceSettings,
) -> Result<Live, PluginError> {
    let limits = StoreLimitsBuilder::new()
        .memory_size(settings.limits.max_memory_bytes)
        .trap_on_grow_failure(true)
        .build();
    let wasi = wasi_context(&settings.capabilities).map_err(|error| PluginError::Instantiate {
        path: plugin.path.clone(),
        message: format!("{error:#}"),
    })?;
    let state = PluginState::new(
        settings.stage.clone(),
        settings.config.clone(),
        limits,
        wasi,
    );
    let mut store = Store::new(engine.engine(), state);
    store.limiter(|state| &mut state.limits);
    store.set_epoch_deadline(deadline_ticks(&settings.limits));
    store.epoch_deadline_callback(forgive_host_waits);
    if engine.meters_fuel() {
        // Start-up runs under the same budget as one event.
        store
            .set_fuel(settings.limits.fuel.unwrap_or(u64::MAX))
            .map_err(|error| PluginError::Instantiate {
                path: plugin.path.clone(),
                message: format!("cannot set fuel: {error}"),
            })?;
    }
    let start_error = |error: wasmtime::Error| PluginError::Instantiate {
        path: plugin.path.clone(),
        message: format!("{error:#}"),
    };
    // Start-up code runs here (and in nothing below): under the same deadline as an event.
    let running = engine.running();
    let instance = plugin.pre.instantiate(&mut store).map_err(start_error)?;
    drop(running);
    let handler = plugin
        .handler
        .load(&mut store, &instance)
        .map_err(start_error)?;
    let describe = plugin
        .describe
        .as_ref()
        .map(|indices| indices.load(&mut store, &instance))
        .transpose()
        .map_err(start_error)?;
    Ok(Live {
        store,
        handler,
        describe,
    })
}

/// What the store does when a call reaches its deadline: the time the call spent blocked in
/// the host waiting for its own local store (`PluginState::host_wait`, a state read while the
/// store is reopened after a fault) is given back, so the plugin is not blamed (and its event
/// dead-lettered as a timeout) for the host's outage; with nothing to give back, the call
/// traps with [`Trap::Interrupt`] ("ran longer than max_event_time").
fn forgive_host_waits(
    mut store: wasmtime::StoreContextMut<'_, PluginState>,
) -> wasmtime::Result<wasmtime::UpdateDeadline> {
    let waited = std::mem::take(&mut store.data_mut().host_wait);
    if waited.is_zero() {
        return Err(Trap::Interrupt.into());
    }
    let ticks = waited.as_millis() / EPOCH_TICK.as_millis();
    Ok(wasmtime::UpdateDeadline::Continue(
        u64::try_from(ticks).unwrap_or(u64::MAX).max(1),
    ))
}

fn deadline_ticks(limits: &LimitsConfig) -> u64 {
    let ticks = limits.max_event_time.as_millis() / EPOCH_TICK.as_millis();
    u64::try_from(ticks).unwrap_or(u64::MAX).max(1) + 1
}

fn describe_trap(error: &wasmtime::Error, limits: &LimitsConfig) -> String {
    let text = format!("{error:#}");
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => format!(
            "timeout: the plugin ran longer than max_event_time ({:?})",
            limits.max_event_time
        ),
        Some(Trap::OutOfFuel) => format!(
            "timeout: the plugin used up its fuel ({} units, limits.fuel)",
            limits.fuel.unwrap_or(u64::MAX)
        ),
        _ if text.contains("memory") && text.contains("limit") || text.contains("grow") => {
            format!(
                "memory limit: the plugin tried to grow its memory past {} bytes ({text})",
                limits.max_memory_bytes
            )
        }
        _ => format!("trap: {text}"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use super::*;
    use crate::plugin::test_modules::SPIN_MODULE;

    /// Spins under a deadline of one tick with `host_wait` already waited; returns the trap and
    /// how many ticks the epoch had moved when it came.
    fn spin_until_trapped(host_wait: Duration) -> (wasmtime::Error, u64) {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let engine = wasmtime::Engine::new(&config).unwrap();
        let module = wasmtime::Module::new(&engine, SPIN_MODULE).unwrap();
        let state = PluginState::new(
            Arc::from("spin"),
            Arc::default(),
            StoreLimitsBuilder::new().build(),
            wasi_context(&CapabilitiesConfig::default()).unwrap(),
        );
        let mut store = Store::new(&engine, state);
        store.epoch_deadline_callback(forgive_host_waits);
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
        let spin = instance
            .get_typed_func::<(), ()>(&mut store, "spin")
            .unwrap();
        store.data_mut().host_wait = host_wait;
        store.set_epoch_deadline(1);
        let ticks = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = std::thread::spawn({
            let (engine, ticks, stop) = (engine.clone(), ticks.clone(), stop.clone());
            move || {
                while !stop.load(Ordering::SeqCst) {
                    ticks.fetch_add(1, Ordering::SeqCst);
                    engine.increment_epoch();
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        let trap = spin.call(&mut store, ()).unwrap_err();
        let at = ticks.load(Ordering::SeqCst);
        stop.store(true, Ordering::SeqCst);
        ticker.join().unwrap();
        assert!(
            store.data().host_wait.is_zero(),
            "the wait is given back once"
        );
        (trap, at)
    }

    #[test]
    fn a_deadline_gives_back_the_time_the_host_waited_for_its_store_then_traps() {
        let (trap, ticks) = spin_until_trapped(EPOCH_TICK * 20);
        assert_eq!(trap.downcast_ref::<Trap>(), Some(&Trap::Interrupt));
        assert!(
            ticks >= 21,
            "trapped after {ticks} ticks: the host's 20 ticks of waiting were not given back"
        );
        let (trap, _) = spin_until_trapped(Duration::ZERO);
        assert_eq!(
            trap.downcast_ref::<Trap>(),
            Some(&Trap::Interrupt),
            "without a host wait the deadline traps as before"
        );
    }
}
