//! Rows 7–10 of `make bench`: the shipped pipeline through its HTTP ingress with
//! `stagehost load` (the generic load generator, given the order template of
//! `examples/load/order.json`).
//!
//! - 7: 32 concurrent HTTP clients (closed loop), default modes: completed orders/s; and the
//!   same with the ingress alone (only the `order` stage).
//! - 8: `POST` → OrderPickedAndPacked latency at 50 orders/s, default (exactly-once) and every
//!   stage at-least-once; host + broker CPU per order over the same run; per-hop latency from
//!   the Kafka timestamps of each order's records.
//! - 9: end-to-end (`POST` → last NotificationDelivered) at 100 orders/s, exactly-once.
//! - 10: host CPU when idle (no request for `BENCH_IDLE_SECONDS`, default 30).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use stagehost::load::{LoadOptions, LoadReport, cpu::cpu_seconds};

use super::common::{
    TestPipeline, brokers, keep_stages, peak_rss_kib, read_to_end, read_topic, repo,
};
use super::{Figures, Row, row, set_mode};

/// The shipped pipeline's load: orders from the example template, done when `done_topic`
/// holds `per_order` records keyed by the order id.
pub fn order_load(pipeline: &TestPipeline, done_topic: &str, per_order: usize) -> LoadOptions {
    let template = repo().join("examples/load/order.json");
    let mut options = LoadOptions::new(
        &format!("http://{}/orders", pipeline.http),
        &format!("@{}", template.display()),
        &pipeline.topic(done_topic),
    );
    options.brokers = Some(brokers());
    options.done_per_request = per_order;
    options.settle = Duration::from_secs(60);
    options
}

/// Runs `options` (panics on a setup error: the bench cannot go on without its pipeline).
pub async fn load(options: &LoadOptions) -> LoadReport {
    stagehost::load::run(options).await.unwrap()
}

/// The note every latency row carries: what was achieved and what the generator cost.
pub fn load_note(report: &LoadReport) -> String {
    format!(
        "achieved {:.0}/s, completed {}/{} (errors {}); load generator CPU {:.2} s ({:.2} cores)",
        report.achieved_rate,
        report.completed,
        report.sent,
        report.errors,
        report.cpu_seconds,
        report.cpu_cores
    )
}

