//! [`LoadOptions`]: what `stagehost load` sends, where, and how it knows a request is done.

use std::time::Duration;

/// What to send, where, and how to know a request is done (also the flags of
/// `stagehost load`).
#[derive(Debug, Clone, clap::Args)]
pub struct LoadOptions {
    /// The URL to post each request to; `{id}` in it is replaced by the request's unique id.
    #[arg(long)]
    pub url: String,
    /// The body of each request, with `{id}` where the request's unique id goes; `@file`
    /// reads it from a file.
    #[arg(long)]
    pub body: String,
    /// The `content-type` of each request.
    #[arg(long, default_value = "application/json")]
    pub content_type: String,
    /// Kafka bootstrap servers (to read the done topic); default 127.0.0.1:9092, or the
    /// `--config` file's.
    #[arg(long, env = "KAFKA_BROKERS")]
    pub brokers: Option<String>,
    /// A pipeline configuration whose `[kafka]` settings (security, SASL, TLS, …) reach the
    /// brokers.
    #[arg(long, short, env = "STAGEHOST_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// The topic whose records tell that a request is done.
    #[arg(long)]
    pub done_topic: String,
    /// The field of a done record's JSON payload that holds the request id (`a.b` for a
    /// nested field); without it, the record's key is the request id.
    #[arg(long)]
    pub match_field: Option<String>,
    /// Done records per request; the last one completes it.
    #[arg(long, default_value_t = 1)]
    pub done_per_request: usize,
    /// Requests per second (open loop).
    #[arg(long, default_value_t = 100.0, conflicts_with = "clients")]
    pub rate: f64,
    /// Closed loop instead: this many clients, each sending its next request as soon as
    /// the previous one is answered.
    #[arg(long)]
    pub clients: Option<usize>,
    /// How long to send (e.g. `10s`).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// How long to wait for the last requests to complete after sending stops.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// Prefix of the generated request ids, unique per run (not a flag).
    #[arg(skip = unique_prefix())]
    pub id_prefix: String,
}

impl LoadOptions {
    /// Options with every default: open loop at 100 requests/s for 10 s, one done record
    /// per request matched by key.
    pub fn new(url: &str, body: &str, done_topic: &str) -> Self {
        Self {
            url: url.into(),
            body: body.into(),
            content_type: "application/json".into(),
            brokers: None,
            config: None,
            done_topic: done_topic.into(),
            match_field: None,
            done_per_request: 1,
            rate: 100.0,
            clients: None,
            duration: Duration::from_secs(10),
            settle: Duration::from_secs(30),
            id_prefix: unique_prefix(),
        }
    }
}

/// `load-` and eight random hex digits.
fn unique_prefix() -> String {
    format!("load-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}
