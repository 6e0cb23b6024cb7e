//! Turning one input event into the records to publish: decode, validate, call the plugin,
//! check and address every output. Shared by topic stages and the HTTP ingress.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::event::cloudevents::{self, CloudEvent};
use crate::event::dead_letter::{DeadLetter, Origin};
use crate::event::schema::SchemaRegistry;
use crate::kafka::{OutRecord, RecordLimits};
use crate::plugin::{CallError, Header, InputEvent, OutputEvent, StageInstance};
use crate::state::{KeyedState, Writes};

/// Longest event id (`ce_id`) a stage accepts; a longer one is dead-lettered (ids are kept
/// by the deduplicator and copied into every output's lineage).
pub const MAX_ID_BYTES: usize = 512;
/// Longest record key a plugin may give an output; a longer one dead-letters the input.
pub const MAX_KEY_BYTES: usize = 4096;

/// The records one input produced, and the state writes that go with them.
#[derive(Debug, Default)]
pub struct Processed {
    /// Records to publish, in order.
    pub records: Vec<OutRecord>,
    /// State writes of the input (empty for stateless stages).
    pub writes: Writes,
}

/// Where a stage's logical output goes.
#[derive(Debug, Clone)]
pub struct Route {
    /// Destination topic.
    pub topic: String,
    /// `ce_type` of events on it.
    pub event_type: String,
    /// Whether only the last record of each key per unit of work is written there
    /// (`topics.<name>.latest_per_key`).
    pub latest_per_key: bool,
}

/// Everything a stage needs to process events, except the plugin instance itself.
pub struct StageContext {
    /// Stage name.
    pub name: Arc<str>,
    /// Logical output name → destination.
    pub routes: BTreeMap<String, Route>,
    /// The dead-letter destination.
    pub dead_letter: Route,
    /// Schemas of every topic (and the ingress).
    pub schemas: SchemaRegistry,
    /// How large a record each topic takes: a larger output dead-letters its input.
    pub limits: Arc<RecordLimits>,
}

impl StageContext {
    /// Whether `topic` is an output of this stage that keeps only the latest record per key.
    pub fn latest_per_key(&self, topic: &str) -> bool {
        self.routes
            .values()
            .any(|route| route.latest_per_key && route.topic == topic)
    }
}

/// One input event, as read from a topic or the ingress.
pub struct Input<'a> {
    /// Event id (`ce_id`, or derived from the record's position when absent).
    pub id: String,
    /// Event type (`ce_type`, or the topic's declared type when absent).
    pub event_type: String,
    /// Record key.
    pub key: Option<&'a str>,
    /// Raw body.
    pub payload: &'a [u8],
    /// All headers.
    pub headers: Vec<(String, String)>,
    /// Where it came from.
    pub origin: Origin,
}

/// How a plugin's reject begins when it cannot parse its stage's `config` table (the SDK's
/// `parse_config` writes it; see the `reject` case in the WIT).
pub const CONFIG_REJECT_PREFIX: &str = "invalid stage config";

/// Why an input could not be processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The body is not JSON (or not UTF-8).
    Undecodable(String),
    /// The body violates its topic's schema.
    Schema(String),
    /// The plugin rejected it.
    Rejected(String),
    /// The plugin asked for a retry.
    Retry(String),
    /// The plugin trapped, timed out or hit its memory limit.
    Trap(String),
    /// The plugin returned an output the host cannot publish.
    BadOutput(String),
    /// The event would add keyed state past the stage's `state_max_keys`.
    StateFull(String),
    /// An output or a state value is larger than its topic takes.
    TooLarge(String),
}

impl Failure {
    /// The message recorded in the dead letter.
    pub fn reason(&self) -> String {
        match self {
            Failure::Undecodable(m) => format!("undecodable: {m}"),
            Failure::Schema(m) => format!("schema violation: {m}"),
            Failure::Rejected(m) => format!("rejected: {m}"),
            Failure::Retry(m) => format!("retry: {m}"),
            Failure::Trap(m) => m.clone(),
            Failure::BadOutput(m) => format!("invalid plugin output: {m}"),
            Failure::StateFull(m) => format!("state full: {m}"),
            Failure::TooLarge(m) => format!("too large: {m}"),
        }
    }

