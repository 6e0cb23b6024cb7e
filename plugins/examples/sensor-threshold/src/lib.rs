//! The `threshold` stage of the example sensor pipeline (`examples/sensors`) as a WebAssembly
//! component: [`logic`] behind the bindings glue (world `stateful-stage`).
//!
//! Build with `cargo build --release --target wasm32-wasip2` in `plugins/`.

pub mod logic;

stagehost_sdk::stage_component! {
    world: "stateful-stage",
    config: logic::Config = logic::parse_config,
    handle: |event, config, state| logic::handle(event, config, state),
}
