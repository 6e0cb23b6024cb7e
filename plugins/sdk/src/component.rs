//! [`stage_component!`](crate::stage_component): the WebAssembly component glue of a stage
//! plugin, so that a plugin's `lib.rs` is a few lines.

/// Generates the component glue of a stage plugin around its pure logic.
///
/// Invoke it once, at the root of the plugin's `lib.rs` (a crate with
/// `crate-type = ["cdylib", "rlib"]` that depends on this SDK; it needs no WIT files and no
/// `wit-bindgen` of its own). It defines:
/// - `pub struct Stage`, implementing [`Plugin`](crate::Plugin) with the given config type,
///   output names and handle body, so native tests can run it with
///   [`TestHost`](crate::testing::TestHost);
/// - the WIT exports: `handler` (the config table is read once per instance with
///   `config::get-all` and parsed with the given function; a config error rejects every
///   event) and `describe` (the declared output names), exported only when building for
///   `wasm32` (the export names are not valid symbols of the native library `cargo test`
///   links).
///
/// Keys, in this order:
/// - `world`: `"stage"`, or `"stateful-stage"` for a stage that keeps keyed state. The
///   component imports the WIT `state` interface only in the second case;
/// - `outputs` (optional): every output name the stage may return, as a list
///   (`["packed", "notify"]`), or per input event type for a component that serves several
///   stages (`{ "OrderReceived" => ["pending"], "InventoryCommand" => ["result"] }`). The host
///   refuses the plugin at `stagehost check`, at start-up and on a hot swap when its stage's
///   `outputs` table does not map one of those that concern the stage's inputs. Without it the
///   host checks each output as it comes;
/// - `config`: the config type and the function (or closure) that parses the JSON object of
///   the `config` table, like [`parse_config`](crate::parse_config);
/// - `handle`: written like a closure whose parameters are bound to `event` (`&StageInput`),
///   `config` (`&Config`), then `state` (`&mut dyn State`, world `"stateful-stage"` only) and
///   optionally `log` (`&mut dyn FnMut(&str)`, one line to the host log at level `info`). The
///   body must evaluate to `Result<Vec<StageOutput>, StageFailure>`.
///
/// ```ignore
/// // A stage without state:
/// stagehost_sdk::stage_component! {
///     world: "stage",
///     outputs: ["packed"],
///     config: logic::Config = logic::parse_config,
///     handle: |event, config| logic::handle(&event.payload, &event.id, config),
/// }
/// // ... that also logs:
/// stagehost_sdk::stage_component! {
///     world: "stage",
///     outputs: ["delivered"],
///     config: logic::Config = logic::parse_config,
///     handle: |event, config, log| logic::handle(&event.payload, config, log),
/// }
/// // A stage with keyed state (optionally `|event, config, state, log|`):
/// stagehost_sdk::stage_component! {
///     world: "stateful-stage",
///     outputs: ["status"],
///     config: logic::Config = logic::parse_config,
///     handle: |event, config, state| logic::handle(event, config, state),
/// }
/// ```
#[macro_export]
macro_rules! stage_component {
    // ---- public forms: with or without `outputs` -----------------------------------------
    (world: $world:tt, outputs: [$($name:expr),* $(,)?], $($rest:tt)*) => {
        $crate::stage_component!(@outputs (::core::option::Option::Some(&[$crate::OutputNames {
                event_type: ::core::option::Option::None,
                names: &[$($name),*],
            }])),
            world: $world, $($rest)*);
    };
    (world: $world:tt, outputs: {$($event_type:expr => [$($name:expr),* $(,)?]),* $(,)?},
        $($rest:tt)*) => {
        $crate::stage_component!(@outputs (::core::option::Option::Some(&[$($crate::OutputNames {
                event_type: ::core::option::Option::Some($event_type),
                names: &[$($name),*],
            }),*])),
            world: $world, $($rest)*);
    };
    (world: $world:tt, $($rest:tt)*) => {
        $crate::stage_component!(@outputs (::core::option::Option::None), world: $world, $($rest)*);
    };

    // ---- the four handle shapes -----------------------------------------------------------
    (
        @outputs $outputs:tt,
        world: "stage",
        config: $config_ty:ty = $parse:expr,
        handle: |$event:ident, $config:ident| $body:expr $(,)?
    ) => {
        $crate::stage_component!(@plugin $outputs, $config_ty, $parse,
            |$event, $config, _state, _log| $body);
        $crate::stage_component!(@exports $config_ty, $crate::__private::NoState);
    };
    (
        @outputs $outputs:tt,
        world: "stage",
        config: $config_ty:ty = $parse:expr,
        handle: |$event:ident, $config:ident, $log:ident| $body:expr $(,)?
    ) => {
        $crate::stage_component!(@plugin $outputs, $config_ty, $parse,
            |$event, $config, _state, $log| $body);
        $crate::stage_component!(@exports $config_ty, $crate::__private::NoState);
    };
    (
        @outputs $outputs:tt,
        world: "stateful-stage",
        config: $config_ty:ty = $parse:expr,
        handle: |$event:ident, $config:ident, $state:ident| $body:expr $(,)?
    ) => {
        $crate::stage_component!(@plugin $outputs, $config_ty, $parse,
            |$event, $config, $state, _log| $body);
        $crate::stage_component!(@exports $config_ty, $crate::__private::WitState);
    };
    (
        @outputs $outputs:tt,
        world: "stateful-stage",
        config: $config_ty:ty = $parse:expr,
        handle: |$event:ident, $config:ident, $state:ident, $log:ident| $body:expr $(,)?
    ) => {
        $crate::stage_component!(@plugin $outputs, $config_ty, $parse,
            |$event, $config, $state, $log| $body);
        $crate::stage_component!(@exports $config_ty, $crate::__private::WitState);
    };

    // ---- internals ------------------------------------------------------------------------
    (@plugin ($outputs:expr), $config_ty:ty, $parse:expr,
        |$event:ident, $config:ident, $state:ident, $log:ident| $body:expr) => {
        /// The stage: its logic behind the SDK's [`Plugin`](stagehost_sdk::Plugin) trait, and
        /// the component's exports.
        #[derive(Debug, Clone, Copy, Default)]
        pub struct Stage;

        impl $crate::Plugin for Stage {
            type Config = $config_ty;

            const OUTPUTS: ::core::option::Option<&'static [$crate::OutputNames]> = $outputs;

            fn parse_config(
                json: &str,
            ) -> ::core::result::Result<$config_ty, $crate::StageFailure> {
                ($parse)(json)
            }

            #[allow(unused_variables)]
            fn handle(
                event: &$crate::StageInput,
                config: &$config_ty,
                state: &mut dyn $crate::State,
                log: &mut dyn ::core::ops::FnMut(&str),
            ) -> ::core::result::Result<
                ::std::vec::Vec<$crate::StageOutput>,
                $crate::StageFailure,
            > {
                let $event = event;
                let $config = config;
                let $state = state;
                let $log = log;
                $body
            }
        }
    };
    (@exports $config_ty:ty, $state:path) => {
        impl $crate::bindings::exports::stagehost::pipeline::handler::Guest for Stage {
            fn handle(
                event: $crate::bindings::stagehost::pipeline::types::InputEvent,
            ) -> ::core::result::Result<
                ::std::vec::Vec<$crate::bindings::stagehost::pipeline::types::OutputEvent>,
                $crate::bindings::stagehost::pipeline::types::StageError,
            > {
                /// The parsed `config` table, read once per instance.
                static CONFIG: ::std::sync::OnceLock<
                    ::core::result::Result<$config_ty, $crate::StageFailure>,
                > = ::std::sync::OnceLock::new();
                $crate::__private::handle::<Stage>(&CONFIG, event, &mut $state)
            }
        }

        impl $crate::bindings::exports::stagehost::pipeline::describe::Guest for Stage {
            fn describe() -> $crate::bindings::exports::stagehost::pipeline::describe::StageDescription {
                $crate::__private::describe::<Stage>()
            }
        }

        // Exported only when building the component: the export names
        // (`pkg:iface/fn@version`) are not valid symbol names for a native shared library,
        // which `cargo test` also links.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::export!(Stage with_types_in $crate::bindings);
    };
}
