//! The `reading` stage of the example sensor pipeline (`examples/sensors`) as a WebAssembly
//! component: [`logic`] behind the bindings glue (world `stage`).
//!
//! Build with `cargo build --release --target wasm32-wasip2` in `plugins/`.

pub mod logic;

stagehost_sdk::stage_component! {
    world: "stage",
    config: () = |_: &str| Ok(()),
    handle: |event, _config| logic::handle(event),
}