    /// A short name of the kind of failure, for the `reason` label of the dead-letter metric.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Undecodable(_) => "undecodable",
            Failure::Schema(_) => "schema",
            Failure::Rejected(_) => "rejected",
            Failure::Retry(_) => "retries_exhausted",
            Failure::Trap(m) if m.starts_with("timeout:") => "timeout",
            Failure::Trap(_) => "trap",
            Failure::BadOutput(_) => "bad_output",
            Failure::StateFull(_) => "state_full",
            Failure::TooLarge(_) => "too_large",
        }
    }

    /// Whether the client of the ingress sent something wrong (as opposed to a host or plugin
    /// fault, or the operator's mistake: see [`Failure::is_config_error`]).
    pub fn is_client_error(&self) -> bool {
        match self {
            Failure::Undecodable(_) | Failure::Schema(_) => true,
            Failure::Rejected(_) => !self.is_config_error(),
            _ => false,
        }
    }

    /// Whether the plugin refused the stage's `config` table (a reject whose text begins with
    /// [`CONFIG_REJECT_PREFIX`], as the SDK's `parse_config` writes it): the operator's mistake
    /// in pipeline.toml, never the client's.
    pub fn is_config_error(&self) -> bool {
        matches!(self, Failure::Rejected(m) if m.starts_with(CONFIG_REJECT_PREFIX))
    }
}

