//! `stagehost load`: an open-loop load generator for any running deployment.
//!
//! Orders are posted at a fixed rate whatever the answers' speed (open loop): order `i` is due
//! at `start + i / rate`, and its latency is measured from that due time, not from when it
//! was actually sent, so a stalled system cannot hide its stall by slowing the generator down
//! (no coordinated omission). An order is complete when its last expected notification is
//! read from the notifications topic; latencies go into an HDR histogram (microseconds).

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::kafka::{ACCESS_PATIENCE, KafkaClients, check_access};

/// What to send, where, and how to know an order is done (also the flags of `stagehost load`).
#[derive(Debug, Clone, clap::Args)]
pub struct LoadOptions {
    /// The ingress URL.
    #[arg(long, default_value = "http://127.0.0.1:8080/orders")]
    pub url: String,
    /// Kafka bootstrap servers (to read the notifications); default 127.0.0.1:9092, or the
    /// `--config` file's.
    #[arg(long, env = "KAFKA_BROKERS")]
    pub brokers: Option<String>,
    /// A pipeline configuration whose `[kafka]` settings (security, SASL, TLS, …) reach the
    /// brokers.
    #[arg(long, short, env = "STAGEHOST_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Topic of delivered notifications.
    #[arg(long, default_value = "NotificationDelivered")]
    pub done_topic: String,
    /// Notifications per order; the last completes it.
    #[arg(long, default_value_t = 3)]
    pub notifications_per_order: usize,
    /// Orders per second.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// How long to send (e.g. `10s`).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// How long to wait for the last orders after sending stops.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// Prefix of the generated order ids, unique per run (not a flag).
    #[arg(skip = unique_order_prefix())]
    pub order_prefix: String,
    /// Product ordered (one unit per order).
    #[arg(long, default_value = "prod-789")]
    pub product: String,
}

/// `load-` and eight random hex digits.
fn unique_order_prefix() -> String {
    format!("load-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// The outcome of a load run.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// Target rate, orders/s.
    pub target_rate: f64,
    /// Orders posted.
    pub sent: u64,
    /// Orders the ingress answered 202.
    pub accepted: u64,
    /// Orders whose last notification arrived.
    pub completed: u64,
    /// Posts that failed or were refused.
    pub errors: u64,
    /// Orders posted per second, as achieved.
    pub achieved_rate: f64,
    /// Latency percentiles from due time to the last notification, in microseconds.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
}

impl LoadReport {
    /// One line for people.
    pub fn summary(&self) -> String {
        format!(
            "{:.0} orders/s target, {:.0} achieved: sent {}, accepted {}, completed {}, errors {}; POST→last notification p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms",
            self.target_rate,
            self.achieved_rate,
            self.sent,
            self.accepted,
            self.completed,
            self.errors,
            ms(self.p50_us),
            ms(self.p99_us),
            ms(self.p999_us),
            ms(self.max_us)
        )
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Orders in flight: due time and notifications seen so far.
type InFlight = Arc<Mutex<HashMap<String, (Instant, usize)>>>;

/// Runs the load and waits for the orders to complete (or `settle` to pass).
pub async fn run(options: &LoadOptions) -> anyhow::Result<LoadReport> {
    anyhow::ensure!(options.rate > 0.0, "the rate must be above zero");
    let kafka = KafkaClients::for_tool(options.config.as_deref(), options.brokers.as_deref())?;
    let checking = kafka.clone();
    tokio::task::spawn_blocking(move || check_access(&checking, ACCESS_PATIENCE)).await??;
    let consumer = done_consumer(&kafka, &options.done_topic)?;
    let in_flight: InFlight = Arc::default();
    let histogram = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).context("histogram bounds")?,
    ));
    let completed = Arc::new(AtomicU64::new(0));
    let reader = tokio::spawn(read_notifications(
        consumer,
        in_flight.clone(),
        histogram.clone(),
        completed.clone(),
        options.notifications_per_order,
    ));

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(30))
        .build()?;
    let total = (options.rate * options.duration.as_secs_f64()).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / options.rate);
    let start = Instant::now();
    let accepted = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut posts = tokio::task::JoinSet::new();
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let order_id = format!("{}-{i}", options.order_prefix);
        in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(order_id.clone(), (due, 0));
        let body = order_body(&order_id, &options.product);
        let (client, url) = (client.clone(), options.url.clone());
        let (accepted, errors) = (accepted.clone(), errors.clone());
        posts.spawn(async move {
            let response = client
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            match response {
                Ok(response) if response.status().as_u16() == 202 => {
                    accepted.fetch_add(1, Relaxed);
                }
                _ => {
                    errors.fetch_add(1, Relaxed);
                }
            }
        });
        // Reap finished posts so the set stays small.
        while posts.try_join_next().is_some() {}
    }
    let sending = start.elapsed();
    while posts.join_next().await.is_some() {}
    let settle_until = Instant::now() + options.settle;
    while completed.load(Relaxed) < accepted.load(Relaxed) && Instant::now() < settle_until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    reader.abort();
    let histogram = histogram.lock().unwrap_or_else(|p| p.into_inner());
    let quantile = |q: f64| {
        if histogram.is_empty() {
            0
        } else {
            histogram.value_at_quantile(q)
        }
    };
    Ok(LoadReport {
        target_rate: options.rate,
        sent: total,
        accepted: accepted.load(Relaxed),
        completed: completed.load(Relaxed),
        errors: errors.load(Relaxed),
        achieved_rate: total as f64 / sending.as_secs_f64().max(1e-9),
        p50_us: quantile(0.5),
        p99_us: quantile(0.99),
        p999_us: quantile(0.999),
        max_us: histogram.max(),
    })
}

