//! Semantic checks of a parsed pipeline: every problem is collected, none stops the others.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use super::model::{HTTP_INPUT, PipelineConfig};

/// One thing wrong with the configuration, with the path of the offending key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the key, e.g. `stages[inventory].outputs.confirmed`.
    pub key: String,
    /// What is wrong and, where it helps, how to fix it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Collects problems while walking the configuration.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }
}

/// Checks everything that can be checked without Kafka and without compiling plugins.
/// Paths in `config` must already be resolved against the configuration file's folder.
pub fn validate(config: &PipelineConfig) -> Vec<Problem> {
    let mut problems = Problems::default();
    check_kafka(config, &mut problems);
    check_topics(config, &mut problems);
    check_host_topics(config, &mut problems);
    check_http(config, &mut problems);
    check_stages(config, &mut problems);
    problems.0
}

fn check_kafka(config: &PipelineConfig, problems: &mut Problems) {
    if config.kafka.brokers.trim().is_empty() {
        problems.push(
            "kafka.brokers",
            "is empty; set it to host:port[,host:port] or export KAFKA_BROKERS",
        );
    }
    check_kafka_properties(config, problems);
    if config.kafka.transaction_timeout < std::time::Duration::from_secs(1) {
        problems.push("kafka.transaction_timeout", "must be at least 1s");
    }
    if config.state.instance_id.is_empty()
        || !config
            .state
            .instance_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        problems.push(
            "state.instance_id",
            "must be non-empty and contain only letters, digits, '-', '_' and '.'",
        );
    }
}

/// Properties the host sets itself from other keys; a librdkafka table must not set them.
const HOST_OWNED: [(&str, &str); 3] = [
    ("bootstrap.servers", "set kafka.brokers instead"),
    ("metadata.broker.list", "set kafka.brokers instead"),
    (
        "transactional.id",
        "the host derives it from the stage's group and state.instance_id",
    ),
];

/// Asks librdkafka whether it knows every property and accepts its value, without connecting.
/// A secret's value never appears in the message.
fn check_kafka_properties(config: &PipelineConfig, problems: &mut Problems) {
    let kafka = &config.kafka;
    let tables = [
        ("kafka", &kafka.settings),
        ("kafka.producer", &kafka.producer),
        ("kafka.consumer", &kafka.consumer),
        ("kafka.admin", &kafka.admin),
    ];
    for (section, settings) in tables {
        for (name, value) in settings.iter() {
            let key = format!("{section}.{name}");
            if let Some((_, why)) = HOST_OWNED.iter().find(|(owned, _)| *owned == name) {
                problems.push(key, format!("is set by the host; {why}"));
                continue;
            }
            let mut one = rdkafka::ClientConfig::new();
            one.set(name, value);
            if let Err(error) = one.create_native_config() {
                let message = match error {
                    _ if super::is_secret(name) => {
                        "librdkafka does not accept this property or its value".to_string()
                    }
                    // Its description only: the error's own text repeats the value.
                    rdkafka::error::KafkaError::ClientConfig(_, description, _, _) => {
                        format!("librdkafka does not accept it: {description}")
                    }
                    other => format!("librdkafka does not accept it: {other}"),
                };
                problems.push(key, message);
            }
        }
    }
}

fn check_topics(config: &PipelineConfig, problems: &mut Problems) {
    for (name, topic) in &config.topics {
        let key = format!("topics.{name}");
        if topic.partitions < 1 {
            problems.push(format!("{key}.partitions"), "must be at least 1");
        }
        if topic.replication < 1 {
            problems.push(format!("{key}.replication"), "must be at least 1");
        }
        if let Some(schema) = &topic.schema {
            check_schema_file(&format!("{key}.schema"), schema, problems);
        }
    }
}

fn check_host_topics(config: &PipelineConfig, problems: &mut Problems) {
    if !config.topics.contains_key(&config.dead_letter.topic) {
        problems.push(
            "dead_letter.topic",
            format!(
                "topic '{}' is not declared in [topics]",
                config.dead_letter.topic
            ),
        );
    }
    if config.kpi.enabled && !config.topics.contains_key(&config.kpi.topic) {
        problems.push(
            "kpi.topic",
            format!("topic '{}' is not declared in [topics]", config.kpi.topic),
        );
    }
    if config.kpi.interval.is_zero() {
        problems.push("kpi.interval", "must be longer than zero");
    }
}

fn check_http(config: &PipelineConfig, problems: &mut Problems) {
    if config.http.listen.parse::<std::net::SocketAddr>().is_err() {
        problems.push(
            "http.listen",
            format!(
                "'{}' is not an address like 127.0.0.1:8080",
                config.http.listen
            ),
        );
    }
    if config.admin.enabled {
        if config.admin.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(
                "admin.listen",
                format!(
                    "'{}' is not an address like 127.0.0.1:9091",
                    config.admin.listen
                ),
            );
        } else if config.admin.listen == config.http.listen {
            problems.push(
                "admin.listen",
                "must differ from http.listen (the admin API has a listener of its own)",
            );
        }
    }
    if config.http.max_body_bytes == 0 {
        problems.push("http.max_body_bytes", "must be larger than zero");
    }
    if !config.http.ingress_path.starts_with('/') {
        problems.push("http.ingress_path", "must start with '/'");
    }
    if let Some(schema) = &config.http.ingress_schema {
        check_schema_file("http.ingress_schema", schema, problems);
    }
    for (key, topic) in [
        ("http.order_status_topic", &config.http.order_status_topic),
        ("http.stock_topic", &config.http.stock_topic),
        (
            "http.inventory_commands_topic",
            &config.http.inventory_commands_topic,
        ),
    ] {
        if let Some(topic) = topic
            && !config.topics.contains_key(topic)
        {
            problems.push(key, format!("topic '{topic}' is not declared in [topics]"));
        }
    }
    if let Some(stage) = &config.http.catalog_stage
        && !config.stages.iter().any(|s| &s.name == stage)
    {
        problems.push("http.catalog_stage", format!("no stage is named '{stage}'"));
    }
}

