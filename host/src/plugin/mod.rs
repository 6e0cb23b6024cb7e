//! Stage plugins: WebAssembly components run in a sandbox (no files, network or environment
//! unless granted), with per-event deadlines, memory limits and optional fuel, and hot-swapped
//! between events.

mod bindings;
mod engine;
mod host_state;
mod instance;
mod outputs;
mod slot;
mod ticker;

pub use bindings::{Header, InputEvent, OutputEvent, OutputNames, StageDescription};
pub use engine::{LoadedPlugin, PluginEngine, PluginError, content_version};
pub use instance::{CallError, InstanceSettings, StageInstance};
pub use outputs::OutputContract;
pub use slot::{
    Deployment, PluggedInstance, PluginSlot, SMOKE_EVENT_ID, SlotReport, SwapError, SwapOutcome,
};

/// `(module (func (export "spin") (loop (br 0))))`, encoded: a core module that runs until its
/// deadline, for the deadline tests.
#[cfg(test)]
const SPIN_MODULE: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
    0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // types: () -> ()
    0x03, 0x02, 0x01, 0x00, // functions: one of type 0
    0x07, 0x08, 0x01, 0x04, b's', b'p', b'i', b'n', 0x00, 0x00, // export "spin"
    0x0a, 0x09, 0x01, 0x07, 0x00, 0x03, 0x40, 0x0c, 0x00, 0x0b, 0x0b, // loop { br 0 }
];
