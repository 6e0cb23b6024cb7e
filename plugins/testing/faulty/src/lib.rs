//! Test component (not a pipeline stage): a `stage` world component that misbehaves on
//! request, for the host's sandbox and hot-swap tests. The JSON payload's `"fault"` field
//! picks the misbehaviour (see [`logic`]); an event without one passes through unchanged.
//!
//! Build with `cargo build --release --target wasm32-wasip2 -p faulty` in `plugins/`
//! (it is not a default member): writes `faulty.wasm`.

pub mod logic;

stagehost_sdk::stage_component! {
    world: "stage",
    config: () = |_: &str| Ok(()),
    handle: |event, _config| logic::handle(event),
}