fn check_stages(config: &PipelineConfig, problems: &mut Problems) {
    if config.stages.is_empty() {
        problems.push(
            "stages",
            "no stage is declared; add at least one [[stages]]",
        );
    }
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut http_stages = Vec::new();
    let mut groups: BTreeMap<String, &str> = BTreeMap::new();
    for (index, stage) in config.stages.iter().enumerate() {
        let key = if stage.name.is_empty() {
            format!("stages[{index}]")
        } else {
            format!("stages[{}]", stage.name)
        };
        if stage.name.is_empty() {
            problems.push(format!("{key}.name"), "is empty");
        } else if !stage
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            problems.push(
                format!("{key}.name"),
                "may only contain letters, digits, '-' and '_'",
            );
        }
        if let Some(first) = seen.insert(&stage.name, index) {
            problems.push(
                format!("{key}.name"),
                format!(
                    "duplicate stage '{}' (also declared as stages entry {first}); stage names must be unique",
                    stage.name
                ),
            );
        }
        if !stage.plugin.is_file() {
            problems.push(
                format!("{key}.plugin"),
                format!(
                    "plugin file {} does not exist; build the plugins with `make plugins`",
                    stage.plugin.display()
                ),
            );
        }
        let inputs = stage.inputs();
        if inputs.is_empty() {
            problems.push(format!("{key}.input"), "names no topic");
        }
        if inputs.contains(&HTTP_INPUT) {
            if inputs.len() > 1 {
                problems.push(
                    format!("{key}.input"),
                    "\"http\" cannot be combined with topics",
                );
            }
            http_stages.push(stage.name.as_str());
        } else {
            for input in &inputs {
                if !config.topics.contains_key(*input) {
                    problems.push(
                        format!("{key}.input"),
                        format!(
                            "topic '{input}' is not declared in [topics] (use \"http\" for the HTTP ingress)"
                        ),
                    );
                }
            }
            let group = stage.group_id();
            if let Some(other) = groups.insert(group.clone(), &stage.name) {
                problems.push(
                    format!("{key}.group"),
                    format!("consumer group '{group}' is already used by stage '{other}'"),
                );
            }
        }
        if stage.commit_interval.is_zero() {
            problems.push(format!("{key}.commit_interval"), "must be longer than zero");
        }
        if stage.max_batch == 0 {
            problems.push(format!("{key}.max_batch"), "must be at least 1");
        }
        if stage.limits.max_event_time.is_zero() {
            problems.push(
                format!("{key}.limits.max_event_time"),
                "must be longer than zero",
            );
        }
        if stage.limits.max_memory_bytes < 1024 * 1024 {
            problems.push(
                format!("{key}.limits.max_memory_bytes"),
                "must be at least 1 MiB (1048576)",
            );
        }
        if stage.limits.fuel == Some(0) {
            problems.push(
                format!("{key}.limits.fuel"),
                "must be at least 1 (leave it out to meter no fuel)",
            );
        }
        if stage.retry.max_attempts == 0 {
            problems.push(
                format!("{key}.retry.max_attempts"),
                "must be at least 1 (the first attempt counts)",
            );
        }
        if stage.retry.max_delay < stage.retry.initial_delay {
            problems.push(
                format!("{key}.retry.max_delay"),
                format!(
                    "must not be shorter than retry.initial_delay ({:?})",
                    stage.retry.initial_delay
                ),
            );
        }
        for dir in &stage.capabilities.read_dirs {
            if !dir.is_dir() {
                problems.push(
                    format!("{key}.capabilities.read_dirs"),
                    format!("{} is not a directory", dir.display()),
                );
            }
        }
        for (output, topic) in &stage.outputs {
            if !config.topics.contains_key(topic) {
                problems.push(
                    format!("{key}.outputs.{output}"),
                    format!("unknown output topic '{topic}': it is not declared in [topics]"),
                );
            }
        }
    }
    if http_stages.len() > 1 {
        problems.push(
            "stages",
            format!(
                "only one stage may take the HTTP ingress, but these do: {}",
                http_stages.join(", ")
            ),
        );
    }
}

fn check_schema_file(key: &str, path: &Path, problems: &mut Problems) {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => {
            problems.push(
                key,
                format!("cannot read schema {}: {error}", path.display()),
            );
            return;
        }
    };
    let schema: serde_json::Value = match serde_json::from_str(&text) {
        Ok(schema) => schema,
        Err(error) => {
            problems.push(
                key,
                format!("schema {} is not JSON: {error}", path.display()),
            );
            return;
        }
    };
    if let Err(error) = jsonschema::draft202012::new(&schema) {
        problems.push(
            key,
            format!(
                "schema {} is not a valid draft 2020-12 schema: {error}",
                path.display()
            ),
        );
    }
}