/// A valid order of one unit of `product`.
pub fn order_body(order_id: &str, product: &str) -> String {
    serde_json::json!({
        "order_id": order_id,
        "customer_id": "cust-load",
        "items": [{"product_id": product, "name": "Load Product", "quantity": 1, "price": 19.99}],
        "total": 19.99,
        "timestamp": "2026-11-25T10:00:00Z"
    })
    .to_string()
}

/// A consumer of the end of `topic`'s every partition.
fn done_consumer(kafka: &KafkaClients, topic: &str) -> anyhow::Result<StreamConsumer> {
    let consumer: StreamConsumer = kafka
        .reader(&format!("stagehost-load-{}", uuid::Uuid::new_v4()))
        .create()
        .context("cannot create the notification reader")?;
    let partitions = crate::kafka::partition_count(kafka, topic)?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        // The end as of now: `Offset::End` would be resolved at the first fetch, which may
        // come after the first notifications.
        let (_, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .with_context(|| format!("cannot read the end of {topic}/{partition}"))?;
        assignment.add_partition_offset(topic, partition, Offset::Offset(high))?;
    }
    consumer.assign(&assignment)?;
    Ok(consumer)
}

async fn read_notifications(
    consumer: StreamConsumer,
    in_flight: InFlight,
    histogram: Arc<Mutex<Histogram<u64>>>,
    completed: Arc<AtomicU64>,
    per_order: usize,
) {
    loop {
        let Ok(message) = consumer.recv().await else {
            continue;
        };
        let Some(order_id) = message
            .payload()
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
            .and_then(|v| {
                v.get("order_id")
                    .and_then(|o| o.as_str())
                    .map(str::to_string)
            })
        else {
            continue;
        };
        let mut in_flight = in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let Some((due, seen)) = in_flight.get_mut(&order_id) else {
            continue;
        };
        *seen += 1;
        if *seen >= per_order {
            let latency = due.elapsed();
            in_flight.remove(&order_id);
            drop(in_flight);
            let micros = u64::try_from(latency.as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            histogram
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .saturating_record(micros);
            completed.fetch_add(1, Relaxed);
        }
    }
}
