//! `POST /sensors/{sensor_id}/readings` → one `Reading` event keyed by the sensor.
//!
//! The body is `{"reading_id": "…", "value": <number>}` (the host checked it against the
//! route's schema); the sensor id comes from the path, as the input header
//! [`SENSOR_HEADER`].
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};
use stagehost_sdk::{StageFailure, StageInput, StageOutput, parse_payload};

/// Input header carrying the route's `{sensor_id}` path parameter.
pub const SENSOR_HEADER: &str = "stagehost-path-sensor_id";
/// The one output (topic `Readings`).
pub const OUTPUT_READING: &str = "reading";

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Submitted {
    reading_id: String,
    value: f64,
}

/// A reading of one sensor (topic `Readings`, keyed by `sensor_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// The sensor.
    pub sensor_id: String,
    /// Identity of the reading (unique per sensor).
    pub reading_id: String,
    /// The measured value.
    pub value: f64,
}

/// Turns a submitted reading into a [`Reading`] keyed by its sensor.
///
/// # Errors
/// [`StageFailure::Reject`] (the host answers `400`) for a malformed body, a missing sensor
/// id, or a value that is not finite.
pub fn handle(event: &StageInput) -> Result<Vec<StageOutput>, StageFailure> {
    let submitted: Submitted = parse_payload(&event.payload, "reading")?;
    let sensor_id = event
        .header(SENSOR_HEADER)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| StageFailure::Reject(format!("no sensor id (header {SENSOR_HEADER})")))?;
    if !submitted.value.is_finite() {
        return Err(StageFailure::Reject("value must be a finite number".into()));
    }
    let reading = Reading {
        sensor_id: sensor_id.to_owned(),
        reading_id: submitted.reading_id,
        value: submitted.value,
    };
    Ok(vec![StageOutput::json(
        OUTPUT_READING,
        sensor_id,
        &reading,
    )?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_is_keyed_by_the_sensor_in_the_path() {
        let event = StageInput::new(
            "e",
            "ReadingSubmitted",
            Some("r-1"),
            r#"{"reading_id": "r-1", "value": 21.5}"#,
        )
        .with_header(SENSOR_HEADER, "s-1");
        let outputs = handle(&event).unwrap();
        assert_eq!(outputs.len(), 1);
        assert_eq!(outputs[0].key.as_deref(), Some("s-1"));
        let reading: Reading = serde_json::from_str(&outputs[0].payload).unwrap();
        assert_eq!(
            reading,
            Reading {
                sensor_id: "s-1".into(),
                reading_id: "r-1".into(),
                value: 21.5
            }
        );
    }

    #[test]
    fn bad_readings_are_rejected() {
        let no_sensor = StageInput::new(
            "e",
            "ReadingSubmitted",
            None,
            r#"{"reading_id": "r", "value": 1}"#,
        );
        assert!(
            handle(&no_sensor)
                .unwrap_err()
                .message()
                .contains(SENSOR_HEADER)
        );
        let bad = StageInput::new(
            "e",
            "ReadingSubmitted",
            None,
            r#"{"reading_id": "r", "value": "hot"}"#,
        )
        .with_header(SENSOR_HEADER, "s-1");
        assert!(matches!(handle(&bad), Err(StageFailure::Reject(_))));
    }
}
