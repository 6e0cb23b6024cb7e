//! Test component (not a pipeline stage): a `stage` world component that instantiates fine
//! but panics, and so traps, on every call. A hot swap to it must be refused, because its
//! smoke call fails.
//!
//! Build with `cargo build --release --target wasm32-wasip2 -p always-trap` in `plugins/`
//! (it is not a default member): writes `always_trap.wasm`.

use stagehost_sdk::{StageFailure, StageOutput};

/// The panic message of every call.
pub const MESSAGE: &str = "always-trap: this component fails every call";

stagehost_sdk::stage_component! {
    world: "stage",
    outputs: [],
    config: () = |_: &str| Ok(()),
    handle: |_event, _config| fail(),
}

/// Handles an event by panicking (a trap: plugins are built with `panic = "abort"`).
///
/// # Panics
/// Always, with [`MESSAGE`].
fn fail() -> Result<Vec<StageOutput>, StageFailure> {
    panic!("{MESSAGE}")
}
