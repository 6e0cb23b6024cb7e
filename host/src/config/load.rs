//! Reading `pipeline.toml`: parse, apply environment overrides, resolve paths, validate.

use std::path::{Path, PathBuf};

use super::kafka_settings::interpolate;
use super::model::{KafkaConfig, PipelineConfig};
use super::problem::Problem;
use super::validate::validate;

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The configuration file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the expected shape.
    #[error("{path} is not a valid pipeline configuration:\n{message}")]
    Parse {
        /// The configuration file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The file parsed but some values are wrong; every problem is listed.
    #[error("{path} has {} problem(s):\n{}", problems.len(), render(problems))]
    Invalid {
        /// The configuration file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

fn render(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|problem| format!("  - {problem}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Environment variables that override configuration values.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `KAFKA_BROKERS`: replaces `kafka.brokers`.
    pub brokers: Option<String>,
    /// `STAGEHOST_HTTP_ADDR`: replaces `http.listen`.
    pub http_listen: Option<String>,
    /// `STAGEHOST_ADMIN_ADDR`: replaces `admin.listen`.
    pub admin_listen: Option<String>,
    /// `STAGEHOST_ADMIN_TOKEN_FILE`: replaces `admin.token_file`.
    pub admin_token_file: Option<PathBuf>,
    /// `STAGEHOST_ADMIN_READ_TOKEN_FILE`: replaces `admin.read_token_file`.
    pub admin_read_token_file: Option<PathBuf>,
    /// `STAGEHOST_ADMIN_ALLOWED_HOSTS` (comma-separated): added to `admin.allowed_hosts`.
    pub admin_allowed_hosts: Vec<String>,
    /// `STAGEHOST_STATE_DIR`: replaces `state.dir`.
    pub state_dir: Option<PathBuf>,
    /// `STAGEHOST_INSTANCE`: replaces `state.instance_id`.
    pub instance_id: Option<String>,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: replaces `telemetry.otlp_endpoint`.
    pub otlp_endpoint: Option<String>,
}

impl Overrides {
    /// Reads the overrides from the process environment (empty values are ignored).
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Self {
            brokers: var("KAFKA_BROKERS"),
            http_listen: var("STAGEHOST_HTTP_ADDR"),
            admin_listen: var("STAGEHOST_ADMIN_ADDR"),
            admin_token_file: var("STAGEHOST_ADMIN_TOKEN_FILE").map(PathBuf::from),
            admin_read_token_file: var("STAGEHOST_ADMIN_READ_TOKEN_FILE").map(PathBuf::from),
            admin_allowed_hosts: var("STAGEHOST_ADMIN_ALLOWED_HOSTS")
                .map(|hosts| {
                    hosts
                        .split(',')
                        .map(str::trim)
                        .filter(|h| !h.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            state_dir: var("STAGEHOST_STATE_DIR").map(PathBuf::from),
            instance_id: var("STAGEHOST_INSTANCE"),
            otlp_endpoint: var("OTEL_EXPORTER_OTLP_ENDPOINT"),
        }
    }
}

/// Loads and validates a pipeline configuration file.
pub fn load(path: &Path, overrides: &Overrides) -> Result<PipelineConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    // Resolve relative paths against the file's folder as an absolute path, so they stay
    // right whatever the working directory (and wasmtime's cache insists on absolute ones).
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let base = absolute.parent().unwrap_or(Path::new("."));
    parse(&text, path, base, overrides)
}

/// Parses configuration text; relative paths inside it are resolved against `base`.
pub fn parse(
    text: &str,
    path: &Path,
    base: &Path,
    overrides: &Overrides,
) -> Result<PipelineConfig, ConfigError> {
    let mut config: PipelineConfig = toml::from_str(text).map_err(|error| ConfigError::Parse {
        path: path.to_path_buf(),
        message: error.to_string().trim_end().to_string(),
    })?;
    apply(&mut config, overrides);
    resolve_paths(&mut config, base);
    let mut problems = fill_env(&mut config.kafka, &|name| std::env::var(name).ok());
    problems.extend(validate(&config));
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            problems,
        })
    }
}

fn apply(config: &mut PipelineConfig, overrides: &Overrides) {
    if let Some(brokers) = &overrides.brokers {
        config.kafka.brokers.clone_from(brokers);
    }
    if let Some(endpoint) = &overrides.otlp_endpoint {
        config.telemetry.otlp_endpoint = Some(endpoint.clone());
    }
    if let Some(listen) = &overrides.http_listen {
        config.http.listen.clone_from(listen);
    }
    if let Some(listen) = &overrides.admin_listen {
        config.admin.listen.clone_from(listen);
    }
    if let Some(file) = &overrides.admin_token_file {
        config.admin.token_file = Some(file.clone());
    }
    if let Some(file) = &overrides.admin_read_token_file {
        config.admin.read_token_file = Some(file.clone());
    }
    config
        .admin
        .allowed_hosts
        .extend(overrides.admin_allowed_hosts.iter().cloned());
    if let Some(dir) = &overrides.state_dir {
        config.state.dir.clone_from(dir);
    }
    if let Some(instance) = &overrides.instance_id {
        config.state.instance_id.clone_from(instance);
    }
}

/// Fills `${VAR}` in `kafka.brokers` and every librdkafka property; a variable that is not set
/// is a problem naming it and the key.
fn fill_env(kafka: &mut KafkaConfig, lookup: &impl Fn(&str) -> Option<String>) -> Vec<Problem> {
    let mut problems = Vec::new();
    match interpolate(&kafka.brokers, lookup) {
        Ok(brokers) => kafka.brokers = brokers,
        Err(message) => problems.push(Problem {
            key: "kafka.brokers".into(),
            message,
        }),
    }
    problems.extend(kafka.settings.interpolate("kafka", lookup));
    problems.extend(kafka.producer.interpolate("kafka.producer", lookup));
    problems.extend(kafka.consumer.interpolate("kafka.consumer", lookup));
    problems.extend(kafka.admin.interpolate("kafka.admin", lookup));
    problems
}

fn resolve_paths(config: &mut PipelineConfig, base: &Path) {
    let resolve = |path: &mut PathBuf| {
        if path.is_relative() {
            *path = base.join(&*path);
        }
    };
    resolve(&mut config.state.dir);
    for file in [
        &mut config.admin.token_file,
        &mut config.admin.read_token_file,
    ]
    .into_iter()
    .flatten()
    {
        resolve(file);
    }
    for route in &mut config.http.routes {
        if let Some(schema) = route.schema.as_mut() {
            resolve(schema);
        }
    }
    for topic in config.topics.values_mut() {
        if let Some(schema) = topic.schema.as_mut() {
            resolve(schema);
        }
    }
    for stage in &mut config.stages {
        resolve(&mut stage.plugin);
        for dir in &mut stage.capabilities.read_dirs {
            resolve(dir);
        }
    }
}
