//! What a plugin instance can reach: the per-store state and the imports the host grants
//! (logging, the stage's configuration, and a WASI context with no files, network,
//! environment or real clock unless the stage's `capabilities` grant them).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{
    FsPerms, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView,
};

use super::bindings::{Level, stagehost};
use crate::config::CapabilitiesConfig;
use crate::state::{KeyedState, Writes};

/// The clock a plugin sees unless granted the real one: always the Unix epoch, never moving.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// A WASI context that grants exactly `capabilities`.
pub fn wasi_context(capabilities: &CapabilitiesConfig) -> anyhow::Result<WasiCtx> {
    let mut builder = WasiCtxBuilder::new();
    for name in &capabilities.env {
        if let Ok(value) = std::env::var(name) {
            builder.env(name, value);
        }
    }
    for dir in &capabilities.read_dirs {
        let guest = dir
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| ".".into());
        builder
            .preopened_dir(dir, &guest, FsPerms::ReadOnly)
            .map_err(|error| {
                anyhow::anyhow!("cannot open {} for the plugin: {error}", dir.display())
            })?;
    }
    if !capabilities.clock {
        builder.wall_clock(FrozenClock).monotonic_clock(FrozenClock);
    }
    if capabilities.network {
        builder.inherit_network().allow_ip_name_lookup(true);
    } else {
        builder
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
    }
    if capabilities.stdio {
        builder.inherit_stdout().inherit_stderr();
    }
    Ok(builder.build())
}

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
    /// The WASI context: only what the stage's capabilities grant.
    wasi: WasiCtx,
    /// Resources the WASI implementation hands out (streams and the like).
    table: ResourceTable,
    /// Memory limits enforced by the store's resource limiter.
    pub(crate) limits: StoreLimits,
    /// State of the event being handled; `None` outside a call or for stateless inputs.
    pub(crate) state: Option<StateScope>,
    /// Time the current call spent blocked in the host waiting for its own local store (a
    /// state read while the store is being reopened), which must not count against the
    /// plugin's `max_event_time` (see `instance::forgive_host_waits`).
    pub(crate) host_wait: Duration,
    /// The first state key the current call wrote without a state to write to (an HTTP call,
    /// or a stage set `stateless`): the call fails instead of losing the write.
    pub(crate) stateless_write: Option<String>,
}

/// A state read that takes longer than this waited for the store (reopening after a fault):
/// its whole time is the host's, not the plugin's. Reads below it are the plugin's, so a plugin
/// cannot stretch its deadline by reading in a loop.
const HOST_WAIT_FORGIVEN_FROM: Duration = Duration::from_millis(50);

impl PluginState {
    /// A sandboxed state for `stage` with the given configuration, limits and WASI context.
    pub fn new(
        stage: Arc<str>,
        config: Arc<serde_json::Map<String, serde_json::Value>>,
        limits: StoreLimits,
        wasi: WasiCtx,
    ) -> Self {
        Self {
            stage,
            config,
            wasi,
            table: ResourceTable::new(),
            limits,
            state: None,
            host_wait: Duration::ZERO,
            stateless_write: None,
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

/// The longest plugin log message the host writes, in bytes (after escaping); the rest is
/// replaced by a `… (N bytes truncated)` marker.
pub const MAX_LOG_LINE_BYTES: usize = 4096;

/// A plugin's log message made safe for the host's log: control characters (newlines, carriage
/// returns, terminal escapes), Unicode line separators and bidirectional overrides are written
/// escaped (`\n`, `\u{1b}`), so a plugin cannot start a line of its own or rewrite the
/// terminal; and at most `max_bytes` of it are kept, on a char boundary, followed by how many
/// bytes of the message were left out.
pub fn sanitize_log_message(message: &str, max_bytes: usize) -> String {
    let mut line = String::with_capacity(message.len().min(max_bytes) + 32);
    for (at, c) in message.char_indices() {
        let before = line.len();
        if needs_escape(c) {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
        if line.len() > max_bytes {
            line.truncate(before);
            line.push_str(&format!("… ({} bytes truncated)", message.len() - at));
            break;
        }
    }
    line
}

/// Whether `c` could break a log line or change how a terminal shows it.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

impl stagehost::pipeline::log::Host for PluginState {
    fn write(&mut self, level: Level, message: String) {
        let stage = &*self.stage;
        let message = sanitize_log_message(&message, MAX_LOG_LINE_BYTES);
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
        let started = Instant::now();
        let value = {
            let mut store = scope.store.lock().unwrap_or_else(|p| p.into_inner());
            store.get(scope.partition, &key)
        };
        let waited = started.elapsed();
        if waited >= HOST_WAIT_FORGIVEN_FROM {
            self.host_wait += waited;
        }
        value
    }

    fn set(&mut self, key: String, value: Vec<u8>) {
        match self.state.as_mut() {
            Some(scope) => {
                scope.writes.insert(key, Some(value));
            }
            None => {
                self.stateless_write.get_or_insert(key);
            }
        }
    }

    fn delete(&mut self, key: String) {
        match self.state.as_mut() {
            Some(scope) => {
                scope.writes.insert(key, None);
            }
            None => {
                self.stateless_write.get_or_insert(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_messages_cannot_start_lines_or_send_escapes() {
        let line = sanitize_log_message(
            "ok\n2026-01-01 INFO forged\r\u{1b}[2Jx\u{2028}y\u{202e}z",
            4096,
        );
        assert_eq!(
            line,
            "ok\\n2026-01-01 INFO forged\\r\\u{1b}[2Jx\\u{2028}y\\u{202e}z"
        );
        assert!(!line.chars().any(char::is_control));
        assert_eq!(sanitize_log_message("plain: é 🦀", 4096), "plain: é 🦀");
    }

    #[test]
    fn long_log_messages_are_capped_with_a_marker() {
        let message = "é".repeat(10_000);
        let line = sanitize_log_message(&message, MAX_LOG_LINE_BYTES);
        let (kept, marker) = line.split_once('…').unwrap();
        assert!(kept.len() <= MAX_LOG_LINE_BYTES && kept.len() > MAX_LOG_LINE_BYTES - 2);
        assert!(message.starts_with(kept));
        assert_eq!(
            marker,
            format!(" ({} bytes truncated)", message.len() - kept.len())
        );
        // Escapes count towards the cap.
        let line = sanitize_log_message(&"\u{1}".repeat(5_000), 60);
        assert_eq!(
            line,
            format!("{}… (4988 bytes truncated)", "\\u{1}".repeat(12))
        );
        // Exactly at the cap: nothing cut.
        assert_eq!(sanitize_log_message(&"a".repeat(60), 60), "a".repeat(60));
    }
}
