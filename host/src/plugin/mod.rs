//! Stage plugins: WebAssembly components run in a sandbox (no files, network or environment
//! unless granted), with per-event deadlines, memory limits and optional fuel, and hot-swapped
//! between events.

mod bindings;
mod engine;
mod host_state;
mod instance;
mod outputs;
mod slot;
#[cfg(test)]
mod test_modules;
mod ticker;

pub use bindings::{Header, InputEvent, OutputEvent, OutputNames, StageDescription};
pub use engine::{LoadedPlugin, PluginEngine, PluginError, content_version};
pub use instance::{CallError, InstanceSettings, StageInstance};
pub use outputs::OutputContract;
pub use slot::{
    Deployment, PluggedInstance, PluginSlot, SMOKE_EVENT_ID, SlotReport, SwapError, SwapOutcome,
};
