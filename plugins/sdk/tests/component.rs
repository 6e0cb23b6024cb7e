//! The glue macro, expanded natively: every handle shape compiles, and the `Stage` it defines
//! runs in a [`TestHost`] with the declared outputs, config, state and log it was given.

use stagehost_sdk::testing::TestHost;
use stagehost_sdk::{OutputNames, Plugin, StageFailure, StageInput, StageOutput, State};

/// A stage of world `stage` that declares its outputs and logs.
mod echo {
    use super::*;

    stagehost_sdk::stage_component! {
        world: "stage",
        outputs: ["echoed", "empty"],
        config: String = |json: &str| stagehost_sdk::parse_config::<serde_json::Value>(json)
            .map(|v| v["prefix"].as_str().unwrap_or_default().to_owned()),
        handle: |event, prefix, log| {
            log(&format!("echo {}", event.id));
            let name = if event.payload.is_empty() { "empty" } else { "echoed" };
            Ok(vec![StageOutput {
                output: name.to_owned(),
                key: None,
                payload: format!("{prefix}{}", event.payload),
            }])
        },
    }
}

/// A stage of world `stateful-stage` that declares its outputs per input event type.
mod tally {
    use super::*;

    stagehost_sdk::stage_component! {
        world: "stateful-stage",
        outputs: { "Counted" => ["count"], "Other" => ["other"] },
        config: () = |_: &str| Ok(()),
        handle: |event, _config, state| count(event, state),
    }

    fn count(event: &StageInput, state: &mut dyn State) -> Result<Vec<StageOutput>, StageFailure> {
        let n = state.get("n").map_or(0, |v| v.len()) + 1;
        state.set("n", vec![1; n]);
        StageOutput::json("count", &event.id, &n).map(|out| vec![out])
    }
}

#[test]
fn a_stateless_stage_declares_its_outputs_and_logs() {
    assert_eq!(
        <echo::Stage as Plugin>::OUTPUTS,
        Some(
            &[OutputNames {
                event_type: None,
                names: &["echoed", "empty"]
            }][..]
        )
    );
    let mut host = TestHost::with_config(r#"{"prefix":">"}"#);
    let out = host
        .handle::<echo::Stage>(&StageInput::new("e1", "T", None, "x"))
        .expect("echoes");
    assert_eq!(
        (out[0].output.as_str(), out[0].payload.as_str()),
        ("echoed", ">x")
    );
    assert_eq!(host.logs, ["echo e1"]);
    assert!(host.state.is_empty());
}

#[test]
fn a_stateful_stage_declares_outputs_per_event_type_and_keeps_state() {
    let declared = <tally::Stage as Plugin>::OUTPUTS.expect("declared");
    assert_eq!(declared.len(), 2);
    assert_eq!(
        (declared[1].event_type, declared[1].names),
        (Some("Other"), &["other"][..])
    );
    let mut host = TestHost::new();
    for expected in ["1", "2"] {
        let out = host
            .handle::<tally::Stage>(&StageInput::new("e", "Counted", None, "{}"))
            .expect("counts");
        assert_eq!(out[0].payload, expected);
    }
    assert_eq!(host.state.get("n").map(|v| v.len()), Some(2));
}

/// A stage that does not declare its outputs.
mod quiet {
    stagehost_sdk::stage_component! {
        world: "stage",
        config: () = |_: &str| Ok(()),
        handle: |_event, _config| Ok(vec![]),
    }
}

#[test]
fn a_stage_without_outputs_declares_none() {
    assert_eq!(<quiet::Stage as Plugin>::OUTPUTS, None);
}

#[test]
#[should_panic(expected = "returned output 'count' for a Other event, which it does not declare")]
fn an_output_declared_for_another_event_type_fails_the_test() {
    let _ = TestHost::new().handle::<tally::Stage>(&StageInput::new("e", "Other", None, "{}"));
}