/// The broker's process id: `BENCH_BROKER_PID`, or the pid file of the broker
/// `scripts/kafka.sh` started in `KAFKA_HOME_DIR` (what `scripts/test.sh bench` does).
pub fn broker_pid() -> Option<u32> {
    if let Some(pid) = std::env::var("BENCH_BROKER_PID")
        .ok()
        .and_then(|p| p.parse().ok())
    {
        return Some(pid);
    }
    let home = std::env::var("KAFKA_HOME_DIR").ok()?;
    std::fs::read_to_string(std::path::Path::new(&home).join("broker.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A fresh shipped pipeline in `mode` (`None`: the modes of pipeline.toml), started, with a
/// short unreported load whose orders have all been delivered: consumer groups settled,
/// instances warm, nothing in flight.
async fn warm_pipeline(mode: Option<&str>) -> TestPipeline {
    let mut pipeline = TestPipeline::new(|config| {
        if let Some(mode) = mode {
            set_mode(config, mode);
        }
        ingress_producers(config);
    });
    pipeline.log = "info".into();
    pipeline.start();
    let mut warmup = order_load(&pipeline, "NotificationDelivered", 3);
    warmup.rate = 50.0;
    warmup.duration = Duration::from_secs(3);
    let report = load(&warmup).await;
    // Every notification of the warm-up delivered: what follows starts from quiet.
    let delivered = pipeline.topic("NotificationDelivered");
    read_topic(
        &delivered,
        3 * report.accepted as usize,
        Duration::from_millis(1),
        Duration::from_secs(60),
    )
    .await;
    pipeline
}

/// Row 7 for the ingress alone (the `order` stage, exactly-once, nothing downstream): 32
/// closed-loop clients, done when OrderReceived holds the order. Beside the whole pipeline's
/// figure it says whether the ingress or the stages downstream (and the broker) set the pace.
async fn ingress_only(seconds: u64, rows: &mut Vec<Row>) {
    let mut pipeline = TestPipeline::new(|config| {
        keep_stages(config, &["order"]);
        ingress_producers(config);
    });
    pipeline.log = "info".into();
    pipeline.start();
    let mut warmup = order_load(&pipeline, "OrderReceived", 1);
    warmup.rate = 50.0;
    warmup.duration = Duration::from_secs(2);
    load(&warmup).await;
    let mut options = order_load(&pipeline, "OrderReceived", 1);
    options.clients = Some(32);
    options.duration = Duration::from_secs(seconds);
    let report = load(&options).await;
    rows.push(row(
        "7. 32 HTTP clients, ingress only (order stage)",
        report.completed_rate,
        "orders/s",
        format!(
            "OrderReceived committed, closed loop for {seconds} s; HTTP answer p50 {:.1} ms, p99 {:.1} ms; {}",
            report.answer_p50_us as f64 / 1000.0,
            report.answer_p99_us as f64 / 1000.0,
            load_note(&report)
        ),
    ));
    pipeline.stop("TERM");
}

/// `http.ingress_producers` from `BENCH_INGRESS_PRODUCERS`, when set (to compare pool sizes).
fn ingress_producers(config: &mut toml::Table) {
    if let Some(producers) = std::env::var("BENCH_INGRESS_PRODUCERS")
        .ok()
        .and_then(|p| p.parse::<i64>().ok())
    {
        config["http"]
            .as_table_mut()
            .unwrap()
            .insert("ingress_producers".into(), producers.into());
    }
}

/// Row 10: host CPU over `seconds` with nothing flowing, in cores.
async fn idle_cores(pipeline: &TestPipeline, seconds: u64) -> f64 {
    let pid = pipeline.pid().unwrap();
    // Let the last KPI windows and commits of the warm-up pass, and the store's flushes and
    // compactions after it: the steady idle state is what this row is about.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let before = cpu_seconds(Some(pid)).unwrap();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    (cpu_seconds(Some(pid)).unwrap() - before) / started.elapsed().as_secs_f64()
}

/// Row 8 in one mode: latency to OrderPickedAndPacked at 50 orders/s, then the CPU the host
/// and the broker spent until every notification of those orders was delivered.
async fn packed_at_50(
    pipeline: &TestPipeline,
    label: &str,
    seconds: u64,
    rows: &mut Vec<Row>,
) -> (LoadReport, Option<f64>, String) {
    let host = pipeline.pid().unwrap();
    let broker = broker_pid();
    let delivered_before = read_to_end(
        &pipeline.topic("NotificationDelivered"),
        Duration::from_secs(30),
    )
    .await
    .len();
    let host_before = cpu_seconds(Some(host)).unwrap();
    let broker_before = broker.and_then(|pid| cpu_seconds(Some(pid)));
    let started = Instant::now();
    let mut options = order_load(pipeline, "OrderPickedAndPacked", 1);
    options.rate = 50.0;
    options.duration = Duration::from_secs(seconds);
    let report = load(&options).await;
    read_topic(
        &pipeline.topic("NotificationDelivered"),
        delivered_before + 3 * report.accepted as usize,
        Duration::from_millis(1),
        Duration::from_secs(120),
    )
    .await;
    let window = started.elapsed().as_secs_f64();
    let host_cpu = cpu_seconds(Some(host)).unwrap() - host_before;
    let broker_cpu = match (broker, broker_before) {
        (Some(pid), Some(before)) => cpu_seconds(Some(pid)).map(|now| now - before),
        _ => None,
    };
    rows.push(row(
        &format!("8. POST→OrderPickedAndPacked at 50 orders/s, {label}, p50"),
        report.p50_us as f64 / 1000.0,
        "ms",
        format!("open loop for {seconds} s; {}", load_note(&report)),
    ));
    rows.push(row(
        &format!("8. POST→OrderPickedAndPacked at 50 orders/s, {label}, p99"),
        report.p99_us as f64 / 1000.0,
        "ms",
        format!(
            "HTTP answer p50 {:.1} ms, p99 {:.1} ms",
            report.answer_p50_us as f64 / 1000.0,
            report.answer_p99_us as f64 / 1000.0
        ),
    ));
    let orders = report.accepted.max(1) as f64;
    let per_order = broker_cpu.map(|broker| (host_cpu + broker) / orders * 1000.0);
    rows.push(row(
        &format!("8. host + broker CPU per order at 50 orders/s, {label}"),
        per_order.unwrap_or(f64::NAN),
        "CPU ms / order",
        match broker_cpu {
            Some(broker) => format!(
                "host {:.2} + broker {:.2} ms/order over {window:.1} s until all {} orders' notifications were delivered",
                host_cpu / orders * 1000.0,
                broker / orders * 1000.0,
                report.accepted
            ),
            None => format!(
                "host {:.2} ms/order; broker pid unknown (set KAFKA_HOME_DIR or BENCH_BROKER_PID)",
                host_cpu / orders * 1000.0
            ),
        },
    ));
    (report, per_order, options.id_prefix)
}

/// Row 8's hop table: for the orders of `prefix`, the Kafka timestamps of their records on
/// each topic of the chain; median and p99 of each hop, in ms.
async fn hops(pipeline: &TestPipeline, prefix: &str, label: &str, rows: &mut Vec<Row>) {
    const CHAIN: [&str; 5] = [
        "OrderReceived",
        "OrderConfirmed",
        "OrderPickedAndPacked",
        "Notification",
        "NotificationDelivered",
    ];
    // Per topic: order id → the latest timestamp of the order on it (the last notification
    // of an order is the shipped one, and its delivery the last delivery).
    let mut times: Vec<HashMap<String, i64>> = Vec::new();
    for topic in CHAIN {
        let mut latest = HashMap::new();
        for record in read_to_end(&pipeline.topic(topic), Duration::from_secs(60)).await {
            let id = record.value["order_id"]
                .as_str()
                .map(str::to_string)
                .or(record.key.clone())
                .unwrap_or_default();
            if id.starts_with(prefix) {
                let at = latest.entry(id).or_insert(record.timestamp_ms);
                *at = (*at).max(record.timestamp_ms);
            }
        }
        times.push(latest);
    }
    let sample = times[0].len();
    let mut chain: Vec<(String, Vec<i64>)> = CHAIN
        .windows(2)
        .enumerate()
        .map(|(i, pair)| {
            let gaps = times[i]
                .iter()
                .filter_map(|(id, from)| times[i + 1].get(id).map(|to| to - from))
                .collect();
            (format!("{} → {}", pair[0], pair[1]), gaps)
        })
        .collect();
    let whole = times[0]
        .iter()
        .filter_map(|(id, from)| times[4].get(id).map(|to| to - from))
        .collect();
    chain.push((format!("{} → last {}", CHAIN[0], CHAIN[4]), whole));
    for (hop, mut gaps) in chain {
        gaps.sort_unstable();
        let at = |q: f64| {
            gaps.get(((gaps.len() as f64 * q).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or(0) as f64
        };
        rows.push(row(
            &format!("8. hop {hop}, {label}, p50"),
            at(0.5),
            "ms",
            format!(
                "p99 {:.0} ms; record timestamps of {} of {sample} orders",
                at(0.99),
                gaps.len()
            ),
        ));
    }
}

/// Rows 7–10 (those in `runs`), into `rows` and `figures`.
pub async fn http_rows(
    runs: impl Fn(u32) -> bool,
    seconds: u64,
    idle_seconds: u64,
    rows: &mut Vec<Row>,
    figures: &mut Figures,
) {
    if runs(7) || runs(8) || runs(9) || runs(10) {
        // The shipped modes: every stage exactly-once.
        let mut pipeline = warm_pipeline(None).await;
        if runs(10) {
            let cores = idle_cores(&pipeline, idle_seconds).await;
            rows.push(row(
                "10. host CPU when idle",
                cores,
                "cores",
                format!(
                    "user + system over {idle_seconds} s with nothing flowing, after a warm-up"
                ),
            ));
            figures.idle_cores = Some(cores);
        }
        if runs(8) {
            let (report, cpu, prefix) =
                packed_at_50(&pipeline, "exactly_once", seconds, rows).await;
            let rss = peak_rss_kib(pipeline.pid().unwrap()) as f64 / 1024.0;
            rows.push(row(
                "8. host peak RSS at 50 orders/s, default modes",
                rss,
                "MiB",
                "VmHWM after the run at 50 orders/s (and the warm-up and idle rows before it)",
            ));
            figures.rss_at_50 = Some(rss);
            hops(&pipeline, &prefix, "exactly_once", rows).await;
            figures.packed_eos = Some((report.p50_us, report.p99_us));
            figures.cpu_per_order = cpu;
        }
        if runs(9) {
            let mut options = order_load(&pipeline, "NotificationDelivered", 3);
            options.rate = 100.0;
            options.duration = Duration::from_secs(seconds);
            let report = load(&options).await;
            rows.push(row(
                "9. latency at 100 orders/s, exactly_once, p50",
                report.p50_us as f64 / 1000.0,
                "ms",
                format!(
                    "to the last notification, open loop for {seconds} s; {}",
                    load_note(&report)
                ),
            ));
            rows.push(row(
                "9. latency at 100 orders/s, exactly_once, p99",
                report.p99_us as f64 / 1000.0,
                "ms",
                "",
            ));
            figures.e2e_eos_100_p99 = Some(report.p99_us);
        }
        if runs(7) {
            let mut options = order_load(&pipeline, "NotificationDelivered", 3);
            options.clients = Some(32);
            options.duration = Duration::from_secs(seconds);
            let report = load(&options).await;
            rows.push(row(
                "7. 32 HTTP clients, default modes",
                report.completed_rate,
                "orders/s",
                format!(
                    "completed (3 notifications delivered), closed loop for {seconds} s; accepted {:.0}/s; HTTP answer p50 {:.1} ms, p99 {:.1} ms; {}",
                    report.accepted_rate,
                    report.answer_p50_us as f64 / 1000.0,
                    report.answer_p99_us as f64 / 1000.0,
                    load_note(&report)
                ),
            ));
            figures.clients_32 = Some(report.completed_rate);
        }
        pipeline.stop("TERM");
    }
    if runs(7) {
        ingress_only(seconds, rows).await;
    }
    if runs(8) {
        let mut pipeline = warm_pipeline(Some("at_least_once")).await;
        let (report, _, prefix) = packed_at_50(&pipeline, "at_least_once", seconds, rows).await;
        hops(&pipeline, &prefix, "at_least_once", rows).await;
        figures.packed_alo = Some((report.p50_us, report.p99_us));
        pipeline.stop("TERM");
    }
}
