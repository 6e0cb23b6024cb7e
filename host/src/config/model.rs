//! The shape of `pipeline.toml`: serde structs whose doc comments are the configuration reference.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::kafka_settings::KafkaSettings;

/// The whole pipeline: Kafka settings, the HTTP ingress, host-owned services and the stages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// How to reach Kafka and which client settings to use.
    pub kafka: KafkaConfig,
    /// The HTTP server: ingress routes, read models, health and readiness.
    #[serde(default)]
    pub http: HttpConfig,
    /// Where the host keeps its durable local state (idempotency records, compiled plugins).
    #[serde(default)]
    pub state: StateConfig,
    /// Windowed KPI publishing.
    #[serde(default)]
    pub kpi: KpiConfig,
    /// The admin API (plugin swaps): `stagehost plugin …` talks to it.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Metrics and traces: what the host exports about itself.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Where events that cannot be processed are sent.
    pub dead_letter: DeadLetterConfig,
    /// Every topic the pipeline reads or writes, by name.
    #[serde(default)]
    pub topics: BTreeMap<String, TopicConfig>,
    /// The stages, in pipeline order.
    #[serde(default)]
    pub stages: Vec<StageConfig>,
}

/// Kafka connection and client settings.
///
/// Every key of `[kafka]` that is not one of the host's own below is a librdkafka property
/// that every client the host and its commands create gets (`security.protocol`, `sasl.*`,
/// `ssl.*`, …); `[kafka.producer]`, `[kafka.consumer]` and `[kafka.admin]` hold properties
/// for one role only and win over them. Values may name environment variables as `${VAR}`,
/// so secrets stay out of the file.
#[derive(Debug, Clone, Deserialize)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma separated. The `KAFKA_BROKERS` environment variable overrides it.
    pub brokers: String,
    /// Create declared topics that do not exist yet when the host starts.
    #[serde(default = "default_true")]
    pub create_topics: bool,
    /// How long a stage's transaction may stay open before the broker aborts it; it bounds how
    /// long readers wait after an instance dies mid-transaction.
    #[serde(default = "default_transaction_timeout", with = "humantime_serde")]
    pub transaction_timeout: Duration,
    /// Replicas of each partition of every topic the host creates (the declared topics, the
    /// stages' changelogs, processed-id and answers topics): 3 on a 3-broker cluster. A topic's
    /// own `replication` wins; unset, the broker's `default.replication.factor` applies.
    #[serde(default)]
    pub replication_factor: Option<i32>,
    /// `min.insync.replicas` of every topic the host creates: how many replicas must have a
    /// write before it is acknowledged (the host's producers use `acks=all`); 2 with 3
    /// replicas survives one broker down. Unset, the broker's `min.insync.replicas` applies.
    #[serde(default)]
    pub min_insync_replicas: Option<i32>,
    /// librdkafka properties of every producer: the shared one, the stages' transactional
    /// ones, dead-letter replay and `stagehost load` (they override the host's defaults).
    #[serde(default)]
    pub producer: KafkaSettings,
    /// librdkafka properties of every consumer: stage consumers, state and answer restores,
    /// read models, dead-letter listing, `stagehost tail` and `stagehost load`.
    #[serde(default)]
    pub consumer: KafkaSettings,
    /// librdkafka properties of the admin client (topic creation) and metadata look-ups.
    #[serde(default)]
    pub admin: KafkaSettings,
    /// librdkafka properties of every client: every other key of `[kafka]`.
    #[serde(flatten)]
    pub settings: KafkaSettings,
}

/// Default of `http.ingress_producers`.
pub const DEFAULT_INGRESS_PRODUCERS: usize = 4;
/// Most of `http.ingress_producers`: the ids up to it that a host does not use are fenced at
/// start, so a transaction left open by a predecessor with more producers does not hold
/// `read_committed` readers back until it times out.
pub const MAX_INGRESS_PRODUCERS: usize = 8;

