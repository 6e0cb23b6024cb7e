//! Declared topics that disappear while the host runs.
//!
//! A topic of `[topics]` deleted under a running host is reported at once: `/readyz` part
//! `topic:<name>` is unready and the log says which topic is gone, until it exists again. The
//! host recreates only the topics whose loss cannot cost data: the KPI topic (monitoring) and
//! the dead-letter topic (what it held is gone with the deletion; without it every stage that
//! dead-letters would fail its transactions), and only with `kafka.create_topics = true`. Any
//! other topic is left to the operator: recreating an input or output topic behind the back of
//! its readers moves their offsets, and changelog and processed-id topics are never recreated
//! by a running host (an empty one would be a silent reset of state).

use std::collections::{BTreeMap, BTreeSet};

use crate::config::PipelineConfig;
use crate::health::{Health, Reporter};
use crate::kafka::{KafkaClients, ensure_topics};

/// The declared topics, and the reporters of those found missing.
pub struct DeclaredTopics {
    kafka: KafkaClients,
    /// The configuration with only the topics the host may recreate (empty without
    /// `create_topics`).
    recreatable: Option<PipelineConfig>,
    names: Vec<String>,
    health: Health,
    missing: BTreeMap<String, Reporter>,
}

impl DeclaredTopics {
    /// The declared topics of `config`, reporting to `health`.
    pub fn of(config: &PipelineConfig, health: &Health) -> Self {
        let recreatable = config.kafka.create_topics.then(|| {
            let mut only = config.clone();
            let keep = [config.kpi.topic.as_str(), config.dead_letter.topic.as_str()];
            only.topics.retain(|name, _| keep.contains(&name.as_str()));
            only
        });
        Self {
            kafka: KafkaClients::new(&config.kafka),
            recreatable,
            names: config.topics.keys().cloned().collect(),
            health: health.clone(),
            missing: BTreeMap::new(),
        }
    }

    /// Compares the declared topics with the cluster's `existing` ones: reports those missing,
    /// recreates those that may be, clears those back.
    pub async fn check(&mut self, existing: &BTreeSet<String>) {
        let mut recreate = false;
        for name in &self.names {
            if existing.contains(name) {
                if let Some(reporter) = self.missing.remove(name) {
                    tracing::info!(topic = %name, "declared topic exists again");
                    reporter.remove();
                }
                continue;
            }
            let may_recreate = self
                .recreatable
                .as_ref()
                .is_some_and(|config| config.topics.contains_key(name));
            recreate |= may_recreate;
            if self.missing.contains_key(name) {
                continue;
            }
            let what = if may_recreate {
                "the host recreates it"
            } else {
                "stages that write it cannot commit and stages that read it wait; recreate it (with its partitions) or restore it"
            };
            tracing::error!(topic = %name, "a declared topic was deleted from the cluster: {what}");
            let reporter = self.health.reporter(&format!("topic:{name}"), "missing");
            reporter.unready(format!("deleted from the cluster: {what}"));
            self.missing.insert(name.clone(), reporter);
        }
        if recreate
            && let Some(config) = &self.recreatable
            && let Err(error) = ensure_topics(&self.kafka, config).await
        {
            tracing::warn!(
                error = format!("{error:#}"),
                "cannot recreate a deleted topic yet"
            );
        }
    }
}
