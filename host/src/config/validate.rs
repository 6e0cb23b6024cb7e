//! Semantic checks of a parsed pipeline: every problem is collected, none stops the others.

use std::collections::BTreeMap;
use std::path::Path;

use super::model::{
    HTTP_INPUT, MAX_INGRESS_PRODUCERS, PipelineConfig, StageConfig, template_names,
};
use super::problem::Problem;

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
    let ratio = config.telemetry.trace_sample_ratio;
    if !(0.0..=1.0).contains(&ratio) {
        problems.push(
            "telemetry.trace_sample_ratio",
            format!("is {ratio}; it must be between 0 (no trace recorded) and 1 (every trace)"),
        );
    }
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
    check_replication(config, problems);
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

fn check_replication(config: &PipelineConfig, problems: &mut Problems) {
    let (factor, min_insync) = (
        config.kafka.replication_factor,
        config.kafka.min_insync_replicas,
    );
    if factor.is_some_and(|f| f < 1) {
        problems.push("kafka.replication_factor", "must be at least 1");
    }
    if min_insync.is_some_and(|m| m < 1) {
        problems.push("kafka.min_insync_replicas", "must be at least 1");
    }
    if let (Some(factor), Some(min_insync)) = (factor, min_insync)
        && min_insync > factor
    {
        problems.push(
            "kafka.min_insync_replicas",
            format!(
                "is {min_insync}, more than kafka.replication_factor ({factor}): no write could ever be acknowledged"
            ),
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
        if topic.replication.is_some_and(|r| r < 1) {
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
        for host in &config.admin.allowed_hosts {
            if host.is_empty() || host.contains(['/', ' ', '@', '\\']) || host.contains("://") {
                problems.push(
                    "admin.allowed_hosts",
                    format!("'{host}' is not a host name like stagehost or admin.example.com"),
                );
            }
        }
    }
    if config.http.max_body_bytes == 0 {
        problems.push("http.max_body_bytes", "must be larger than zero");
    }
    if config.http.max_id_bytes == 0 {
        problems.push("http.max_id_bytes", "must be larger than zero");
    }
    if !(1..=MAX_INGRESS_PRODUCERS).contains(&config.http.ingress_producers) {
        problems.push(
            "http.ingress_producers",
            format!(
                "is {}; it must be between 1 and {MAX_INGRESS_PRODUCERS}",
                config.http.ingress_producers
            ),
        );
    }
    check_routes(config, problems);
    check_views(config, problems);
}

/// Paths the host serves itself.
const RESERVED_PATHS: [&str; 2] = ["/healthz", "/readyz"];

/// Checks a route or view path: starts with `/`, each segment a literal without braces or a
/// whole `{name}`, parameter names unique. Returns the parameters.
fn check_path(key: &str, path: &str, problems: &mut Problems) -> Vec<String> {
    if !path.starts_with('/') {
        problems.push(
            format!("{key}.path"),
            format!("'{path}' must start with '/'"),
        );
    }
    if RESERVED_PATHS.contains(&path) {
        problems.push(
            format!("{key}.path"),
            format!("'{path}' is served by the host itself; choose another path"),
        );
    }
    let mut params: Vec<String> = Vec::new();
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) => {
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    problems.push(
                        format!("{key}.path"),
                        format!(
                            "parameter '{{{name}}}' of '{path}' may only contain letters, digits, '-' and '_'"
                        ),
                    );
                } else if params.iter().any(|p| p == name) {
                    problems.push(
                        format!("{key}.path"),
                        format!("parameter '{{{name}}}' appears twice in '{path}'"),
                    );
                } else {
                    params.push(name.to_string());
                }
            }
            None if segment.contains(['{', '}']) => problems.push(
                format!("{key}.path"),
                format!(
                    "segment '{segment}' of '{path}' must be a literal or a whole '{{parameter}}'"
                ),
            ),
            None => {}
        }
    }
    params
}