/// The HTTP server: the routes that feed ingress stages, the read models, health and readiness.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address. The `STAGEHOST_HTTP_ADDR` environment variable overrides it.
    pub listen: String,
    /// Largest accepted request body in bytes; larger bodies get `413 Payload Too Large`.
    pub max_body_bytes: usize,
    /// Longest an ingress request waits for its events to be committed. Past it (the brokers
    /// are unreachable, say) the answer is `503 Service Unavailable` with `Retry-After`; a
    /// repeat of the request later gets the first answer if the events did commit after all.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Longest accepted request id (a route's `id_field`), in bytes; longer gets `400`.
    pub max_id_bytes: usize,
    /// Transactions an exactly-once ingress stage keeps in flight at once: one transactional
    /// producer each (`transactional.id` `<group>.<instance>`, then `-1`, `-2`, ...), each
    /// committing together what is queued when it is free. 1 to
    /// [`MAX_INGRESS_PRODUCERS`].
    pub ingress_producers: usize,
    /// Routes whose requests are handled by an ingress stage (`[[http.routes]]`).
    pub routes: Vec<RouteConfig>,
    /// Read models: `GET` paths answered from the latest record of a topic (`[[http.views]]`).
    pub views: Vec<ViewConfig>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(10),
            max_id_bytes: 256,
            ingress_producers: DEFAULT_INGRESS_PRODUCERS,
            routes: Vec::new(),
            views: Vec::new(),
        }
    }
}

/// One ingress route: requests to `method path` become events of `event_type` handed to
/// `stage` (a stage whose `input` is `"http"`); its outputs are published before the answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// HTTP method: `POST` (the default), `PUT`, `PATCH` or `DELETE`.
    #[serde(default = "default_route_method")]
    pub method: String,
    /// Path, starting with `/`; a segment `{name}` is a path parameter (e.g.
    /// `/things/{thing_id}/refill`). Each parameter reaches the plugin as the input header
    /// `stagehost-path-<name>`.
    pub path: String,
    /// The stage that handles the route's requests; its `input` must be `"http"`.
    pub stage: String,
    /// JSON Schema every request body must satisfy before the stage sees it (`400` otherwise).
    #[serde(default)]
    pub schema: Option<PathBuf>,
    /// Body field (a non-empty string) that identifies a request: a repeat with the same body
    /// gets the first answer, the same id with another body gets `409`.
    pub id_field: String,
    /// The idempotency key of a request, as a template of `{name}` placeholders that name path
    /// parameters or `id_field` (e.g. `"refill/{thing_id}/{refill_id}"`). It scopes the id (the
    /// same id under two paths is two requests) and gives the event id. Default: `{<id_field>}`.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// CloudEvents `ce_type` of the events the route hands its stage.
    pub event_type: String,
}

impl RouteConfig {
    /// `METHOD path`, naming the route in messages.
    pub fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// The idempotency-key template, with its default.
    pub fn key_template(&self) -> String {
        self.idempotency_key
            .clone()
            .unwrap_or_else(|| format!("{{{}}}", self.id_field))
    }
}

/// One read model: `GET path` answers the latest record of `topic` whose Kafka key is the
/// value of the path parameter `key`, or `404` when the topic has none.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewConfig {
    /// Path, starting with `/`, with at least one `{parameter}` (e.g. `/things/{thing_id}`).
    pub path: String,
    /// Declared topic whose latest record per key answers.
    pub topic: String,
    /// Path parameter that holds the record key; default: the path's only parameter.
    #[serde(default)]
    pub key: Option<String>,
    /// Optional stage whose plugin shapes the answer: it is called (without state, nothing is
    /// published) with an event of `event_type`, keyed by the key, whose payload is the latest
    /// record or `null`, with the path parameters as `stagehost-path-<name>` headers. Its first
    /// output's payload is the answer (`200`); no output or a `reject` answers `404` (with
    /// the reason). This lets the plugin that owns the data answer for keys without a record.
    #[serde(default)]
    pub stage: Option<String>,
    /// `ce_type` of the events handed to `stage`; required with `stage`.
    #[serde(default)]
    pub event_type: Option<String>,
}

impl ViewConfig {
    /// The path parameter that holds the record key.
    pub fn key_param(&self) -> Option<String> {
        match &self.key {
            Some(key) => Some(key.clone()),
            None => {
                let params = path_params(&self.path);
                (params.len() == 1).then(|| params[0].clone())
            }
        }
    }
}

