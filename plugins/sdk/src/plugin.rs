//! [`Plugin`]: a stage's logic as [`stage_component!`](crate::stage_component) sees it, so the
//! same code runs in the component and in native tests ([`TestHost`](crate::testing::TestHost)).

use crate::{StageFailure, StageInput, StageOutput, State};

/// A stage: how it reads its config, which outputs it may produce and how it handles an event.
/// [`stage_component!`](crate::stage_component) implements it for the `Stage` type it defines.
pub trait Plugin {
    /// The parsed `config` table of the stage.
    type Config;

    /// The output names the stage may return, per input event type, or `None` when it does
    /// not say. The component reports them through the WIT `describe` export, and the host
    /// refuses the plugin when the stage's `outputs` table in pipeline.toml does not map one
    /// of those that concern the stage's inputs.
    const OUTPUTS: Option<&'static [OutputNames]>;

    /// Parses the stage's `config` table, given as one JSON object.
    ///
    /// # Errors
    /// A [`StageFailure`] naming the bad key; the component then rejects every event with it.
    fn parse_config(json: &str) -> Result<Self::Config, StageFailure>;

    /// Handles one event: the outputs to publish, or why there are none. `log` writes one
    /// line to the host log (level `info`).
    ///
    /// # Errors
    /// [`StageFailure::Reject`] when the event can never succeed, [`StageFailure::Retry`] when
    /// a later attempt may.
    fn handle(
        event: &StageInput,
        config: &Self::Config,
        state: &mut dyn State,
        log: &mut dyn FnMut(&str),
    ) -> Result<Vec<StageOutput>, StageFailure>;
}

/// The output names a stage may return for one kind of input (the WIT `output-names`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputNames {
    /// The input event type (`ce_type`) they answer, or `None` for every input.
    pub event_type: Option<&'static str>,
    /// The output names.
    pub names: &'static [&'static str],
}

/// Whether `declared` allows output `name` in answer to an input of type `event_type`: an
/// entry for every input or for that event type lists it.
#[must_use]
pub fn declares(declared: &[OutputNames], event_type: &str, name: &str) -> bool {
    declared
        .iter()
        .filter(|entry| entry.event_type.is_none_or(|t| t == event_type))
        .any(|entry| entry.names.contains(&name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_is_declared_for_every_input_or_for_its_event_type() {
        let declared = [
            OutputNames {
                event_type: None,
                names: &["notify"],
            },
            OutputNames {
                event_type: Some("A"),
                names: &["a"],
            },
        ];
        assert!(declares(&declared, "A", "a"));
        assert!(declares(&declared, "B", "notify"));
        assert!(!declares(&declared, "B", "a"), "declared for A only");
        assert!(!declares(&declared, "A", "b"));
        assert!(!declares(&[], "A", "a"));
    }
}
