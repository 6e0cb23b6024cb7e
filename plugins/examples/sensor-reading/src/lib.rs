//! The `reading` stage of the example sensor pipeline (`examples/sensors`) as a WebAssembly
//! component: [`logic`] behind the bindings glue (world `stage`).
//!
//! Build with `cargo build --release --target wasm32-wasip2` in `plugins/`.

pub mod logic;

stage_events::stage_component! {
    wit: "../../../wit",
    world: "stage",
    config: () = |_: &str| Ok(()),
    handle: |event, _config| logic::handle(event),
}