/// The `{name}` parameters of a route path, in order.
pub fn path_params(path: &str) -> Vec<String> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(str::to_string)
        .collect()
}

/// The `{name}` placeholders of an idempotency-key template, in order.
pub fn template_names(template: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                names.push(after[..close].to_string());
                rest = &after[close + 1..];
            }
            None => break,
        }
    }
    names
}

/// The admin API: plugin list, swap and rollback. It has its own listener so that it can be
/// kept off the network the ingress routes are exposed to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Serve the admin API at all.
    pub enabled: bool,
    /// Listen address. The `STAGEHOST_ADMIN_ADDR` environment variable overrides it.
    pub listen: String,
    /// Largest plugin a swap request may upload, in bytes.
    pub max_plugin_bytes: usize,
    /// A file holding the admin token: every call needs it as `Authorization: Bearer …`
    /// (the `STAGEHOST_ADMIN_TOKEN` environment variable, the token itself, wins; the
    /// `STAGEHOST_ADMIN_TOKEN_FILE` variable replaces this key). Without either, a loopback
    /// admin API generates one into `<state.dir>/admin-token` and any other refuses to start.
    pub token_file: Option<PathBuf>,
    /// A file holding the read-only token, which may call `GET`s (plugin and held-record
    /// lists, the console's data, `/metrics`) but nothing that changes anything
    /// (`STAGEHOST_ADMIN_READ_TOKEN` wins; `STAGEHOST_ADMIN_READ_TOKEN_FILE` replaces it).
    pub read_token_file: Option<PathBuf>,
    /// Host names a request's `Host` may carry besides the listen address, loopback
    /// addresses and `localhost` (e.g. the name Prometheus scrapes the host by). The
    /// `STAGEHOST_ADMIN_ALLOWED_HOSTS` variable (comma-separated) adds to it.
    pub allowed_hosts: Vec<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "127.0.0.1:9091".into(),
            max_plugin_bytes: 64 * 1024 * 1024,
            token_file: None,
            read_token_file: None,
            allowed_hosts: Vec::new(),
        }
    }
}

/// Metrics (`GET /metrics` on the admin listener) and traces (OpenTelemetry over OTLP).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Record metrics and serve them at `GET /metrics` (off: no recorder, nothing counted).
    pub metrics: bool,
    /// Where to send trace spans over OTLP/HTTP (e.g. `http://127.0.0.1:4318`); none: no
    /// spans are made. The `OTEL_EXPORTER_OTLP_ENDPOINT` environment variable sets it.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of the spans.
    pub service_name: String,
    /// The share of traces recorded (0 to 1), decided where a trace starts and followed by
    /// every stage (`ParentBased(TraceIdRatioBased)`).
    pub trace_sample_ratio: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            metrics: true,
            otlp_endpoint: None,
            service_name: "stagehost".into(),
            trace_sample_ratio: 1.0,
        }
    }
}

/// Durable local state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Directory for the idempotency store and the compiled-plugin cache.
    /// The `STAGEHOST_STATE_DIR` environment variable overrides it.
    pub dir: PathBuf,
    /// How long the id of a processed event is remembered (e.g. `"7d"`).
    #[serde(with = "humantime_serde")]
    pub idempotency_retention: Duration,
    /// Name of this host instance, unique among the instances sharing the stages and stable
    /// across its restarts: it makes the transactional ids that fence a crashed incarnation.
    /// The `STAGEHOST_INSTANCE` environment variable overrides it.
    pub instance_id: String,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from(".stagehost/state"),
            idempotency_retention: Duration::from_secs(7 * 24 * 3600),
            instance_id: "host-0".into(),
        }
    }
}

/// KPI publishing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KpiConfig {
    /// Publish KPIs at all.
    pub enabled: bool,
    /// Topic the KPI events go to; must be declared in `[topics]`.
    pub topic: String,
    /// Aggregation window (e.g. `"5s"`): one event per stage and metric per window.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for KpiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            topic: "KPIs".into(),
            interval: Duration::from_secs(5),
        }
    }
}

