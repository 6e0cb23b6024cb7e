//! The only `bindgen!` of the host: Rust bindings for the `stage` world in `wit/`.

#![allow(missing_docs)] // generated code; the WIT file documents every item

wasmtime::component::bindgen!({
    world: "stage",
    path: "../wit",
});

pub use exports::stagehost::pipeline::handler::{InputEvent, OutputEvent, StageError};
pub use stagehost::pipeline::log::Level;
pub use stagehost::pipeline::types::Header;
