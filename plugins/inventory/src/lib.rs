//! The `inventory` component as a WebAssembly component: [`logic`] behind the bindings glue
//! of [`stagehost_sdk::stage_component!`] (world `stateful-stage`). One component serves the
//! three stages of the inventory saga; see [`logic`].
//!
//! Build with `cargo build --release --target wasm32-wasip2` in `plugins/`.

pub mod logic;

stagehost_sdk::stage_component! {
    world: "stateful-stage",
    outputs: {
        logic::EVENT_ORDER_RECEIVED => [logic::OUTPUT_PENDING, logic::OUTPUT_RESERVE],
        logic::EVENT_INVENTORY_COMMAND => [logic::OUTPUT_RESULT, logic::OUTPUT_LEDGER],
        logic::EVENT_INVENTORY_RESULT => [logic::OUTPUT_CONFIRMED, logic::OUTPUT_NOTIFY, logic::OUTPUT_RELEASE],
        logic::http::EVENT_RESTOCK_REQUEST => [logic::http::OUTPUT_COMMAND],
        logic::http::EVENT_STOCK_QUERY => [logic::http::OUTPUT_ANSWER],
    },
    config: logic::Config = logic::parse_config,
    handle: |event, config, state| logic::handle(event, config, state),
}