fn check_routes(config: &PipelineConfig, problems: &mut Problems) {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (index, route) in config.http.routes.iter().enumerate() {
        let key = format!("http.routes[{}]", route.name());
        if let Some(first) = seen.insert(route.name(), index) {
            problems.push(
                key.clone(),
                format!("is declared twice (also as http.routes entry {first})"),
            );
        }
        if !["POST", "PUT", "PATCH", "DELETE"].contains(&route.method.as_str()) {
            problems.push(
                format!("{key}.method"),
                format!(
                    "'{}' is not one of POST, PUT, PATCH, DELETE (GET paths are read models: [[http.views]])",
                    route.method
                ),
            );
        }
        let params = check_path(&key, &route.path, problems);
        match config.stages.iter().find(|s| s.name == route.stage) {
            None => problems.push(
                format!("{key}.stage"),
                format!("no stage is named '{}'", route.stage),
            ),
            Some(stage) if !stage.is_http() => problems.push(
                format!("{key}.stage"),
                format!(
                    "stage '{}' does not take HTTP requests: set its input to \"{HTTP_INPUT}\"",
                    route.stage
                ),
            ),
            Some(_) => {}
        }
        if let Some(schema) = &route.schema {
            check_schema_file(&format!("{key}.schema"), schema, problems);
        }
        if route.id_field.is_empty() {
            problems.push(format!("{key}.id_field"), "is empty");
        }
        if route.event_type.is_empty() {
            problems.push(format!("{key}.event_type"), "is empty");
        }
        let template = route.key_template();
        let names = template_names(&template);
        if !names.contains(&route.id_field) {
            problems.push(
                format!("{key}.idempotency_key"),
                format!(
                    "'{template}' must contain {{{}}}, or every request of the route would share one key",
                    route.id_field
                ),
            );
        }
        for name in names {
            if name != route.id_field && !params.contains(&name) {
                problems.push(
                    format!("{key}.idempotency_key"),
                    format!(
                        "'{{{name}}}' is neither a parameter of '{}' nor the id_field '{}'",
                        route.path, route.id_field
                    ),
                );
            }
        }
    }
    for stage in config.stages.iter().filter(|s| s.is_http()) {
        if !config.http.routes.iter().any(|r| r.stage == stage.name) {
            problems.push(
                format!("stages[{}].input", stage.name),
                "is \"http\", but no [[http.routes]] entry names this stage",
            );
        }
    }
}

fn check_views(config: &PipelineConfig, problems: &mut Problems) {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (index, view) in config.http.views.iter().enumerate() {
        let key = format!("http.views[{}]", view.path);
        if let Some(first) = seen.insert(view.path.as_str(), index) {
            problems.push(
                key.clone(),
                format!("is declared twice (also as http.views entry {first})"),
            );
        }
        let params = check_path(&key, &view.path, problems);
        if !config.topics.contains_key(&view.topic) {
            problems.push(
                format!("{key}.topic"),
                format!("topic '{}' is not declared in [topics]", view.topic),
            );
        }
        match (&view.key, view.key_param()) {
            (Some(param), _) if !params.contains(param) => problems.push(
                format!("{key}.key"),
                format!("'{param}' is not a parameter of '{}'", view.path),
            ),
            (None, None) => problems.push(
                format!("{key}.key"),
                format!(
                    "'{}' has {} parameters; name the one that holds the record key",
                    view.path,
                    params.len()
                ),
            ),
            _ => {}
        }
        if let Some(stage) = &view.stage {
            if !config.stages.iter().any(|s| &s.name == stage) {
                problems.push(
                    format!("{key}.stage"),
                    format!("no stage is named '{stage}'"),
                );
            }
            if view.event_type.as_deref().is_none_or(str::is_empty) {
                problems.push(
                    format!("{key}.event_type"),
                    "is required with stage: the type of the events the stage's plugin answers",
                );
            }
        } else if view.event_type.is_some() {
            problems.push(
                format!("{key}.event_type"),
                "only means something with stage (the plugin that shapes the answer)",
            );
        }
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
    let mut groups: BTreeMap<String, &str> = BTreeMap::new();
    for (index, stage) in config.stages.iter().enumerate() {
        let key = if stage.name.is_empty() {
            format!("stages[{index}]")
        } else {
            format!("stages[{}]", stage.name)
        };
        check_stage_identity(&key, index, stage, &mut seen, problems);
        check_stage_inputs(config, &key, stage, &mut groups, problems);
        check_stage_tuning(&key, stage, problems);
        check_stage_reach(config, &key, stage, problems);
    }
}

/// A stage's name (well-formed, unique; `seen` holds the names before it) and plugin file.
fn check_stage_identity<'a>(
    key: &str,
    index: usize,
    stage: &'a StageConfig,
    seen: &mut BTreeMap<&'a str, usize>,
    problems: &mut Problems,
) {
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
}

/// A stage's inputs (declared topics, or `http` alone), its consumer group (unique; `groups`
/// holds those of the stages before it) and whether it can be fused.
fn check_stage_inputs<'a>(
    config: &PipelineConfig,
    key: &str,
    stage: &'a StageConfig,
    groups: &mut BTreeMap<String, &'a str>,
    problems: &mut Problems,
) {
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
    if stage.fuse == Some(true) && (inputs.len() != 1 || inputs.contains(&HTTP_INPUT)) {
        problems.push(
            format!("{key}.fuse"),
            "only a stage fed by exactly one topic can be fused; leave fuse out",
        );
    }
}

/// A stage's commit interval, batch size, plugin limits and retry settings.
fn check_stage_tuning(key: &str, stage: &StageConfig, problems: &mut Problems) {
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
}

/// What a stage may read (its `read_dirs`) and where it writes (declared output topics).
fn check_stage_reach(
    config: &PipelineConfig,
    key: &str,
    stage: &StageConfig,
    problems: &mut Problems,
) {
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
