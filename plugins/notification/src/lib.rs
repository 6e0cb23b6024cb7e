//! The `notification` stage as a WebAssembly component: [`logic`] behind the bindings glue
//! of [`stagehost_sdk::stage_component!`] (world `stage`); delivery lines go to the host log
//! at level `info`.
//!
//! Build with `cargo build --release --target wasm32-wasip2` in `plugins/`.

pub mod logic;

stagehost_sdk::stage_component! {
    world: "stage",
    outputs: [logic::OUTPUT_DELIVERED],
    config: logic::Config = logic::parse_config,
    handle: |event, config, log| logic::handle(&event.payload, &event.id, config, log),
}
