//! The only `bindgen!` of the host: Rust bindings for the `stateful-stage` world in `wit/`
//! (a superset of `stage`, so components of either world link).

#![allow(missing_docs)] // generated code; the WIT file documents every item

wasmtime::component::bindgen!({
    world: "stateful-stage",
    path: "../wit",
});

pub use StatefulStage as Stage;
pub use StatefulStagePre as StagePre;
pub use exports::stagehost::pipeline::handler::{InputEvent, OutputEvent, StageError};
pub use stagehost::pipeline::log::Level;
pub use stagehost::pipeline::types::Header;