impl StageContext {
    /// Processes one input: the records to publish and the state writes, or why there are none.
    /// `validate_input` is false for the ingress, whose body is validated before; otherwise
    /// the input is validated unless a stage of this pipeline wrote it (see
    /// [`SchemaRegistry::validates_read`]).
    /// `state` is the stage's keyed state, for stateful stages.
    pub fn process(
        &self,
        instance: &mut StageInstance,
        input: &Input<'_>,
        validate_input: bool,
        state: Option<&Arc<Mutex<KeyedState>>>,
    ) -> Result<Processed, Failure> {
        if input.id.len() > MAX_ID_BYTES {
            return Err(Failure::Undecodable(format!(
                "the event id (ce_id) is {} bytes long; at most {MAX_ID_BYTES} are accepted",
                input.id.len()
            )));
        }
        cloudevents::check_attributes(&input.headers).map_err(Failure::Undecodable)?;
        let text = std::str::from_utf8(input.payload)
            .map_err(|error| Failure::Undecodable(format!("body is not UTF-8: {error}")))?;
        let source = cloudevents::find(&input.headers, cloudevents::SOURCE);
        if validate_input
            && self
                .schemas
                .validates_read(&input.origin.source_topic, source)
        {
            let json: serde_json::Value = serde_json::from_str(text)
                .map_err(|error| Failure::Undecodable(format!("body is not JSON: {error}")))?;
            self.schemas
                .validate_topic(&input.origin.source_topic, &json)
                .map_err(Failure::Schema)?;
        }
        let event = InputEvent {
            id: input.id.clone(),
            event_type: input.event_type.clone(),
            key: input.key.map(str::to_string),
            payload: text.to_string(),
            headers: input
                .headers
                .iter()
                .map(|(name, value)| Header {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            topic: input.origin.source_topic.clone(),
        };
        let scope = state.map(|store| (store.clone(), input.origin.partition));
        let (outputs, writes) =
            instance
                .handle_with_state(&event, scope)
                .map_err(|error| match error {
                    CallError::Reject(m) => Failure::Rejected(m),
                    CallError::Retry(m) => Failure::Retry(m),
                    CallError::Trap(m) => Failure::Trap(m),
                })?;
        let version = instance.version().to_string();
        let time = cloudevents::now_rfc3339();
        let records = outputs
            .into_iter()
            .enumerate()
            .map(|(position, output)| self.output_record(input, position, output, &version, &time))
            .collect::<Result<Vec<_>, Failure>>()?;
        Ok(Processed { records, writes })
    }

    /// The record of output #`position` of `input`, checked: a route the stage has, JSON
    /// (fitting the topic's schema if it has one), a key and a size the topic takes.
    fn output_record(
        &self,
        input: &Input<'_>,
        position: usize,
        output: OutputEvent,
        version: &str,
        time: &str,
    ) -> Result<OutRecord, Failure> {
        let route = self.routes.get(&output.output).ok_or_else(|| {
            Failure::BadOutput(format!(
                "output #{position} names '{}', which is not in the stage's outputs ({})",
                output.output,
                self.routes.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
        self.check_payload(position, &output, route)?;
        if let Some(key) = &output.key
            && key.len() > MAX_KEY_BYTES
        {
            return Err(Failure::BadOutput(format!(
                "output #{position} to '{}' has a key of {} bytes; at most {MAX_KEY_BYTES} are accepted",
                output.output,
                key.len()
            )));
        }
        let id = cloudevents::output_id(&input.id, &self.name, position);
        let attributes = CloudEvent {
            id: id.clone(),
            event_type: route.event_type.clone(),
            source: cloudevents::stage_source(&self.name),
            time: time.to_string(),
            plugin_version: Some(version.to_string()),
        };
        let headers = attributes.to_headers(
            output
                .headers
                .iter()
                .map(|h| (h.name.as_str(), h.value.as_str())),
        );
        let record = OutRecord {
            topic: route.topic.clone(),
            partition: None,
            key: output.key.or_else(|| input.key.map(str::to_string)),
            payload: Some(output.payload.into_bytes()),
            headers,
            id,
        };
        self.limits.check(&record).map_err(|error| {
            Failure::TooLarge(format!(
                "output #{position} to '{}': {error}",
                output.output
            ))
        })?;
        Ok(record)
    }

    /// Whether output #`position` is JSON, fitting the schema of `route`'s topic if it has one.
    fn check_payload(
        &self,
        position: usize,
        output: &OutputEvent,
        route: &Route,
    ) -> Result<(), Failure> {
        let not_json = |error: serde_json::Error| {
            Failure::BadOutput(format!(
                "output #{position} to '{}' is not JSON: {error}",
                output.output
            ))
        };
        if self.schemas.has_topic_schema(&route.topic) {
            let json: serde_json::Value =
                serde_json::from_str(&output.payload).map_err(not_json)?;
            self.schemas
                .validate_topic(&route.topic, &json)
                .map_err(|error| {
                    Failure::BadOutput(format!(
                        "output #{position} to '{}' violates the schema of topic {}: {error}",
                        output.output, route.topic
                    ))
                })?;
        } else {
            // Only whether it is JSON: checked without building a document.
            serde_json::from_str::<serde::de::IgnoredAny>(&output.payload).map_err(not_json)?;
        }
        Ok(())
    }

    /// The dead-letter record for an input that failed with `failure` after `attempts` tries.
    pub fn dead_letter(
        &self,
        input: &Input<'_>,
        failure: &Failure,
        plugin_version: &str,
        attempts: u32,
    ) -> OutRecord {
        let mut letter = DeadLetter::new(
            input.payload,
            failure.reason(),
            input.origin.clone(),
            plugin_version,
            &input.id,
        );
        letter.attempts = attempts;
        letter.event_type = Some(input.event_type.clone());
        let id = cloudevents::dead_letter_id(&input.id, &self.name);
        let attributes = CloudEvent {
            id: id.clone(),
            event_type: self.dead_letter.event_type.clone(),
            source: cloudevents::stage_source(&self.name),
            time: letter.timestamp.clone(),
            plugin_version: Some(plugin_version.to_string()),
        };
        OutRecord {
            topic: self.dead_letter.topic.clone(),
            partition: None,
            // An oversized key (it may be why the event failed) would not fit either.
            key: input
                .key
                .filter(|key| key.len() <= MAX_KEY_BYTES)
                .map(str::to_string),
            payload: Some(letter.to_json()),
            headers: attributes.to_headers([]),
            id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letters_reason_is_its_failures_kind() {
        let origin = Origin {
            stage: "s".into(),
            source_topic: "t".into(),
            partition: 0,
            offset: 0,
        };
        let failures = [
            Failure::Undecodable("x".into()),
            Failure::Schema("x".into()),
            Failure::Rejected("x".into()),
            Failure::Retry("x".into()),
            Failure::Trap("trap: x".into()),
            Failure::Trap("timeout: x".into()),
            Failure::Trap("memory limit: x".into()),
            Failure::Trap("trapped after 20 ticks: x".into()),
            Failure::BadOutput("x".into()),
            Failure::StateFull("x".into()),
            Failure::TooLarge("x".into()),
        ];
        for failure in failures {
            let letter = DeadLetter::new(b"{}", failure.reason(), origin.clone(), "v", "id");
            assert_eq!(letter.reason(), failure.kind(), "{failure:?}");
        }
    }
}
