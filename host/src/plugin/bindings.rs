//! The only `bindgen!` of the host: Rust bindings for the `described-stateful-stage` world of
//! the WIT that ships in the plugin SDK (`plugins/sdk/wit/`), the superset of every stage world.
//! Components of any older world link too: the host instantiates through the `handler`
//! export's indices and looks the optional `describe` export up on its own (see `engine`).

#![allow(missing_docs)] // generated code; the WIT file documents every item

wasmtime::component::bindgen!({
    world: "described-stateful-stage",
    path: "../plugins/sdk/wit",
});

pub use DescribedStatefulStage as Stage;
pub use exports::stagehost::pipeline::describe::{
    Guest as DescribeExport, GuestIndices as DescribeIndices, OutputNames, StageDescription,
};
pub use exports::stagehost::pipeline::handler::{
    Guest as HandlerExport, GuestIndices as HandlerIndices, InputEvent, OutputEvent, StageError,
};
pub use stagehost::pipeline::log::Level;
pub use stagehost::pipeline::types::Header;
