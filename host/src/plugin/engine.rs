//! Compiling stage components: one shared engine (epoch interruption, on-disk compilation cache)
//! and one linker that grants the host's imports.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, InstancePre, Linker};
use wasmtime::{Cache, CacheConfig, Config, Engine};

use super::bindings::{DescribeIndices, HandlerIndices, Stage};
use super::host_state::PluginState;
use super::ticker::{EpochTicker, Running};

/// How often the engine's epoch advances; per-event deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Import name prefix of the keyed state interface.
const STATE_INTERFACE: &str = "stagehost:pipeline/state@";

/// Export name prefix of the optional `describe` interface.
const DESCRIBE_INTERFACE: &str = "stagehost:pipeline/describe@";

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The file could not be read.
    #[error("cannot read plugin {path}: {source}")]
    Read {
        /// The plugin file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a WebAssembly component that compiles.
    #[error(
        "plugin {path} is not a valid WebAssembly component: {message} (build plugins with `cargo build --release --target wasm32-wasip2`)"
    )]
    Compile {
        /// The plugin file.
        path: PathBuf,
        /// The compiler's message.
        message: String,
    },
    /// The component does not implement the `stagehost:pipeline/stage` world, or imports
    /// something the host does not grant.
    #[error("plugin {path} does not fit the stagehost:pipeline stage world: {message}")]
    World {
        /// The plugin file.
        path: PathBuf,
        /// What does not fit.
        message: String,
    },
    /// The component could not be instantiated (for example its start-up trapped).
    #[error("plugin {path} failed to start: {message}")]
    Instantiate {
        /// The plugin file.
        path: PathBuf,
        /// The failure.
        message: String,
    },
    /// The component's `describe` export trapped.
    #[error("plugin {path} failed to describe itself (its `describe` export trapped): {message}")]
    Describe {
        /// The plugin file.
        path: PathBuf,
        /// The trap.
        message: String,
    },
    /// The component declares output names that its stage's `outputs` table does not map.
    #[error(
        "plugin {path} declares output(s) {} that stage {stage} does not map (its outputs table maps: {}); add them to the stage's `outputs` in pipeline.toml, or use a plugin built for this stage",
        quoted(unmapped),
        if mapped.is_empty() { "nothing".to_string() } else { quoted(mapped) }
    )]
    UnmappedOutputs {
        /// The stage.
        stage: String,
        /// The plugin file.
        path: PathBuf,
        /// The declared names the table lacks, sorted.
        unmapped: Vec<String>,
        /// The names the table maps, sorted.
        mapped: Vec<String>,
    },
}

/// `'a', 'b'`: names for a message.
fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|name| format!("'{name}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A compiled, linked plugin that instances are created from.
pub struct LoadedPlugin {
    /// Where it was loaded from.
    pub path: PathBuf,
    /// Content hash of the component (`sha256:` and 16 hex digits): the plugin's version.
    pub version: String,
    /// Whether the component imports the keyed state interface.
    pub uses_state: bool,
    /// Pre-linked component: instantiation only allocates.
    pub(crate) pre: InstancePre<PluginState>,
    /// Where the `handler` export is.
    pub(crate) handler: HandlerIndices,
    /// Where the optional `describe` export is (added in 0.1.x; older components lack it).
    pub(crate) describe: Option<DescribeIndices>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("uses_state", &self.uses_state)
            .field("describes", &self.describe.is_some())
            .finish_non_exhaustive()
    }
}

/// The shared engine and linker. Cloning is cheap.
#[derive(Clone)]
pub struct PluginEngine {
    engine: Engine,
    meters_fuel: bool,
    linker: Arc<Linker<PluginState>>,
    /// Advances the epoch while plugin code runs; the last clone of the engine stops it.
    ticker: Arc<EpochTicker>,
}

impl PluginEngine {
    /// Builds the engine; compiled components are cached under `cache_dir`. With
    /// `meter_fuel`, every call is metered and limited by its stage's `limits.fuel` (about 15%
    /// slower, so it is on only when some stage sets a fuel limit).
    pub fn new(cache_dir: Option<&Path>, meter_fuel: bool) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.consume_fuel(meter_fuel);
        if let Some(dir) = cache_dir {
            std::fs::create_dir_all(dir)?;
            let dir = std::path::absolute(dir)?;
            let mut cache_config = CacheConfig::new();
            cache_config.with_directory(&dir);
            config.cache(Some(Cache::new(cache_config).map_err(wasm_error)?));
        }
        let engine = Engine::new(&config).map_err(wasm_error)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(wasm_error)?;
        Stage::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state).map_err(wasm_error)?;
        let ticker = Arc::new(EpochTicker::start(engine.clone(), EPOCH_TICK));
        Ok(Self {
            engine,
            meters_fuel: meter_fuel,
            linker: Arc::new(linker),
            ticker,
        })
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Marks plugin code as running until the guard is dropped, so the epoch advances and its
    /// deadline can come: hold it around every call into a store and every instantiation.
    pub(crate) fn running(&self) -> Running<'_> {
        self.ticker.running()
    }

    /// Whether calls are metered with fuel.
    pub fn meters_fuel(&self) -> bool {
        self.meters_fuel
    }

    /// Reads, compiles and links a plugin file.
    pub fn load(&self, path: &Path) -> Result<Arc<LoadedPlugin>, PluginError> {
        let bytes = std::fs::read(path).map_err(|source| PluginError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        self.load_bytes(path, &bytes)
    }

    /// Compiles and links a plugin from its bytes; `path` is used in messages only.
    pub fn load_bytes(&self, path: &Path, bytes: &[u8]) -> Result<Arc<LoadedPlugin>, PluginError> {
        let component =
            Component::new(&self.engine, bytes).map_err(|error| PluginError::Compile {
                path: path.to_path_buf(),
                message: format!("{error:#}"),
            })?;
        let world_error = |error: wasmtime::Error| PluginError::World {
            path: path.to_path_buf(),
            message: format!("{error:#}"),
        };
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(world_error)?;
        let handler = HandlerIndices::new(&instance_pre).map_err(world_error)?;
        let describes = component
            .component_type()
            .exports(&self.engine)
            .any(|(name, _)| name.starts_with(DESCRIBE_INTERFACE));
        let describe = describes
            .then(|| DescribeIndices::new(&instance_pre))
            .transpose()
            .map_err(world_error)?;
        let uses_state = component
            .component_type()
            .imports(&self.engine)
            .any(|(name, _)| name.starts_with(STATE_INTERFACE));
        Ok(Arc::new(LoadedPlugin {
            path: path.to_path_buf(),
            version: content_version(bytes),
            uses_state,
            pre: instance_pre,
            handler,
            describe,
        }))
    }
}

impl Drop for PluginEngine {
    fn drop(&mut self) {
        // The last clone stops the ticker thread.
        if Arc::strong_count(&self.ticker) == 1 {
            self.ticker.stop();
        }
    }
}

/// wasmtime has an error type of its own; keep its whole chain in the message.
fn wasm_error(error: wasmtime::Error) -> anyhow::Error {
    anyhow::Error::msg(format!("{error:#}"))
}

/// The version of a plugin: a short content hash of the component bytes.
pub fn content_version(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}