/// The dead-letter queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// Topic dead letters go to; must be declared in `[topics]`.
    pub topic: String,
}

/// One topic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// Partitions to create the topic with.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Replication factor to create the topic with; unset, `kafka.replication_factor` (and
    /// without that, the broker's default).
    #[serde(default)]
    pub replication: Option<i32>,
    /// CloudEvents `ce_type` of the events on this topic; defaults to the topic's name.
    #[serde(default)]
    pub event_type: Option<String>,
    /// JSON Schema (draft 2020-12) every event on this topic must satisfy.
    #[serde(default)]
    pub schema: Option<PathBuf>,
    /// Whether stages validate every event they read from this topic against its schema.
    /// When false (the default), events that a stage of this pipeline wrote to the topic
    /// (`ce_source` `/stagehost/<stage>` of a stage with the topic among its outputs) are
    /// not validated again on read: that stage validated them against the same schema
    /// before publishing. Events from any other producer are always validated.
    #[serde(default)]
    pub revalidate: bool,
    /// A table of the latest record per key (a read model, read by `[[http.views]]`): a stage
    /// writes only the last record of each key per transaction (commit interval, at least
    /// once) instead of every intermediate one, and the topic is created compacted. Readers
    /// that need every change must not read such a topic.
    #[serde(default)]
    pub latest_per_key: bool,
}

/// One stage: a plugin, where its input comes from and where its outputs go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// Unique stage name; used in logs, metrics, event ids and the default consumer group.
    pub name: String,
    /// Path of the stage's WebAssembly component.
    pub plugin: PathBuf,
    /// `"http"` for the HTTP ingress, otherwise a declared topic or a list of declared topics.
    pub input: InputSpec,
    /// Consumer group; defaults to `stagehost-<name>`.
    #[serde(default)]
    pub group: Option<String>,
    /// Logical output name (as the plugin emits it) to declared topic.
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
    /// Processing guarantee: `exactly_once` (Kafka transactions) or `at_least_once`.
    #[serde(default)]
    pub mode: ProcessingMode,
    /// Longest time a transaction stays open while input keeps arriving (like Kafka Streams'
    /// `commit.interval.ms`); when input pauses the transaction commits at once. At-least-once:
    /// how often the stage waits for its outputs' acknowledgements, then records the inputs as
    /// processed and stores their offsets.
    #[serde(default = "default_commit_interval", with = "humantime_serde")]
    pub commit_interval: Duration,
    /// Largest number of input events handled together.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// The watchdog's patience: a stage that has input waiting on a partition it owns (not
    /// parked for a retry, not held), or is not a member of its consumer group, and consumes
    /// nothing for this long is stalled: unready with the reason, and rebuilt.
    #[serde(default = "default_stall_timeout", with = "humantime_serde")]
    pub stall_timeout: Duration,
    /// Sandbox limits for the plugin.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// What the plugin may reach beyond its input and `config`; nothing unless granted here.
    #[serde(default)]
    pub capabilities: CapabilitiesConfig,
    /// How events whose plugin asks for a retry are retried.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Most entries the stage's keyed state may hold (the store's estimate: overwritten and
    /// deleted keys count until the store compacts them); an event that writes a value while
    /// the state holds that many is dead-lettered (`state full: …`). None: no cap.
    #[serde(default)]
    pub state_max_keys: Option<u64>,
    /// Whether the stage may be fused (run inside the workers of the stages that write its
    /// input, in their transactions), when it qualifies: fed by exactly one topic, no keyed
    /// state, the same `mode` as the writer. Defaults to true; `false` keeps it in its own
    /// worker only.
    #[serde(default)]
    pub fuse: Option<bool>,
    /// The stage keeps no keyed state although its plugin's world could (one component serving
    /// stateful and stateless stages): the plugin is called without state (reads find nothing;
    /// a write fails the event), the host keeps no changelog for it, and it can be fused.
    #[serde(default)]
    pub stateless: bool,
    /// Free-form table handed to the plugin through the `config` import.
    #[serde(default)]
    pub config: toml::Table,
}

impl StageConfig {
    /// The consumer group this stage joins.
    pub fn group_id(&self) -> String {
        self.group
            .clone()
            .unwrap_or_else(|| format!("stagehost-{}", self.name))
    }

