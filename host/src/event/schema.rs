//! JSON Schema validation of what enters the pipeline and what each plugin emits.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use jsonschema::Validator;

use crate::config::PipelineConfig;
use crate::event::cloudevents::stage_source;

/// Sources the host itself writes under, never trusted as a stage of the pipeline: a stage
/// named like one of them must not make replayed or HTTP-made events skip validation.
const HOST_SOURCES: [&str; 4] = ["dlq-replay", "ingress", "kpi", "http"];

/// Validators by topic name, plus one per HTTP ingress route that declares a schema.
#[derive(Clone, Default)]
pub struct SchemaRegistry {
    topics: HashMap<String, Arc<Validator>>,
    /// By route name (`METHOD path`).
    routes: HashMap<String, Arc<Validator>>,
    /// Per topic, the `ce_source` of every stage that writes it (and validates what it writes).
    validated_by_writer: HashMap<String, HashSet<String>>,
}

impl SchemaRegistry {
    /// Compiles every schema the configuration names.
    pub fn from_config(config: &PipelineConfig) -> anyhow::Result<Self> {
        let mut registry = Self::default();
        for (topic, settings) in &config.topics {
            if let Some(path) = &settings.schema {
                registry
                    .topics
                    .insert(topic.clone(), Arc::new(compile(path)?));
            }
        }
        for route in &config.http.routes {
            if let Some(path) = &route.schema {
                registry
                    .routes
                    .insert(route.name(), Arc::new(compile(path)?));
            }
        }
        for stage in &config.stages {
            if HOST_SOURCES.contains(&stage.name.as_str()) {
                continue;
            }
            for topic in stage.outputs.values() {
                if config.topics.get(topic).is_some_and(|t| !t.revalidate) {
                    registry
                        .validated_by_writer
                        .entry(topic.clone())
                        .or_default()
                        .insert(stage_source(&stage.name));
                }
            }
        }
        Ok(registry)
    }

    /// Whether an event read from `topic` with `ce_source` `source` must be validated: always,
    /// unless a stage of this pipeline that writes `topic` (and so validated the event against
    /// this schema before publishing it) is its source and the topic does not set
    /// `revalidate`.
    pub fn validates_read(&self, topic: &str, source: Option<&str>) -> bool {
        if !self.topics.contains_key(topic) {
            return false;
        }
        match (source, self.validated_by_writer.get(topic)) {
            (Some(source), Some(writers)) => !writers.contains(source),
            _ => true,
        }
    }

    /// Whether `topic` has a schema (events bound for a topic without one are only checked to
    /// be JSON).
    pub fn has_topic_schema(&self, topic: &str) -> bool {
        self.topics.contains_key(topic)
    }

    /// Checks an event bound for (or read from) `topic`; topics without a schema accept anything.
    pub fn validate_topic(&self, topic: &str, event: &serde_json::Value) -> Result<(), String> {
        match self.topics.get(topic) {
            Some(validator) => check(validator, event),
            None => Ok(()),
        }
    }

    /// Checks the body of a request to the ingress route `route` (`METHOD path`); routes
    /// without a schema accept anything.
    pub fn validate_ingress(&self, route: &str, body: &serde_json::Value) -> Result<(), String> {
        match self.routes.get(route) {
            Some(validator) => check(validator, body),
            None => Ok(()),
        }
    }
}

/// Compiles one draft 2020-12 schema file.
pub fn compile(path: &Path) -> anyhow::Result<Validator> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| anyhow::anyhow!("cannot read schema {}: {error}", path.display()))?;
    let schema: serde_json::Value = serde_json::from_str(&text)
        .map_err(|error| anyhow::anyhow!("schema {} is not JSON: {error}", path.display()))?;
    jsonschema::draft202012::new(&schema)
        .map_err(|error| anyhow::anyhow!("schema {} is invalid: {error}", path.display()))
}

/// At most this many violations are reported for one event.
const MAX_REPORTED: usize = 5;

