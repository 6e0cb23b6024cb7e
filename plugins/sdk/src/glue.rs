//! The conversions between the WIT types and the SDK's, which every component's exports go
//! through (see [`stage_component!`](crate::stage_component)).

use std::sync::OnceLock;

use crate::bindings::exports::stagehost::pipeline::describe::{OutputNames, StageDescription};
use crate::bindings::stagehost::pipeline::types::{InputEvent, OutputEvent, StageError};
use crate::bindings::stagehost::pipeline::{config, log, state};
use crate::{Plugin, StageFailure, StageInput, State};

/// The stage's keyed state, backed by the WIT `state` import (world `stateful-stage`).
#[derive(Debug, Default)]
pub struct WitState;

impl State for WitState {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        state::get(key)
    }

    fn set(&mut self, key: &str, value: Vec<u8>) {
        state::set(key, &value);
    }

    fn delete(&mut self, key: &str) {
        state::delete(key);
    }
}

/// The state handed to a stage of world `stage`, which cannot reach it: it holds nothing and
/// keeps nothing. It keeps the WIT `state` import out of such a component.
#[derive(Debug, Default)]
pub struct NoState;

impl State for NoState {
    fn get(&self, _key: &str) -> Option<Vec<u8>> {
        None
    }

    fn set(&mut self, _key: &str, _value: Vec<u8>) {}

    fn delete(&mut self, _key: &str) {}
}

fn to_wit_error(failure: StageFailure) -> StageError {
    match failure {
        StageFailure::Reject(m) => StageError::Reject(m),
        StageFailure::Retry(m) => StageError::Retry(m),
    }
}

/// The WIT `handle` export of plugin `P`: reads and parses the config once per instance (into
/// `config`), converts the event, runs `P::handle` and converts its answer.
///
/// # Errors
/// The stage's failure, or the config's (which then rejects every event).
pub fn handle<P: Plugin>(
    config: &OnceLock<Result<P::Config, StageFailure>>,
    event: InputEvent,
    state: &mut dyn State,
) -> Result<Vec<OutputEvent>, StageError> {
    let config = config
        .get_or_init(|| P::parse_config(&config::get_all()))
        .as_ref()
        .map_err(|e| to_wit_error(e.clone()))?;
    let input = StageInput {
        id: event.id,
        event_type: event.event_type,
        key: event.key,
        payload: event.payload,
        headers: event
            .headers
            .into_iter()
            .map(|h| (h.name, h.value))
            .collect(),
        topic: event.topic,
    };
    let mut write_log = |line: &str| log::write(log::Level::Info, line);
    P::handle(&input, config, state, &mut write_log)
        .map(|outputs| {
            outputs
                .into_iter()
                .map(|out| OutputEvent {
                    output: out.output,
                    key: out.key,
                    payload: out.payload,
                    headers: Vec::new(),
                })
                .collect()
        })
        .map_err(to_wit_error)
}

/// The WIT `describe` export of plugin `P`: its declared output names.
#[must_use]
pub fn describe<P: Plugin>() -> StageDescription {
    StageDescription {
        outputs: P::OUTPUTS.map(|declared| {
            declared
                .iter()
                .map(|entry| OutputNames {
                    event_type: entry.event_type.map(str::to_owned),
                    names: entry.names.iter().map(|&n| n.to_owned()).collect(),
                })
                .collect()
        }),
    }
}
