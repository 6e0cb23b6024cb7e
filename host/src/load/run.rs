//! [`run`]: one load run from start to report: check access, read the done topic, send,
//! settle, measure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cpu;
use super::done::{self, Tracker};
use super::drive::{self, Sender};
use super::options::LoadOptions;
use super::report::{LoadReport, quantile};
use super::request::{Matcher, RequestTemplate, Template};
use crate::kafka::{ACCESS_PATIENCE, KafkaClients, check_access};

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
