//! What a plugin instance can reach: the per-store state and the imports the host grants
//! (logging, the stage's configuration, and a WASI context with no files, network or environment).

use std::sync::{Arc, Mutex};

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::{Level, stagehost};
use crate::state::{KeyedState, Writes};

/// The state an event may read and write while it is handled.
pub struct StateScope {
    /// The stage's keyed state.
    pub store: Arc<Mutex<KeyedState>>,
    /// The input partition of the event: the scope of every key.
    pub partition: i32,
    /// What the event wrote so far.
    pub writes: Writes,
}

/// Per-store data of one plugin instance.
pub struct PluginState {
    /// The stage the instance belongs to, for log attribution.
    stage: Arc<str>,
    /// The stage's `config` table, as a JSON object.
    config: Arc<serde_json::Map<String, serde_json::Value>>,
    /// A WASI context that grants nothing: no preopened dirs, no env, no args, no sockets.
    wasi: WasiCtx,
    /// Resources the WASI implementation hands out (streams and the like).
    table: ResourceTable,
    /// Memory limits enforced by the store's resource limiter.
    pub(crate) limits: StoreLimits,
    /// State of the event being handled; `None` outside a call or for stateless inputs.
    pub(crate) state: Option<StateScope>,
}

impl PluginState {
    /// A sandboxed state for `stage` with the given configuration and limits.
    pub fn new(
        stage: Arc<str>,
        config: Arc<serde_json::Map<String, serde_json::Value>>,
        limits: StoreLimits,
    ) -> Self {
        let wasi = WasiCtxBuilder::new()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            stage,
            config,
            wasi,
            table: ResourceTable::new(),
            limits,
            state: None,
        }
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl stagehost::pipeline::types::Host for PluginState {}

impl stagehost::pipeline::log::Host for PluginState {
    fn write(&mut self, level: Level, message: String) {
        let stage = &*self.stage;
        match level {
            Level::Trace => tracing::trace!(stage, plugin = true, "{message}"),
            Level::Debug => tracing::debug!(stage, plugin = true, "{message}"),
            Level::Info => tracing::info!(stage, plugin = true, "{message}"),
            Level::Warn => tracing::warn!(stage, plugin = true, "{message}"),
            Level::Error => tracing::error!(stage, plugin = true, "{message}"),
        }
    }
}

impl stagehost::pipeline::config::Host for PluginState {
    fn get(&mut self, key: String) -> Option<String> {
        self.config.get(&key).map(|value| value.to_string())
    }

    fn get_all(&mut self) -> String {
        serde_json::Value::Object((*self.config).clone()).to_string()
    }
}

impl stagehost::pipeline::state::Host for PluginState {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        let scope = self.state.as_ref()?;
        if let Some(write) = scope.writes.get(&key) {
            return write.clone();
        }
        let store = scope.store.lock().unwrap_or_else(|p| p.into_inner());
        store.get(scope.partition, &key)
    }

    fn set(&mut self, key: String, value: Vec<u8>) {
        match self.state.as_mut() {
            Some(scope) => {
                scope.writes.insert(key, Some(value));
            }
            None => {
                tracing::warn!(stage = %self.stage, %key, "state write outside a partition is ignored")
            }
        }
    }

    fn delete(&mut self, key: String) {
        match self.state.as_mut() {
            Some(scope) => {
                scope.writes.insert(key, None);
            }
            None => {
                tracing::warn!(stage = %self.stage, %key, "state delete outside a partition is ignored")
            }
        }
    }
}