    /// Whether the stage is fed by the HTTP ingress rather than topics.
    pub fn is_http(&self) -> bool {
        self.inputs() == [HTTP_INPUT]
    }

    /// Whether the stage keeps keyed state, given whether its plugin's world can
    /// (`stateless = true` says it does not).
    pub fn keeps_state(&self, plugin_uses_state: bool) -> bool {
        plugin_uses_state && !self.stateless
    }

    /// Whether the stage allows fusion (`fuse`, true unless set to false).
    pub fn fuses(&self) -> bool {
        self.fuse.unwrap_or(true)
    }

    /// The input topics (or `["http"]`).
    pub fn inputs(&self) -> Vec<&str> {
        match &self.input {
            InputSpec::One(topic) => vec![topic.as_str()],
            InputSpec::Many(topics) => topics.iter().map(String::as_str).collect(),
        }
    }
}

/// One input topic, or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum InputSpec {
    /// A single topic, or `"http"`.
    One(String),
    /// Several topics, consumed by one consumer.
    Many(Vec<String>),
}

/// The processing guarantee of a stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessingMode {
    /// Outputs, state changes and consumed offsets commit together in a Kafka transaction.
    #[default]
    ExactlyOnce,
    /// Outputs are acknowledged before offsets are committed; a crash may repeat outputs
    /// (with the same ids, which the next stage drops).
    AtLeastOnce,
}

/// The `input` value that selects the HTTP ingress.
pub const HTTP_INPUT: &str = "http";

/// Sandbox limits of one plugin instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest linear memory of the plugin in bytes.
    pub max_memory_bytes: usize,
    /// Longest time one event may take inside the plugin (e.g. `"1s"`), enforced by epoch
    /// interruption.
    #[serde(with = "humantime_serde")]
    pub max_event_time: Duration,
    /// Optional deterministic budget: WebAssembly fuel units one event may burn. Setting it on
    /// any stage turns fuel metering on for every plugin (about 15% slower calls).
    pub fuel: Option<u64>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_memory_bytes: 64 * 1024 * 1024,
            max_event_time: Duration::from_secs(1),
            fuel: None,
        }
    }
}

/// Capabilities a plugin is granted. By default a plugin sees no files, no network, no
/// environment, no standard streams, and a clock frozen at the Unix epoch (so its outputs
/// cannot depend on when it runs, and a replay gives the same result).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CapabilitiesConfig {
    /// Host environment variables passed to the plugin (by name; unset ones are skipped).
    pub env: Vec<String>,
    /// Host directories the plugin may read, mounted read-only at the same relative path.
    pub read_dirs: Vec<PathBuf>,
    /// Real wall and monotonic clocks.
    pub clock: bool,
    /// Outbound TCP and UDP and name lookups.
    pub network: bool,
    /// The plugin's stdout and stderr go to the host's stderr.
    pub stdio: bool,
}

/// Retries of events whose plugin answers `retry`. While an event waits for its next attempt,
/// its partition is paused (so later events of the same key cannot overtake it) and the other
/// partitions keep flowing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts in all, the first included; then the event is dead-lettered.
    pub max_attempts: u32,
    /// Delay before the second attempt; doubled for each further one.
    #[serde(with = "humantime_serde")]
    pub initial_delay: Duration,
    /// Upper bound of the delay.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryConfig {
    /// The delay before attempt `next_attempt` (2 or more): `initial_delay` doubled for each
    /// further attempt, capped at `max_delay`, with equal jitter.
    pub fn delay_before(&self, next_attempt: u32) -> Duration {
        crate::backoff::jittered(
            self.initial_delay,
            self.max_delay,
            next_attempt.saturating_sub(2),
        )
    }
}

fn default_route_method() -> String {
    "POST".into()
}
fn default_true() -> bool {
    true
}
fn default_partitions() -> i32 {
    3
}
fn default_max_batch() -> usize {
    500
}
fn default_stall_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_commit_interval() -> Duration {
    Duration::from_millis(100)
}
fn default_transaction_timeout() -> Duration {
    Duration::from_secs(10)
}
