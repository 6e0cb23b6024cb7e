//! The stagehost plugin SDK: write a pipeline stage in Rust and build it as a WebAssembly
//! component that the stagehost host runs.
//!
//! # Layout
//! - `wit/stage.wit` (shipped in this crate): the contract between the host and a stage. The
//!   bindings are generated from it here, so a plugin needs no WIT files of its own; the host
//!   reads the same file.
//! - [`stage_component!`]: the glue macro. A plugin's `lib.rs` names its config type, its
//!   output names and a handle expression; the macro writes the component exports.
//! - [`StageInput`], [`StageOutput`], [`StageFailure`] ([`stage`]): what a stage's logic takes
//!   and returns, with [`parse_payload`] and [`parse_config`], which name the offending field.
//! - [`State`] ([`state`]): keyed state, with [`MemoryState`] for native tests.
//! - [`Plugin`] ([`plugin`]): what the macro implements; [`testing::TestHost`] runs it natively,
//!   with a config, fake state and captured log lines, no WebAssembly involved.
//!
//! ```ignore
//! // src/lib.rs of a plugin (crate-type = ["cdylib", "rlib"]), built with
//! // `cargo build --release --target wasm32-wasip2`:
//! stagehost_sdk::stage_component! {
//!     world: "stage",
//!     outputs: ["packed"],
//!     config: logic::Config = stagehost_sdk::parse_config,
//!     handle: |event, config| logic::handle(event, config),
//! }
//! ```
#![deny(unsafe_code)]

mod component;
mod glue;
pub mod plugin;
pub mod stage;
pub mod state;
pub mod testing;

/// Bindings generated from `wit/stage.wit` (world `described-stateful-stage`, the superset of
/// every stage world: a component imports only the interfaces it calls). Used by
/// [`stage_component!`]; a plugin does not need to name it.
#[doc(hidden)]
#[allow(missing_docs, unsafe_code, unused_qualifications, clippy::all)] // generated code
pub mod bindings {
    ::wit_bindgen::generate!({
        path: "wit",
        world: "described-stateful-stage",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "::stagehost_sdk::bindings",
    });
}

/// What [`stage_component!`] expands to refers to these; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::glue::{NoState, WitState, describe, handle};
}

pub use plugin::{OutputNames, Plugin};
pub use stage::{StageFailure, StageInput, StageOutput, parse_config, parse_payload};
pub use state::{MemoryState, State};