fn check(validator: &Validator, event: &serde_json::Value) -> Result<(), String> {
    // The common case, a valid event, takes the fast path that builds no error values.
    if validator.is_valid(event) {
        return Ok(());
    }
    let errors: Vec<String> = validator
        .iter_errors(event)
        .take(MAX_REPORTED)
        .map(|error| {
            let path = error.instance_path().to_string();
            let message = if path.is_empty() {
                error.to_string()
            } else {
                format!("{path}: {error}")
            };
            capped(message)
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Longest message kept of one schema error (they quote the offending value, which may be
/// huge); a longer one is cut on a char boundary and says how much was dropped.
const MAX_ERROR_BYTES: usize = 1024;

fn capped(mut message: String) -> String {
    if message.len() <= MAX_ERROR_BYTES {
        return message;
    }
    let mut end = MAX_ERROR_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let dropped = message.len() - end;
    message.truncate(end);
    message.push_str(&crate::event::dead_letter::truncation_marker(dropped));
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_quoting_a_huge_value_is_cut() {
        let huge = serde_json::Value::String("é".repeat(500_000));
        let error = check(&validator(), &huge).unwrap_err();
        assert!(error.len() < 2 * MAX_ERROR_BYTES, "{} bytes", error.len());
        assert!(error.ends_with("bytes truncated)"), "{error}");
    }

    fn validator() -> Validator {
        jsonschema::draft202012::new(&serde_json::json!({
            "type": "object",
            "required": ["thing_id", "items"],
            "properties": {
                "thing_id": {"type": "string"},
                "items": {"type": "array", "items": {
                    "type": "object",
                    "properties": {"quantity": {"type": "integer", "minimum": 1}}
                }}
            }
        }))
        .unwrap()
    }

    /// A pipeline where `writer` writes topics `Trusting` and `Revalidating`, and a stage
    /// named like a host source writes `Trusting` too.
    fn registry_of_a_pipeline(dir: &Path) -> SchemaRegistry {
        let schema = dir.join("schema.json");
        std::fs::write(&schema, r#"{"type": "object", "required": ["id"]}"#).unwrap();
        let text = format!(
            r#"
            [kafka]
            brokers = "127.0.0.1:9092"
            [dead_letter]
            topic = "Trusting"
            [topics.Trusting]
            schema = "{schema}"
            [topics.Revalidating]
            schema = "{schema}"
            revalidate = true
            [topics.Unchecked]
            [[stages]]
            name = "writer"
            plugin = "writer.wasm"
            input = "Unchecked"
            outputs = {{ a = "Trusting", b = "Revalidating" }}
            [[stages]]
            name = "dlq-replay"
            plugin = "writer.wasm"
            input = "Unchecked"
            outputs = {{ a = "Trusting" }}
            "#,
            schema = schema.display()
        );
        let config: PipelineConfig = toml::from_str(&text).unwrap();
        SchemaRegistry::from_config(&config).unwrap()
    }

    #[test]
    fn events_written_by_a_stage_of_the_pipeline_are_not_validated_again() {
        let dir = tempfile::tempdir().unwrap();
        let registry = registry_of_a_pipeline(dir.path());
        assert!(!registry.validates_read("Trusting", Some("/stagehost/writer")));
        assert!(registry.validates_read("Trusting", Some("/stagehost/other")));
        assert!(registry.validates_read("Trusting", None));
        assert!(registry.validates_read("Trusting", Some("/stagehost/dlq-replay")));
        assert!(registry.validates_read("Revalidating", Some("/stagehost/writer")));
        assert!(!registry.validates_read("Unchecked", None));
    }

    #[test]
    fn accepts_a_valid_event() {
        let event = serde_json::json!({"thing_id": "o-1", "items": [{"quantity": 1}]});
        assert_eq!(check(&validator(), &event), Ok(()));
    }

    #[test]
    fn names_the_offending_field() {
        let event = serde_json::json!({"thing_id": "o-1", "items": [{"quantity": 0}]});
        let error = check(&validator(), &event).unwrap_err();
        assert!(error.contains("/items/0/quantity"), "{error}");
        let missing = check(&validator(), &serde_json::json!({"items": []})).unwrap_err();
        assert!(missing.contains("thing_id"), "{missing}");
    }
}
