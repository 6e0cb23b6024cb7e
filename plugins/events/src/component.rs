//! [`stage_component!`](crate::stage_component): the WebAssembly component glue of a stage
//! plugin, so that a plugin's `lib.rs` is a few lines.

/// Generates the bindings glue of a stage plugin around its pure logic.
///
/// Invoke it once, at the root of the plugin's `lib.rs`. It expands to:
/// - `mod bindings { wit_bindgen::generate!({ path: "../../wit", world: ... }) }` (the crate
///   must depend on `wit-bindgen` and live in `plugins/<crate>/`; a crate that lives deeper,
///   like the test components in `plugins/testing/<crate>/`, starts the invocation with
///   `wit: "../../../wit",`, the path of `wit/` relative to its manifest);
/// - a `static` holding the parsed `config` table, read once per instance with
///   `config::get-all` and the given parse function (a config error rejects every event);
/// - the `handler` `Guest` impl: it turns the WIT `input-event` into a
///   [`StageInput`](crate::StageInput), runs the `handle` body, and maps
///   [`StageOutput`](crate::StageOutput) to `output-event` (no extra headers) and
///   [`StageFailure`](crate::StageFailure) to `stage-error`;
/// - `export!`, only when building for `wasm32` (the export names are not valid symbols
///   of the native library that `cargo test` links).
///
/// The `handle` body is written like a closure whose parameters are bound to:
/// - `event`: `&StageInput`;
/// - `config`: `&Config` (the type given after `config:`);
/// - `log` (optional, last): `&mut dyn FnMut(&str)`, writing one line to the host log at
///   level `info`;
/// - `state` (world `"stateful-stage"` only, third): `&mut dyn State`, backed by the WIT
///   `state` import.
///
/// The body must evaluate to `Result<Vec<StageOutput>, StageFailure>`. It names the items
/// `bindings`, `Stage`, `CONFIG` and (stateful) `WitState` in the calling module.
///
/// ```ignore
/// // A stage without state:
/// stage_events::stage_component! {
///     world: "stage",
///     config: logic::Config = logic::parse_config,
///     handle: |event, config| logic::handle(&event.payload, &event.id, config),
/// }
/// // ... that also logs:
/// stage_events::stage_component! {
///     world: "stage",
///     config: logic::Config = logic::parse_config,
///     handle: |event, config, log| logic::handle(&event.payload, &event.id, config, log),
/// }
/// // A stage with keyed state (optionally `|event, config, state, log|`):
/// stage_events::stage_component! {
///     world: "stateful-stage",
///     config: logic::Config = logic::parse_config,
///     handle: |event, config, state| logic::handle(event, config, state),
/// }
/// ```
#[macro_export]
macro_rules! stage_component {
    // ---- public forms ---------------------------------------------------------------------
    // Without `wit:`, the crate lives in `plugins/<crate>/`.
    (world: $($rest:tt)*) => {
        $crate::stage_component!(wit: "../../wit", world: $($rest)*);
    };
    (
        wit: $wit:tt,
        world: "stage",
        config: $config_ty:ty = $parse:expr,
        handle: |$event:ident, $config:ident| $body:expr $(,)?
    ) => {
        $crate::stage_component!(@bindings $wit, "stage");
        $crate::stage_component!(@guest stateless, $config_ty, $parse,
            $event, $config, _state, _log, $body);
    };
    (
        wit: $wit:tt,
        world: "stage",
        config: $config_ty:ty = $parse:expr,
        handle: |$event:ident, $config:ident, $log:ident| $body:expr $(,)?
    ) => {
        $crate::stage_component!(@bindings $wit, "stage");
        $crate::stage_component!(@guest stateless, $config_ty, $parse,
            $event, $config, _state, $log, $body);
    };
    (
        wit: $wit:tt,
        world: "stateful-stage",
        config: $config_ty:ty = $parse:expr,
        handle: |$event:ident, $config:ident, $state:ident| $body:expr $(,)?
    ) => {
        $crate::stage_component!(@bindings $wit, "stateful-stage");
        $crate::stage_component!(@guest stateful, $config_ty, $parse,
            $event, $config, $state, _log, $body);
    };
    (
        wit: $wit:tt,
        world: "stateful-stage",
        config: $config_ty:ty = $parse:expr,
        handle: |$event:ident, $config:ident, $state:ident, $log:ident| $body:expr $(,)?
    ) => {
        $crate::stage_component!(@bindings $wit, "stateful-stage");
        $crate::stage_component!(@guest stateful, $config_ty, $parse,
            $event, $config, $state, $log, $body);
    };

    // ---- internals ------------------------------------------------------------------------
    // The world names are written out, and the `wit` path is forwarded as a `tt` (not as an
    // opaque `literal` fragment), so that `generate!` sees plain string literals.
    (@bindings $wit:tt, "stage") => {
        /// Bindings generated from `wit/stage.wit` (world `stage`).
        mod bindings {
            ::wit_bindgen::generate!({ path: $wit, world: "stage" });
        }
    };
    (@bindings $wit:tt, "stateful-stage") => {
        /// Bindings generated from `wit/stage.wit` (world `stateful-stage`).
        mod bindings {
            ::wit_bindgen::generate!({ path: $wit, world: "stateful-stage" });
        }

        /// The stage's keyed state, backed by the WIT `state` import.
        struct WitState;

        impl $crate::State for WitState {
            fn get(&self, key: &str) -> ::std::option::Option<::std::vec::Vec<u8>> {
                bindings::stagehost::pipeline::state::get(key)
            }

            fn set(&mut self, key: &str, value: ::std::vec::Vec<u8>) {
                bindings::stagehost::pipeline::state::set(key, &value);
            }

            fn delete(&mut self, key: &str) {
                bindings::stagehost::pipeline::state::delete(key);
            }
        }
    };
    (@state stateless, $state:ident) => {
        let $state = ();
    };
    (@state stateful, $state:ident) => {
        let mut wit_state = WitState;
        let $state: &mut dyn $crate::State = &mut wit_state;
    };
    (@guest $mode:ident, $config_ty:ty, $parse:expr,
        $event:ident, $config:ident, $state:ident, $log:ident, $body:expr) => {
        /// The exported component.
        #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
        struct Stage;

        /// The parsed `config` table, read once per instance.
        static CONFIG: ::std::sync::OnceLock<
            ::std::result::Result<$config_ty, $crate::StageFailure>,
        > = ::std::sync::OnceLock::new();

        impl bindings::exports::stagehost::pipeline::handler::Guest for Stage {
            fn handle(
                event: bindings::stagehost::pipeline::types::InputEvent,
            ) -> ::std::result::Result<
                ::std::vec::Vec<bindings::stagehost::pipeline::types::OutputEvent>,
                bindings::stagehost::pipeline::types::StageError,
            > {
                use bindings::stagehost::pipeline::types::{OutputEvent, StageError};

                fn to_wit_error(failure: $crate::StageFailure) -> StageError {
                    match failure {
                        $crate::StageFailure::Reject(m) => StageError::Reject(m),
                        $crate::StageFailure::Retry(m) => StageError::Retry(m),
                    }
                }

                let config = CONFIG
                    .get_or_init(|| ($parse)(&bindings::stagehost::pipeline::config::get_all()))
                    .as_ref()
                    .map_err(|e| to_wit_error(e.clone()))?;
                let input = $crate::StageInput {
                    id: event.id,
                    event_type: event.event_type,
                    key: event.key,
                    payload: event.payload,
                    headers: event.headers.into_iter().map(|h| (h.name, h.value)).collect(),
                    topic: event.topic,
                };
                let mut write_log = |line: &str| {
                    bindings::stagehost::pipeline::log::write(
                        bindings::stagehost::pipeline::log::Level::Info,
                        line,
                    );
                };
                let $log: &mut dyn FnMut(&str) = &mut write_log;
                $crate::stage_component!(@state $mode, $state);
                let $event: &$crate::StageInput = &input;
                let $config: &$config_ty = config;
                let outputs: ::std::result::Result<
                    ::std::vec::Vec<$crate::StageOutput>,
                    $crate::StageFailure,
                > = $body;
                outputs
                    .map(|outputs| {
                        outputs
                            .into_iter()
                            .map(|out| OutputEvent {
                                output: out.output,
                                key: out.key,
                                payload: out.payload,
                                headers: ::std::vec::Vec::new(),
                            })
                            .collect()
                    })
                    .map_err(to_wit_error)
            }
        }

        // Exported only when building the component: the export names
        // (`pkg:iface/fn@version`) are not valid symbol names for a native shared library,
        // which `cargo test` also links.
        #[cfg(target_arch = "wasm32")]
        bindings::export!(Stage with_types_in bindings);
    };
}
