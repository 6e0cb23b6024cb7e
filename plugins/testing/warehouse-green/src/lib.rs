//! Test component (not a pipeline stage of its own): the `warehouse` stage's logic with the
//! stamp `"green"` built in, whatever the stage config says (its other keys, like
//! `warehouse_id`, still apply). Two builds that differ only in code, for hot-swap tests.
//!
//! Build with `cargo build --release --target wasm32-wasip2 -p warehouse-green` in
//! `plugins/` (it is not a default member): writes `warehouse_green.wasm`.

/// The warehouse stage's logic, compiled from its source file (see Cargo.toml for why).
#[path = "../../../warehouse/src/logic.rs"]
pub mod logic;

use logic::Config;

stagehost_sdk::stage_component! {
    world: "stage",
    outputs: [logic::OUTPUT_PACKED, logic::OUTPUT_NOTIFY],
    config: Config = |json: &str| logic::parse_config(json).map(|config| Config {
        stamp: Some("green".to_owned()),
        ..config
    }),
    handle: |event, config| logic::handle(&event.payload, &event.id, config),
}
