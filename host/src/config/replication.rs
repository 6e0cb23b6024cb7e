//! How the topics the host creates are replicated: `[kafka] replication_factor` and
//! `min_insync_replicas`, a declared topic's own `replication` winning.

use super::model::PipelineConfig;

/// The replication of one topic the host creates. `None` leaves a value to the broker
/// (`default.replication.factor`, `min.insync.replicas`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replication {
    /// Replicas of each partition.
    pub factor: Option<i32>,
    /// `min.insync.replicas` of the topic.
    pub min_insync: Option<i32>,
}

impl PipelineConfig {
    /// The replication of a declared topic: its own `replication`, else the pipeline's.
    pub fn topic_replication(&self, topic: &str) -> Replication {
        self.replication_after(&[topic])
    }

    /// The replication of a topic the host derives from `topics` (a stage's changelog or
    /// processed ids from its inputs, its answers from its outputs): the most replicas any of
    /// them declares, else the pipeline's.
    pub fn replication_after(&self, topics: &[&str]) -> Replication {
        let declared = topics
            .iter()
            .filter_map(|topic| self.topics.get(*topic).and_then(|t| t.replication))
            .max();
        Replication {
            factor: declared.or(self.kafka.replication_factor),
            min_insync: self.kafka.min_insync_replicas,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(kafka: &str, topics: &str) -> PipelineConfig {
        let text = format!(
            "[kafka]\nbrokers = \"b:9092\"\n{kafka}\n[dead_letter]\ntopic = \"DLQ\"\n[topics.DLQ]\n{topics}"
        );
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn unset_everywhere_leaves_it_to_the_broker() {
        let config = config("", "");
        assert_eq!(config.topic_replication("DLQ"), Replication::default());
        assert_eq!(config.replication_after(&["Other"]), Replication::default());
    }

    #[test]
    fn the_pipeline_setting_applies_unless_a_topic_declares_its_own() {
        let config = config("replication_factor = 3\nmin_insync_replicas = 2", "");
        let pipeline = Replication {
            factor: Some(3),
            min_insync: Some(2),
        };
        assert_eq!(config.topic_replication("DLQ"), pipeline);
        assert_eq!(config.replication_after(&[]), pipeline);
        let config = self::config("replication_factor = 3", "replication = 2");
        assert_eq!(config.topic_replication("DLQ").factor, Some(2));
        assert_eq!(config.replication_after(&["DLQ", "Other"]).factor, Some(2));
    }
}
