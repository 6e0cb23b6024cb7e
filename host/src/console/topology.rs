//! What the console draws: the pipeline's stages with their inputs, outputs and mode, the
//! HTTP routes that feed them, and the topics, all from the configuration.

use serde::Serialize;

use crate::config::{PipelineConfig, ProcessingMode, RouteConfig, StageConfig};
use crate::trace::pipeline_topics;

/// The pipeline as the console draws it (`GET /api/topology`).
#[derive(Debug, Clone, Serialize)]
pub struct Topology {
    /// The stages, in pipeline order.
    pub stages: Vec<Stage>,
    /// The HTTP routes, each feeding a stage: the pipeline's sources.
    pub sources: Vec<Source>,
    /// Every topic the pipeline names, in pipeline order.
    pub topics: Vec<Topic>,
    /// The read models: `GET` paths answered from a topic.
    pub views: Vec<View>,
    /// Where every stage sends what it cannot process.
    pub dead_letter_topic: String,
    /// Where KPIs are published, when they are.
    pub kpi_topic: Option<String>,
}

/// One stage.
#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    /// Its name.
    pub name: String,
    /// Its input topics, or `["http"]` for a stage fed by routes.
    pub inputs: Vec<String>,
    /// Its outputs: logical name and topic, by logical name.
    pub outputs: Vec<Output>,
    /// `exactly_once` or `at_least_once`.
    pub mode: &'static str,
}

/// One output of a stage.
#[derive(Debug, Clone, Serialize)]
pub struct Output {
    /// The name the plugin emits.
    pub name: String,
    /// The topic it goes to.
    pub topic: String,
}

/// One HTTP route feeding a stage.
#[derive(Debug, Clone, Serialize)]
pub struct Source {
    /// `METHOD path`.
    pub name: String,
    /// The stage it feeds.
    pub stage: String,
    /// `ce_type` of its events.
    pub event_type: String,
}

/// One topic.
#[derive(Debug, Clone, Serialize)]
pub struct Topic {
    /// Its name.
    pub name: String,
    /// Partitions it is created with (when declared).
    pub partitions: Option<i32>,
    /// `ce_type` of its events.
    pub event_type: String,
}

/// One read model.
#[derive(Debug, Clone, Serialize)]
pub struct View {
    /// Its `GET` path.
    pub path: String,
    /// The topic whose latest record per key answers.
    pub topic: String,
}

impl Topology {
    /// The topology of a pipeline.
    pub fn of(config: &PipelineConfig) -> Self {
        Self {
            stages: config.stages.iter().map(Stage::of).collect(),
            sources: config.http.routes.iter().map(Source::of).collect(),
            topics: pipeline_topics(config)
                .into_iter()
                .map(|name| Topic::of(config, name))
                .collect(),
            views: config
                .http
                .views
                .iter()
                .map(|view| View {
                    path: view.path.clone(),
                    topic: view.topic.clone(),
                })
                .collect(),
            dead_letter_topic: config.dead_letter.topic.clone(),
            kpi_topic: config.kpi.enabled.then(|| config.kpi.topic.clone()),
        }
    }
}

impl Stage {
    fn of(stage: &StageConfig) -> Self {
        Self {
            name: stage.name.clone(),
            inputs: stage.inputs().into_iter().map(str::to_string).collect(),
            outputs: stage
                .outputs
                .iter()
                .map(|(name, topic)| Output {
                    name: name.clone(),
                    topic: topic.clone(),
                })
                .collect(),
            mode: match stage.mode {
                ProcessingMode::ExactlyOnce => "exactly_once",
                ProcessingMode::AtLeastOnce => "at_least_once",
            },
        }
    }
}

impl Source {
    fn of(route: &RouteConfig) -> Self {
        Self {
            name: route.name(),
            stage: route.stage.clone(),
            event_type: route.event_type.clone(),
        }
    }
}

impl Topic {
    fn of(config: &PipelineConfig, name: String) -> Self {
        let declared = config.topics.get(&name);
        Self {
            partitions: declared.map(|t| t.partitions),
            event_type: declared
                .and_then(|t| t.event_type.clone())
                .unwrap_or_else(|| name.clone()),
            name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_routes_and_topics_come_from_the_configuration() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.wasm"), b"").unwrap();
        let text = r#"
            [kafka]
            brokers = "x:1"
            [kpi]
            enabled = false
            [[http.routes]]
            path = "/things"
            stage = "intake"
            id_field = "id"
            event_type = "Thing"
            [dead_letter]
            topic = "DLQ"
            [topics.Things]
            partitions = 6
            event_type = "ThingSeen"
            [topics.Done]
            [topics.DLQ]
            [[stages]]
            name = "intake"
            plugin = "p.wasm"
            input = "http"
            outputs = { seen = "Things" }
            [[stages]]
            name = "finish"
            plugin = "p.wasm"
            input = "Things"
            mode = "at_least_once"
            outputs = { done = "Done" }
        "#;
        let config = crate::config::parse(
            text,
            std::path::Path::new("test.toml"),
            dir.path(),
            &crate::config::Overrides::default(),
        );
        let config = match config {
            Ok(config) => config,
            Err(error) => panic!("{error}"),
        };
        let topology = serde_json::to_value(Topology::of(&config)).unwrap();
        assert_eq!(
            topology["sources"],
            serde_json::json!([{"name": "POST /things", "stage": "intake", "event_type": "Thing"}])
        );
        assert_eq!(topology["stages"][0]["inputs"], serde_json::json!(["http"]));
        assert_eq!(
            topology["stages"][1],
            serde_json::json!({"name": "finish", "inputs": ["Things"],
                "outputs": [{"name": "done", "topic": "Done"}], "mode": "at_least_once"})
        );
        assert_eq!(
            topology["topics"][0],
            serde_json::json!({"name": "Things", "partitions": 6, "event_type": "ThingSeen"})
        );
        assert_eq!(topology["topics"][2]["name"], "DLQ");
        assert!(topology["kpi_topic"].is_null());
    }
}
