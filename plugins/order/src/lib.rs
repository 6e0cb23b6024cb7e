//! The `order` stage as a WebAssembly component: WIT bindings glue around [`logic`].
//!
//! Build with `cargo build --release --target wasm32-wasip2` in `plugins/`.

pub mod logic;

use std::sync::OnceLock;

use bindings::exports::stagehost::pipeline::handler::Guest;
use bindings::stagehost::pipeline::config;
use bindings::stagehost::pipeline::types::{InputEvent, OutputEvent, StageError};
use stage_events::{StageFailure, StageOutput};

/// Bindings generated from `wit/stage.wit` (world `stage`).
mod bindings {
    wit_bindgen::generate!({ path: "../../wit", world: "stage" });
}

/// The exported component.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct Stage;

/// The parsed `config` table, read once per instance.
static CONFIG: OnceLock<Result<logic::Config, StageFailure>> = OnceLock::new();

impl Guest for Stage {
    fn handle(event: InputEvent) -> Result<Vec<OutputEvent>, StageError> {
        let config = CONFIG
            .get_or_init(|| logic::parse_config(&config::get_all()))
            .as_ref()
            .map_err(|e| to_wit_error(e.clone()))?;
        logic::handle(&event.payload, &event.id, config)
            .map(|outputs| outputs.into_iter().map(to_wit_output).collect())
            .map_err(to_wit_error)
    }
}

fn to_wit_output(out: StageOutput) -> OutputEvent {
    OutputEvent {
        output: out.output,
        key: out.key,
        payload: out.payload,
        headers: Vec::new(),
    }
}

fn to_wit_error(failure: StageFailure) -> StageError {
    match failure {
        StageFailure::Reject(m) => StageError::Reject(m),
        StageFailure::Retry(m) => StageError::Retry(m),
    }
}

// Exported only when building the component: the export names (`pkg:iface/fn@version`)
// are not valid symbol names for a native shared library, which `cargo test` also links.
#[cfg(target_arch = "wasm32")]
bindings::export!(Stage with_types_in bindings);
