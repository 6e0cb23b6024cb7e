//! Running a stage natively in tests: [`TestHost`] plays the host's part (the config table,
//! keyed state, the log) around a [`Plugin`], without WebAssembly.
//!
//! ```ignore
//! use stagehost_sdk::{StageInput, testing::TestHost};
//!
//! let mut host = TestHost::with_config(r#"{"warehouse_id":"w1"}"#);
//! let outputs = host.handle::<warehouse::Stage>(&StageInput::new("e1", "OrderConfirmed", Some("o1"), payload))?;
//! assert_eq!(outputs[0].output, "packed");
//! ```

use crate::plugin::declares;
use crate::{MemoryState, Plugin, StageFailure, StageInput, StageOutput};

/// The host's part in a native test: the stage's config (as JSON), its keyed state and the
/// lines it logged. State and log accumulate over calls, like one partition of a live stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestHost {
    /// The stage's `config` table as one JSON object.
    pub config: String,
    /// The stage's keyed state, as later calls see it (writes of a failed call are discarded,
    /// as the host does).
    pub state: MemoryState,
    /// Every line the stage logged, oldest first.
    pub logs: Vec<String>,
}

impl Default for TestHost {
    fn default() -> Self {
        Self::with_config("{}")
    }
}

impl TestHost {
    /// A host with an empty config table and empty state.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A host whose stage has the `config` table given as a JSON object.
    #[must_use]
    pub fn with_config(config: impl Into<String>) -> Self {
        Self {
            config: config.into(),
            state: MemoryState::new(),
            logs: Vec::new(),
        }
    }

    /// Handles `event` with stage `P`, as the host would: parses the config (a config error
    /// fails the call), runs the handler with this host's state and log, and keeps the state
    /// writes only if the call succeeds.
    ///
    /// # Errors
    /// The config's or the stage's [`StageFailure`].
    ///
    /// # Panics
    /// When the stage returns an output name it does not declare in `P::OUTPUTS` for the
    /// event's type: the host checks a stage's mapping against the declared names only, so
    /// the test fails with the name.
    pub fn handle<P: Plugin>(
        &mut self,
        event: &StageInput,
    ) -> Result<Vec<StageOutput>, StageFailure> {
        let config = P::parse_config(&self.config)?;
        let mut state = self.state.clone();
        let logs = &mut self.logs;
        let mut log = |line: &str| logs.push(line.to_owned());
        let outputs = P::handle(event, &config, &mut state, &mut log)?;
        if let Some(declared) = P::OUTPUTS {
            for output in &outputs {
                assert!(
                    declares(declared, &event.event_type, &output.output),
                    "the stage returned output '{}' for a {} event, which it does not declare ({declared:?}): add it to `outputs` in stage_component!",
                    output.output,
                    event.event_type
                );
            }
        }
        self.state = state;
        Ok(outputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::OutputNames;
    use crate::{State, parse_config};

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Config {
        #[serde(default)]
        fail: bool,
    }

    /// Counts events per key in state, logs each count and fails on request.
    struct Counter;

    impl Plugin for Counter {
        type Config = Config;
        const OUTPUTS: Option<&'static [OutputNames]> = Some(&[OutputNames {
            event_type: None,
            names: &["counted"],
        }]);

        fn parse_config(json: &str) -> Result<Config, StageFailure> {
            parse_config(json)
        }

        fn handle(
            event: &StageInput,
            config: &Config,
            state: &mut dyn State,
            log: &mut dyn FnMut(&str),
        ) -> Result<Vec<StageOutput>, StageFailure> {
            let key = event.key.clone().unwrap_or_default();
            let count = state.get(&key).map_or(0, |v| v.len()) + 1;
            state.set(&key, vec![0; count]);
            log(&format!("{key}: {count}"));
            if config.fail || event.payload == "fail" {
                return Err(StageFailure::Retry("asked to fail".into()));
            }
            let output = if event.payload == "undeclared" {
                "other"
            } else {
                "counted"
            };
            StageOutput::json(output, &key, &count).map(|out| vec![out])
        }
    }

    fn event(key: &str, payload: &str) -> StageInput {
        StageInput::new("e", "T", Some(key), payload)
    }

    #[test]
    fn state_and_logs_carry_over_calls_and_failed_calls_keep_no_writes() {
        let mut host = TestHost::new();
        let first = host.handle::<Counter>(&event("a", "{}")).expect("first");
        assert_eq!(first[0].payload, "1");
        let second = host.handle::<Counter>(&event("a", "{}")).expect("second");
        assert_eq!(second[0].payload, "2");
        let failed = host.handle::<Counter>(&event("a", "fail"));
        assert_eq!(failed, Err(StageFailure::Retry("asked to fail".into())));
        assert_eq!(
            host.state.get("a").map(|v| v.len()),
            Some(2),
            "the failed call's write is discarded"
        );
        assert_eq!(host.logs, ["a: 1", "a: 2", "a: 3"]);
    }

    #[test]
    fn the_config_is_parsed_like_the_component_does() {
        let mut host = TestHost::with_config(r#"{"fail":true}"#);
        assert!(host.handle::<Counter>(&event("a", "{}")).is_err());
        let mut host = TestHost::with_config(r#"{"fial":true}"#);
        let error = host
            .handle::<Counter>(&event("a", "{}"))
            .expect_err("unknown key");
        assert!(
            error.message().starts_with("invalid stage config: "),
            "{error}"
        );
        assert!(host.logs.is_empty(), "the handler did not run");
    }

    #[test]
    #[should_panic(expected = "returned output 'other' for a T event, which it does not declare")]
    fn an_undeclared_output_fails_the_test() {
        let _ = TestHost::new().handle::<Counter>(&event("a", "undeclared"));
    }
}
