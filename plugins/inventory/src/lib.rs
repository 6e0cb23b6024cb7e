//! The `inventory` component as a WebAssembly component: [`logic`] behind the bindings glue
//! of [`stage_events::stage_component!`] (world `stateful-stage`). One component serves the
//! three stages of the inventory saga; see [`logic`].
//!
//! Build with `cargo build --release --target wasm32-wasip2` in `plugins/`.

pub mod logic;

stage_events::stage_component! {
    world: "stateful-stage",
    config: logic::Config = logic::parse_config,
    handle: |event, config, state| logic::handle(event, config, state),
}
