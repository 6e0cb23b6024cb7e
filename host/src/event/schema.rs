//! JSON Schema validation of what enters the pipeline and what each plugin emits.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use jsonschema::Validator;

use crate::config::PipelineConfig;

/// Validators by topic name, plus one for the HTTP ingress.
#[derive(Clone, Default)]
pub struct SchemaRegistry {
    topics: HashMap<String, Arc<Validator>>,
    ingress: Option<Arc<Validator>>,
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
        if let Some(path) = &config.http.ingress_schema {
            registry.ingress = Some(Arc::new(compile(path)?));
        }
        Ok(registry)
    }

    /// Checks an event bound for (or read from) `topic`; topics without a schema accept anything.
    pub fn validate_topic(&self, topic: &str, event: &serde_json::Value) -> Result<(), String> {
        match self.topics.get(topic) {
            Some(validator) => check(validator, event),
            None => Ok(()),
        }
    }

    /// Checks an HTTP ingress body.
    pub fn validate_ingress(&self, body: &serde_json::Value) -> Result<(), String> {
        match &self.ingress {
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
    let errors: Vec<String> = validator
        .iter_errors(event)
        .take(MAX_REPORTED)
        .map(|error| {
            let path = error.instance_path().to_string();
            if path.is_empty() {
                error.to_string()
            } else {
                format!("{path}: {error}")
            }
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validator() -> Validator {
        jsonschema::draft202012::new(&serde_json::json!({
            "type": "object",
            "required": ["order_id", "items"],
            "properties": {
                "order_id": {"type": "string"},
                "items": {"type": "array", "items": {
                    "type": "object",
                    "properties": {"quantity": {"type": "integer", "minimum": 1}}
                }}
            }
        }))
        .unwrap()
    }

    #[test]
    fn accepts_a_valid_event() {
        let event = serde_json::json!({"order_id": "o-1", "items": [{"quantity": 1}]});
        assert_eq!(check(&validator(), &event), Ok(()));
    }

    #[test]
    fn names_the_offending_field() {
        let event = serde_json::json!({"order_id": "o-1", "items": [{"quantity": 0}]});
        let error = check(&validator(), &event).unwrap_err();
        assert!(error.contains("/items/0/quantity"), "{error}");
        let missing = check(&validator(), &serde_json::json!({"items": []})).unwrap_err();
        assert!(missing.contains("order_id"), "{missing}");
    }
}
