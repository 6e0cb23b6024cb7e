//! The `order-status` stage as a WebAssembly component: [`logic`] behind the bindings glue
//! of [`stagehost_sdk::stage_component!`] (world `stateful-stage`).
//!
//! Build with `cargo build --release --target wasm32-wasip2` in `plugins/`; the component is
//! `plugins/target/wasm32-wasip2/release/order_status.wasm`.

pub mod logic;

stagehost_sdk::stage_component! {
    world: "stateful-stage",
    outputs: [logic::OUTPUT_STATUS],
    config: logic::Config = logic::parse_config,
    handle: |event, config, state| logic::handle(event, config, state),
}
