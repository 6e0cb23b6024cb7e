//! Test component (not a pipeline stage): a `stage` world component that returns every event
//! unchanged, as one output named [`OUTPUT`] with the input's key and payload. It never parses
//! the payload, so a call to it measures the bare cost of a plugin call (the host's
//! marshalling into and out of the component), apart from any business logic; the host's
//! `hot_paths` benchmarks compare it with the warehouse stage.
//!
//! Build with `cargo build --release --target wasm32-wasip2 -p identity` in `plugins/`
//! (it is not a default member): writes `identity.wasm`.

use stagehost_sdk::{StageFailure, StageInput, StageOutput};

/// The name of the one output of every call.
pub const OUTPUT: &str = "out";

stagehost_sdk::stage_component! {
    world: "stage",
    outputs: [OUTPUT],
    config: () = |_: &str| Ok(()),
    handle: |event, _config| pass_through(event),
}

/// Returns `event` as one output named [`OUTPUT`], with its key and payload unchanged.
///
/// # Errors
/// Never; the `Result` is the shape a stage's logic returns.
fn pass_through(event: &StageInput) -> Result<Vec<StageOutput>, StageFailure> {
    Ok(vec![StageOutput {
        output: OUTPUT.to_owned(),
        key: event.key.clone(),
        payload: event.payload.clone(),
    }])
}
