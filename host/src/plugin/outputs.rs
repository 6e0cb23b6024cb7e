//! Checking the output names a plugin declares (its optional `describe` export) against what
//! its stage's `outputs` table maps, so a plugin that would send events nowhere is refused
//! before it handles any (`stagehost check`, start-up and hot swaps).

use std::collections::BTreeSet;

use super::bindings::StageDescription;

/// What a plugin's declared outputs are checked against: the stage's mapped output names and
/// the event types of its inputs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputContract {
    /// The names the stage's `outputs` table maps.
    pub mapped: BTreeSet<String>,
    /// The event types (`ce_type`) of the stage's inputs: a declaration for another event type
    /// concerns another stage that the same component serves.
    pub input_types: BTreeSet<String>,
}

impl OutputContract {
    /// The declared names that concern this stage (declared for every input or for one of its
    /// input event types) and that it does not map, sorted; empty when the plugin declares
    /// nothing.
    pub fn unmapped(&self, description: &StageDescription) -> Vec<String> {
        let Some(declared) = &description.outputs else {
            return Vec::new();
        };
        declared
            .iter()
            .filter(|entry| {
                entry
                    .event_type
                    .as_ref()
                    .is_none_or(|event_type| self.input_types.contains(event_type))
            })
            .flat_map(|entry| entry.names.iter())
            .filter(|name| !self.mapped.contains(*name))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::bindings::OutputNames;
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn entry(event_type: Option<&str>, names: &[&str]) -> OutputNames {
        OutputNames {
            event_type: event_type.map(str::to_string),
            names: names.iter().map(|n| n.to_string()).collect(),
        }
    }

    fn contract() -> OutputContract {
        OutputContract {
            mapped: set(&["packed", "notify"]),
            input_types: set(&["ItemChecked"]),
        }
    }

    #[test]
    fn a_plugin_that_declares_nothing_passes() {
        let description = StageDescription { outputs: None };
        assert!(contract().unmapped(&description).is_empty());
    }

    #[test]
    fn names_for_every_input_and_for_the_stage_input_types_must_be_mapped() {
        let description = StageDescription {
            outputs: Some(vec![
                entry(None, &["packed", "audit"]),
                entry(Some("ItemChecked"), &["notify", "zebra", "audit"]),
                entry(Some("StockChange"), &["ledger"]),
            ]),
        };
        assert_eq!(
            contract().unmapped(&description),
            ["audit", "zebra"],
            "sorted, once each; 'ledger' answers another stage's input"
        );
    }

    #[test]
    fn declaring_fewer_outputs_than_mapped_is_fine() {
        let description = StageDescription {
            outputs: Some(vec![entry(None, &["packed"]), entry(None, &[])]),
        };
        assert!(contract().unmapped(&description).is_empty());
    }
}
