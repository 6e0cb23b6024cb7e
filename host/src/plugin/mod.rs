//! Stage plugins: WebAssembly components run in a sandbox (no files, network or environment),
//! with per-event deadlines and memory limits.

mod bindings;
mod engine;
mod host_state;
mod instance;

pub use bindings::{Header, InputEvent, OutputEvent};
pub use engine::{LoadedPlugin, PluginEngine, PluginError, content_version};
pub use instance::{CallError, InstanceSettings, StageInstance};
