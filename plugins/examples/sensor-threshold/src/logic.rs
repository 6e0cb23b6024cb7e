//! Threshold alerts per sensor. Each `Reading` (keyed by sensor) updates the sensor's status
//! in keyed state (`sensor/<id>`) and publishes it (`status` → `SensorStatus`, the read model
//! behind `GET /sensors/{sensor_id}`). A reading above the sensor's threshold while the sensor
//! is normal raises an alert; a reading at or below it while alerting clears it (`alert` →
//! `Alerts`). A reading seen before (same `reading_id` as the last one) changes nothing.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use stagehost_sdk::{StageFailure, StageInput, StageOutput, State, parse_payload};

/// Output of the sensor's status (topic `SensorStatus`).
pub const OUTPUT_STATUS: &str = "status";
/// Output of a raised or cleared alert (topic `Alerts`).
pub const OUTPUT_ALERT: &str = "alert";

/// The stage's `config` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Threshold of sensors not listed in `thresholds`.
    pub default_threshold: f64,
    /// Threshold per sensor id.
    #[serde(default)]
    pub thresholds: BTreeMap<String, f64>,
}

/// Parses the `config` table.
///
/// # Errors
/// [`StageFailure::Reject`] naming the offending key.
pub fn parse_config(json: &str) -> Result<Config, StageFailure> {
    stagehost_sdk::parse_config(json)
}

/// A reading (topic `Readings`), as the `reading` stage writes it.
#[derive(Debug, Deserialize)]
struct Reading {
    sensor_id: String,
    reading_id: String,
    value: f64,
}

/// Whether a sensor is above its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// At or below the threshold.
    Normal,
    /// Above it.
    Alert,
}

/// A sensor's status (topic `SensorStatus`, keyed by `sensor_id`; kept in state).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorStatus {
    /// The sensor.
    pub sensor_id: String,
    /// Normal or alerting.
    pub level: Level,
    /// The threshold applied.
    pub threshold: f64,
    /// The latest value.
    pub last_value: f64,
    /// The latest reading's id.
    pub last_reading_id: String,
    /// Readings handled.
    pub readings: u64,
    /// Alerts raised.
    pub alerts_raised: u64,
}

/// A raised or cleared alert (topic `Alerts`, keyed by `sensor_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The sensor.
    pub sensor_id: String,
    /// `raised` (the value went above the threshold) or `cleared` (back at or below).
    pub kind: String,
    /// The reading that crossed.
    pub reading_id: String,
    /// Its value.
    pub value: f64,
    /// The threshold crossed.
    pub threshold: f64,
}

/// Handles one reading.
///
/// # Errors
/// [`StageFailure::Reject`] for a malformed reading, one keyed by another sensor, or a
/// corrupt stored status.
pub fn handle(
    event: &StageInput,
    config: &Config,
    state: &mut dyn State,
) -> Result<Vec<StageOutput>, StageFailure> {
    let reading: Reading = parse_payload(&event.payload, "Reading")?;
    event.expect_key("sensor_id", &reading.sensor_id)?;
    let key = format!("sensor/{}", reading.sensor_id);
    let threshold = config
        .thresholds
        .get(&reading.sensor_id)
        .copied()
        .unwrap_or(config.default_threshold);
    let previous: Option<SensorStatus> = match state.get(&key) {
        Some(bytes) => Some(serde_json::from_slice(&bytes).map_err(|e| {
            StageFailure::Reject(format!("the stored status of {key} is corrupt: {e}"))
        })?),
        None => None,
    };
    if previous
        .as_ref()
        .is_some_and(|p| p.last_reading_id == reading.reading_id)
    {
        return Ok(Vec::new());
    }
    let was = previous.as_ref().map_or(Level::Normal, |p| p.level);
    let level = if reading.value > threshold {
        Level::Alert
    } else {
        Level::Normal
    };
    let mut outputs = Vec::new();
    if level != was {
        let alert = Alert {
            sensor_id: reading.sensor_id.clone(),
            kind: if level == Level::Alert {
                "raised"
            } else {
                "cleared"
            }
            .into(),
            reading_id: reading.reading_id.clone(),
            value: reading.value,
            threshold,
        };
        outputs.push(StageOutput::json(OUTPUT_ALERT, &reading.sensor_id, &alert)?);
    }
    let raised = u64::from(level == Level::Alert && was == Level::Normal);
    let status = SensorStatus {
        sensor_id: reading.sensor_id.clone(),
        level,
        threshold,
        last_value: reading.value,
        last_reading_id: reading.reading_id,
        readings: previous.as_ref().map_or(0, |p| p.readings) + 1,
        alerts_raised: previous.as_ref().map_or(0, |p| p.alerts_raised) + raised,
    };
    let stored = serde_json::to_vec(&status)
        .map_err(|e| StageFailure::Reject(format!("cannot serialize the status: {e}")))?;
    state.set(&key, stored);
    outputs.push(StageOutput::json(
        OUTPUT_STATUS,
        &status.sensor_id,
        &status,
    )?);
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stagehost_sdk::MemoryState;

    fn reading(sensor: &str, id: &str, value: f64) -> StageInput {
        let payload =
            format!(r#"{{"sensor_id": "{sensor}", "reading_id": "{id}", "value": {value}}}"#);
        StageInput::new(id, "Reading", Some(sensor), payload)
    }

    fn config() -> Config {
        parse_config(r#"{"default_threshold": 50, "thresholds": {"s-1": 30}}"#).unwrap()
    }

    fn alerts(outputs: &[StageOutput]) -> Vec<(String, String)> {
        outputs
            .iter()
            .filter(|o| o.output == OUTPUT_ALERT)
            .map(|o| {
                let alert: Alert = serde_json::from_str(&o.payload).unwrap();
                (alert.kind, alert.reading_id)
            })
            .collect()
    }

    #[test]
    fn alerts_are_raised_and_cleared_on_crossings_only() {
        let (config, mut state) = (config(), MemoryState::new());
        let mut run =
            |sensor, id, value| handle(&reading(sensor, id, value), &config, &mut state).unwrap();
        assert!(alerts(&run("s-1", "a", 20.0)).is_empty());
        assert_eq!(
            alerts(&run("s-1", "b", 35.0)),
            [("raised".to_owned(), "b".to_owned())]
        );
        assert!(alerts(&run("s-1", "c", 36.0)).is_empty(), "still alerting");
        assert_eq!(
            alerts(&run("s-1", "d", 30.0)),
            [("cleared".to_owned(), "d".to_owned())]
        );
        // s-2 uses the default threshold.
        assert!(alerts(&run("s-2", "x", 35.0)).is_empty());
        let status: SensorStatus =
            serde_json::from_slice(&state.get("sensor/s-1").unwrap()).unwrap();
        assert_eq!(
            (status.readings, status.alerts_raised, status.level),
            (4, 1, Level::Normal)
        );
    }

    #[test]
    fn a_repeated_reading_changes_nothing() {
        let (config, mut state) = (config(), MemoryState::new());
        let first = handle(&reading("s-1", "a", 40.0), &config, &mut state).unwrap();
        assert_eq!(first.len(), 2);
        assert!(
            handle(&reading("s-1", "a", 40.0), &config, &mut state)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_reading_keyed_by_another_sensor_is_rejected() {
        let mut event = reading("s-1", "a", 1.0);
        event.key = Some("s-2".into());
        let failure = handle(&event, &config(), &mut MemoryState::new()).unwrap_err();
        assert!(failure.message().contains("sensor_id"), "{failure}");
    }
}
