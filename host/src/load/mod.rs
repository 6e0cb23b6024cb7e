//! `stagehost load`: a load generator for any pipeline behind an HTTP ingress.
//!
//! Each request gets a unique id (`<prefix>-<n>`), put in place of `{id}` in the URL and the
//! body template. A request is done when the done topic has held the expected number of
//! records naming it (by record key, or by a field of the JSON payload): e.g. for a pipeline
//! whose last stage writes `TicketClosed` keyed by the ticket id,
//! `--body '{"ticket_id": "{id}"}' --done-topic TicketClosed`.
//!
//! Two modes: open loop at `--rate` (each request due at a fixed time whatever the answers'
//! speed, latency counted from that due time: no coordinated omission) and closed loop with
//! `--clients N` (each client sends its next request when the previous one is answered).
//! Latencies go into HDR histograms; the report includes the generator's own CPU time, so a
//! reader can tell how much of the machine it took from what it measured.
//!
//! - [`request`]: the URL and body templates, and how a done record names its request.
//! - [`done`]: the done topic's reader and the requests in flight.
//! - [`drive`]: open and closed loop sending.
//! - [`cpu`]: CPU time of a process.

pub mod cpu;
pub mod done;
mod drive;
pub mod request;

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::kafka::{ACCESS_PATIENCE, KafkaClients, check_access};
use done::Tracker;
use drive::Sender;
use request::{Matcher, RequestTemplate, Template};

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

/// The outcome of a load run.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// `open` (fixed rate) or `closed` (fixed number of clients).
    pub mode: &'static str,
    /// Target rate, requests/s (open loop).
    pub target_rate: Option<f64>,
    /// Concurrent clients (closed loop).
    pub clients: Option<usize>,
    /// Requests posted.
    pub sent: u64,
    /// Requests answered with a 2xx status.
    pub accepted: u64,
    /// Requests whose last done record arrived.
    pub completed: u64,
    /// Posts that failed or got another status.
    pub errors: u64,
    /// Requests posted per second while sending.
    pub achieved_rate: f64,
    /// Requests accepted per second while sending.
    pub accepted_rate: f64,
    /// Requests completed per second, from the start to the last completion.
    pub completed_rate: f64,
    /// Latency to the last done record (from the due time in open loop, from the send in
    /// closed loop), in microseconds: median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
    /// Latency to the HTTP answer, median, microseconds.
    pub answer_p50_us: u64,
    /// Latency to the HTTP answer, 99th percentile.
    pub answer_p99_us: u64,
    /// CPU seconds (user + system) the load generator's process used over the run.
    pub cpu_seconds: f64,
    /// The same as a share of one core over the run's wall time.
    pub cpu_cores: f64,
    /// Wall time of the whole run (sending and settling), seconds.
    pub wall_seconds: f64,
}

impl LoadReport {
    /// One line for people.
    pub fn summary(&self) -> String {
        let load = match (self.target_rate, self.clients) {
            (_, Some(clients)) => format!("{clients} clients (closed loop)"),
            (rate, None) => format!("{:.0}/s target (open loop)", rate.unwrap_or(0.0)),
        };
        format!(
            "{load}: sent {} ({:.0}/s), accepted {} ({:.0}/s), completed {} ({:.0}/s), errors {}; \
             to the last done record p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms; \
             HTTP answer p50 {:.1} ms, p99 {:.1} ms; load generator CPU {:.2} s ({:.2} cores)",
            self.sent,
            self.achieved_rate,
            self.accepted,
            self.accepted_rate,
            self.completed,
            self.completed_rate,
            self.errors,
            ms(self.p50_us),
            ms(self.p99_us),
            ms(self.p999_us),
            ms(self.max_us),
            ms(self.answer_p50_us),
            ms(self.answer_p99_us),
            self.cpu_seconds,
            self.cpu_cores,
        )
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn quantile(histogram: &Histogram<u64>, q: f64) -> u64 {
    if histogram.is_empty() {
        0
    } else {
        histogram.value_at_quantile(q)
    }
}

/// Runs the load and waits for the requests to complete (or `settle` to pass).
pub async fn run(options: &LoadOptions) -> anyhow::Result<LoadReport> {
    let requests = RequestTemplate::new(&options.url, Template::from_argument(&options.body)?)?;
    if options.clients.is_none() {
        anyhow::ensure!(options.rate > 0.0, "--rate must be above zero");
    }
    anyhow::ensure!(options.clients != Some(0), "--clients must be at least 1");
    let kafka = KafkaClients::for_tool(options.config.as_deref(), options.brokers.as_deref())?;
    let checking = kafka.clone();
    tokio::task::spawn_blocking(move || check_access(&checking, ACCESS_PATIENCE)).await??;
    let tracker = Arc::new(Tracker::new(
        Matcher::new(options.match_field.as_deref()),
        options.done_per_request,
    )?);
    let reader = tokio::spawn(done::read(
        done::done_consumer(&kafka, &options.done_topic)?,
        tracker.clone(),
    ));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(30))
        .build()?;
    let sender = Arc::new(Sender::new(
        client,
        requests,
        options.content_type.clone(),
        tracker.clone(),
        options.id_prefix.clone(),
    )?);

    let cpu_before = cpu::cpu_seconds(None).unwrap_or(0.0);
    let start = Instant::now();
    let sent = match options.clients {
        Some(clients) => drive::closed_loop(sender.clone(), clients, options.duration).await,
        None => drive::open_loop(sender.clone(), options.rate, options.duration).await,
    };
    let settle_until = Instant::now() + options.settle;
    while tracker.completed() < sent.accepted && Instant::now() < settle_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reader.abort();
    let wall = start.elapsed();
    let cpu_seconds = (cpu::cpu_seconds(None).unwrap_or(0.0) - cpu_before).max(0.0);
    let (latency, last_completion) = tracker.finish();
    let completed = latency.len();
    let completing = last_completion.map_or(wall, |last| last - start);
    let per_second = |count: u64, over: Duration| count as f64 / over.as_secs_f64().max(1e-9);
    Ok(LoadReport {
        mode: if options.clients.is_some() {
            "closed"
        } else {
            "open"
        },
        target_rate: options.clients.is_none().then_some(options.rate),
        clients: options.clients,
        sent: sent.sent,
        accepted: sent.accepted,
        completed,
        errors: sent.errors,
        achieved_rate: per_second(sent.sent, sent.sending),
        accepted_rate: per_second(sent.accepted, sent.sending),
        completed_rate: per_second(completed, completing),
        p50_us: quantile(&latency, 0.5),
        p99_us: quantile(&latency, 0.99),
        p999_us: quantile(&latency, 0.999),
        max_us: latency.max(),
        answer_p50_us: quantile(&sent.answers, 0.5),
        answer_p99_us: quantile(&sent.answers, 0.99),
        cpu_seconds,
        cpu_cores: cpu_seconds / wall.as_secs_f64().max(1e-9),
        wall_seconds: wall.as_secs_f64(),
    })
}
