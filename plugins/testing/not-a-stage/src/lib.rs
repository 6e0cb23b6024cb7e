//! Test component (not a pipeline stage): a `wasm32-wasip2` library that exports one plain
//! function and no `stagehost:pipeline/handler`, so the host must refuse to load it as a
//! stage.
//!
//! Build with `cargo build --release --target wasm32-wasip2 -p not-a-stage` in `plugins/`
//! (it is not a default member): writes `not_a_stage.wasm`.

/// Adds two numbers (wrapping): the component's only export.
#[unsafe(no_mangle)]
pub extern "C" fn add(a: i32, b: i32) -> i32 {
    a.wrapping_add(b)
}
