//! The `warehouse` stage as a WebAssembly component: [`logic`] behind the bindings glue of
//! [`stage_events::stage_component!`] (world `stage`).
//!
//! Build with `cargo build --release --target wasm32-wasip2` in `plugins/`.

pub mod logic;

stage_events::stage_component! {
    world: "stage",
    config: logic::Config = logic::parse_config,
    handle: |event, config| logic::handle(&event.payload, &event.id, config),
}
