//! `make bench`: the pipeline against the limits of the machine and the broker, in one run on
//! one broker, so that the ratios between rows mean something on a noisy machine.
//!
//! Rows: (1) the broker's own produce and consume rate for the same message; (2) a raw rdkafka
//! consume→produce loop, no WASM, no JSON; (3) the host running one stage on a pre-filled
//! topic, with the real warehouse plugin and with the `identity` component; (4) the whole
//! pipeline draining pre-filled orders in `at_least_once` and `exactly_once` mode, until every
//! stage is done (the read model's last status; the notifications' path alone in the note), with host CPU seconds per 1,000 orders and peak RSS (6); (5) open-loop
//! HTTP load at fixed rates, at-least-once, latency from each order's due time to its last
//! notification; (7) 32 concurrent HTTP clients (closed loop), default modes: completed
//! orders/s, and the same for the ingress alone (only the `order` stage, done at
//! OrderReceived; `BENCH_INGRESS_PRODUCERS` sets `http.ingress_producers` for row 7); (8) `POST` → OrderPickedAndPacked at 50 orders/s, default (exactly-once) and
//! every stage at-least-once, with host + broker CPU per order and per-hop latency from record
//! timestamps; (9) end-to-end at 100 orders/s, exactly-once; (10) host CPU when idle; (11) the
//! whole pipeline with telemetry off, metrics on, metrics and traces on (`BENCH_TELEMETRY_ORDERS`,
//! default 50,000; `BENCH_TELEMETRY_REPEATS`, default 2), as ratios to off; (12) Kafka offsets
//! written per order by topic, against the business records (`BENCH_RECORD_ORDERS`, default
//! 1,000, through the ingress at 100/s). Rows 5,
//! 7, 8 and 9 drive the ingress with `stagehost load` (`stagehost::load`) and report its own
//! CPU. The run ends with a summary of issue 13's targets: figure, measured, target, met.
//!
//! Needs a broker (`KAFKA_BROKERS`; `scripts/test.sh bench` starts one, and its
//! `KAFKA_HOME_DIR` gives row 8 the broker's pid; `BENCH_BROKER_PID` names another) and the
//! built plugins and test components. Sizes: `BENCH_MESSAGES` (rows 1–3), `BENCH_ORDERS` (row
//! 4), `BENCH_RATES` (row 5, comma separated), `BENCH_SECONDS` (per rate of row 5, and rows 7,
//! 8, 9), `BENCH_IDLE_SECONDS` (row 10, default 30); `BENCH_ROWS` (e.g. `4,5`; default every
//! row) runs only some rows (row 6 comes with row 4); `BENCH_MODES` (default
//! `at_least_once,exactly_once`) the modes of row 4; `BENCH_FUSE=false` runs row 4 with
//! every stage's `fuse = false` (to weigh stage fusion against separate workers). Before the first row, `BENCH_WARMUP`
//! messages (default 200,000) are written and read once, unreported, so that a broker started
//! just before is past its JIT warm-up. Writes `.bench/results.json` and `.bench/results.md`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "pipeline/http_rows.rs"]
mod http_rows;
#[path = "pipeline/records_row.rs"]
mod records_row;
#[path = "pipeline/summary.rs"]
mod summary;
#[path = "pipeline/telemetry_row.rs"]
mod telemetry_row;

use std::time::{Duration, Instant};

use common::{
    TestPipeline, add_stage, add_topic, brokers, component, keep_stages, read_topic, stage_mut,
};
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use stagehost::load::cpu::cpu_seconds;
use summary::Figures;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
struct Row {
    name: String,
    value: f64,
    unit: String,
    note: String,
}

fn row(name: &str, value: f64, unit: &str, note: impl Into<String>) -> Row {
    Row {
        name: name.into(),
        value,
        unit: unit.into(),
        note: note.into(),
    }
}

fn producer() -> FutureProducer {
    // The host's own producer settings, so the broker row is comparable.
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("compression.type", "lz4")
        .create()
        .unwrap()
}

fn order_json(order_id: &str, status: Option<&str>) -> String {
    let mut order: serde_json::Value =
        serde_json::from_str(&common::order(order_id, "prod-789", 1)).unwrap();
    if let Some(status) = status {
        order["status"] = status.into();
    }
    order.to_string()
}

/// Writes `count` events (`payload(i)`, key and `ce_id` derived from `prefix`) as fast as
/// the producer goes; returns messages/s.
async fn fill(
    topic: &str,
    prefix: &str,
    event_type: &str,
    count: u64,
    payload: impl Fn(&str) -> String,
) -> f64 {
    let producer = producer();
    // Payloads are made before the clock starts: the row measures Kafka, not JSON.
    let events: Vec<(String, String)> = (0..count)
        .map(|i| {
            let id = format!("{prefix}-{i}");
            let body = payload(&id);
            (id, body)
        })
        .collect();
    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(count as usize);
    for (id, body) in &events {
        let ce_id = format!("ce-{id}");
        let headers = common::headers_of(&[("ce_id", ce_id.as_str()), ("ce_type", event_type)]);
        loop {
            let record = FutureRecord::to(topic)
                .key(id)
                .payload(body)
                .headers(headers.clone());
            match producer.send_result(record) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    break;
                }
                Err((_, _)) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    }
    for delivery in deliveries {
        delivery.await.unwrap().unwrap();
    }
    count as f64 / started.elapsed().as_secs_f64()
}

fn base_consumer(topic: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("bench-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .unwrap();
    let partitions = stagehost::kafka::partition_count(
        &stagehost::kafka::KafkaClients::plain(&brokers()),
        topic,
    )
    .unwrap();
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    consumer
}

/// Reads `count` records of `topic` from the beginning; returns messages/s.
fn consume(topic: &str, count: u64) -> f64 {
    let consumer = base_consumer(topic);
    let mut seen = 0;
    let mut started = None;
    while seen < count {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            started.get_or_insert_with(Instant::now);
            seen += 1;
        }
    }
    count as f64 / started.unwrap().elapsed().as_secs_f64()
}

/// A raw consume → produce loop from `from` to `to`, no WASM and no JSON; messages/s.
async fn passthrough(from: &str, to: &str, count: u64) -> f64 {
    let consumer = base_consumer(from);
    let producer = producer();
    let mut deliveries = Vec::with_capacity(count as usize);
    let mut started = None;
    while (deliveries.len() as u64) < count {
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        started.get_or_insert_with(Instant::now);
        let mut record = FutureRecord::to(to).payload(message.payload().unwrap_or_default());
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    break;
                }
                Err((_, back)) => {
                    producer.poll(Duration::from_millis(1));
                    record = back;
                }
            }
        }
    }
    for delivery in deliveries {
        delivery.await.unwrap().unwrap();
    }
    count as f64 / started.unwrap().elapsed().as_secs_f64()
}

/// Waits until `topic` holds `count` records; returns how many it holds and the seconds
/// between the first and the last (broker time): the drain time, without the host's start.
async fn drain_seconds(topic: &str, count: usize, timeout: Duration) -> (usize, f64) {
    let records = read_topic(topic, count, Duration::from_millis(500), timeout).await;
    let first = records.iter().map(|r| r.timestamp_ms).min().unwrap_or(0);
    let last = records.iter().map(|r| r.timestamp_ms).max().unwrap_or(0);
    (records.len(), (last - first).max(1) as f64 / 1000.0)
}

/// How many orders' status documents on `topic` hold all 7 inputs of the order (up to
/// `orders`, waiting up to `timeout`), with the broker time of the first document and of the
/// last one that completed an order.
async fn complete_statuses(topic: &str, orders: usize, timeout: Duration) -> (usize, i64, i64) {
    let consumer = common::from_beginning(topic);
    let deadline = Instant::now() + timeout;
    let mut complete = std::collections::HashSet::new();
    let (mut first, mut last) = (i64::MAX, 0);
    while complete.len() < orders {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, consumer.recv()).await {
            Ok(Ok(message)) => {
                let at = message.timestamp().to_millis().unwrap_or(0);
                first = first.min(at);
                let doc: serde_json::Value =
                    serde_json::from_slice(message.payload().unwrap_or_default())
                        .unwrap_or_default();
                let inputs = doc["timeline"].as_array().map_or(0, Vec::len);
                if inputs >= 7 && complete.insert(doc["order_id"].to_string()) {
                    last = last.max(at);
                }
            }
            Ok(Err(error)) => panic!("reading {topic}: {error}"),
            Err(_) => break,
        }
    }
    (complete.len(), first, last)
}

/// Row 3: one stage with `plugin` draining `count` pre-filled OrderConfirmed events.
async fn one_stage(plugin: &str, count: u64) -> (f64, String) {
    let path = component(plugin);
    let mut output = String::new();
    let mut input = String::new();
    let mut pipeline = TestPipeline::new(|config| {
        keep_stages(config, &[]);
        input = add_topic(config, "Bench", 3);
        output = add_topic(config, "BenchOut", 3);
        let mut stage = toml::Table::new();
        stage.insert("name".into(), "bench".into());
        stage.insert("plugin".into(), path.display().to_string().into());
        stage.insert("input".into(), input.clone().into());
        stage.insert("mode".into(), "at_least_once".into());
        let mut outputs = toml::Table::new();
        for name in ["out", "packed", "notify"] {
            outputs.insert(name.into(), output.clone().into());
        }
        stage.insert("outputs".into(), outputs.into());
        add_stage(config, stage);
    });
    pipeline.log = "info".into();
    // Topics exist once the host started; stop it, fill, start again to drain a backlog.
    pipeline.start();
    pipeline.stop("TERM");
    fill(&input, "one", "OrderConfirmed", count, |id| {
        order_json(id, Some("confirmed"))
    })
    .await;
    pipeline.start();
    let expected = if plugin == "identity" {
        count
    } else {
        2 * count
    } as usize;
    let (seen, seconds) = drain_seconds(&output, expected, Duration::from_secs(600)).await;
    pipeline.stop("TERM");
    (
        count as f64 / seconds,
        format!("{seen}/{expected} outputs, first to last output"),
    )
}

/// Puts every stage of `config` in processing `mode`.
pub fn set_mode(config: &mut toml::Table, mode: &str) {
    set_on_every_stage(config, "mode", mode.into());
}

/// Sets `key` to `value` in every stage of `config`.
fn set_on_every_stage(config: &mut toml::Table, key: &str, value: toml::Value) {
    for stage in config
        .get_mut("stages")
        .and_then(|s| s.as_array_mut())
        .unwrap()
    {
        stage
            .as_table_mut()
            .unwrap()
            .insert(key.into(), value.clone());
    }
}

/// Row 4: the whole pipeline draining `orders` pre-filled OrderReceived events.
/// `edit` changes the configuration further.
async fn whole_pipeline(
    mode: &str,
    orders: u64,
    edit: impl FnOnce(&mut toml::Table),
) -> (f64, f64, f64, f64, String) {
    let fuse = std::env::var("BENCH_FUSE").map_or(true, |fuse| fuse != "false");
    let mut pipeline = TestPipeline::new(|config| {
        edit(config);
        set_mode(config, mode);
        if !fuse {
            set_on_every_stage(config, "fuse", false.into());
        }
        stage_mut(config, "stock")
            .get_mut("config")
            .and_then(|c| c.get_mut("catalog"))
            .and_then(|c| c.as_table_mut())
            .unwrap()
            .insert("prod-789".into(), 1_000_000_000i64.into());
    });
    pipeline.log = "info".into();
    pipeline.start();
    pipeline.stop("TERM");
    fill(
        &pipeline.topic("OrderReceived"),
        &format!("whole-{mode}"),
        "OrderReceived",
        orders,
        |id| order_json(id, Some("received")),
    )
    .await;
    pipeline.start();
    let pid = pipeline.pid().unwrap();
    let cpu_before = cpu_seconds(Some(pid)).unwrap();
    // The notifications' path (inventory → … → notification) finishes first; the read model
    // (order-status) may still be catching up then, so the pipeline is drained once it
    // published each order's status with all of its 7 inputs (OrderStatus keeps the latest
    // document per key, so an order has one to seven documents). Both are reported: the path's figure
    // alone hides the read model's lag (with `fuse = false` the read model finished at about
    // half the notifications' rate).
    let notifications = 3 * orders as usize;
    let (seen, path_seconds) = drain_seconds(
        &pipeline.topic("NotificationDelivered"),
        notifications,
        Duration::from_secs(900),
    )
    .await;
    let path_cpu = cpu_seconds(Some(pid)).unwrap() - cpu_before;
    let statuses = orders as usize;
    let (status_seen, first_status, last_status) = complete_statuses(
        &pipeline.topic("OrderStatus"),
        statuses,
        Duration::from_secs(900),
    )
    .await;
    let cpu = cpu_seconds(Some(pid)).unwrap() - cpu_before;
    let seconds = (last_status - first_status).max(1) as f64 / 1000.0;
    let rss = common::peak_rss_kib(pid) as f64 / 1024.0;
    pipeline.stop("TERM");
    // The same history after a restart: what the host holds once ready must not grow with it.
    pipeline.start();
    let restarted_rss = common::peak_rss_kib(pipeline.pid().unwrap()) as f64 / 1024.0;
    pipeline.stop("TERM");
    (
        orders as f64 / seconds,
        cpu / orders as f64 * 1000.0,
        rss,
        restarted_rss,
        format!(
            "{status_seen}/{statuses} orders' statuses complete, first to last status; notifications' path alone: {:.0} orders/s, {:.3} CPU s / 1000 orders ({seen}/{notifications} notifications){}",
            orders as f64 / path_seconds,
            path_cpu / orders as f64 * 1000.0,
            if fuse { "" } else { "; fuse = false" }
        ),
    )
}

/// Row 5: open-loop HTTP load at `rate` for `seconds` on a fresh at-least-once pipeline.
async fn latency(pipeline: &TestPipeline, rate: f64, seconds: u64) -> stagehost::load::LoadReport {
    let mut options = http_rows::order_load(pipeline, "NotificationDelivered", 3);
    options.rate = rate;
    options.duration = Duration::from_secs(seconds);
    http_rows::load(&options).await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let messages = env_or("BENCH_MESSAGES", 50_000);
    let orders = env_or("BENCH_ORDERS", 200_000);
    let warmup = env_or("BENCH_WARMUP", 200_000);
    let seconds = env_or("BENCH_SECONDS", 10);
    let idle_seconds = env_or("BENCH_IDLE_SECONDS", 30);
    let rates: Vec<f64> = std::env::var("BENCH_RATES")
        .unwrap_or_else(|_| "100,1000,5000".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let only: Vec<u32> = std::env::var("BENCH_ROWS")
        .unwrap_or_else(|_| "1,2,3,4,5,7,8,9,10,11,12".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let runs = |row: u32| only.contains(&row);
    let steps = 6 + rates.len() as u64 + 1;
    let progress = ProgressBar::new(steps)
        .with_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed} {msg}").unwrap());
    let mut rows = Vec::new();
    let mut figures = Figures::default();
    let started = Instant::now();

    if warmup > 0 {
        progress.set_message("broker warm-up");
        let topic = format!(
            "bench{}-warmup",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        stagehost::kafka::ensure_changelog(
            &stagehost::kafka::KafkaClients::plain(&brokers()),
            &topic,
            3,
            Default::default(),
        )
        .await
        .ok();
        fill(&topic, "warm", "OrderConfirmed", warmup, |id| {
            order_json(id, Some("confirmed"))
        })
        .await;
        tokio::task::spawn_blocking(move || consume(&topic, warmup))
            .await
            .unwrap();
    }

    let mut raw = f64::NAN;
    if runs(1) || runs(2) || runs(3) {
        progress.set_message("broker produce/consume");
        let prefix = format!("bench{}-", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let raw_in = format!("{prefix}raw");
        let raw_out = format!("{prefix}raw-out");
        for topic in [&raw_in, &raw_out] {
            stagehost::kafka::ensure_changelog(
                &stagehost::kafka::KafkaClients::plain(&brokers()),
                topic,
                3,
                Default::default(),
            )
            .await
            .ok();
        }
        let produce_rate = fill(&raw_in, "raw", "OrderConfirmed", messages, |id| {
            order_json(id, Some("confirmed"))
        })
        .await;
        let consume_rate = tokio::task::spawn_blocking({
            let topic = raw_in.clone();
            move || consume(&topic, messages)
        })
        .await
        .unwrap();
        rows.push(row(
            "1. broker: produce",
            produce_rate,
            "msg/s",
            format!("{messages} × ~350 B, acks=all, idempotent, lz4"),
        ));
        rows.push(row(
            "1. broker: consume",
            consume_rate,
            "msg/s",
            "from the beginning",
        ));
        progress.inc(1);

        progress.set_message("raw passthrough");
        raw = passthrough(&raw_in, &raw_out, messages).await;
        rows.push(row(
            "2. raw consume→produce",
            raw,
            "msg/s",
            "rdkafka only, no WASM, no JSON",
        ));
        figures.raw = Some(raw);
        progress.inc(1);
    }

    // As many events as the raw loop moved: a short drain (it was a fifth) is mostly the
    // consumers' first fetches, and the ratio to raw compares unlike runs.
    let one = messages.max(1000);
    for plugin in ["warehouse", "identity"].into_iter().filter(|_| runs(3)) {
        progress.set_message(format!("one stage: {plugin}"));
        let (rate, note) = one_stage(plugin, one).await;
        if plugin == "identity" {
            figures.identity = Some(rate);
        } else {
            figures.warehouse = Some(rate);
        }
        rows.push(row(
            &format!("3. one stage, {plugin} plugin"),
            rate,
            "events/s",
            format!(
                "{one} events, at_least_once; {note}; {:.2}× raw",
                rate / raw
            ),
        ));
        progress.inc(1);
    }

    let mut resources = Vec::new();
    let modes =
        std::env::var("BENCH_MODES").unwrap_or_else(|_| "at_least_once,exactly_once".into());
    for mode in ["at_least_once", "exactly_once"]
        .into_iter()
        .filter(|mode| runs(4) && modes.split(',').any(|m| m.trim() == *mode))
    {
        progress.set_message(format!("whole pipeline: {mode}"));
        let (rate, cpu, rss, restarted_rss, note) = whole_pipeline(mode, orders, |_| {}).await;
        rows.push(row(
            &format!("4. whole pipeline, {mode}"),
            rate,
            "orders/s",
            format!("{orders} orders, 8 stages; {note}"),
        ));
        resources.push((mode, cpu, rss, restarted_rss));
        if mode == "at_least_once" {
            figures.whole_alo = Some(rate);
        } else {
            figures.whole_eos = Some(rate);
        }
        figures.drain_cpu.push((mode.to_string(), cpu));
        progress.inc(1);
    }
    for (mode, cpu, rss, restarted_rss) in resources {
        rows.push(row(
            &format!("6. host CPU, {mode}"),
            cpu,
            "CPU s / 1000 orders",
            "user + system of the host process during row 4 (until every stage is drained)",
        ));
        rows.push(row(
            &format!("6. host peak RSS, {mode}"),
            rss,
            "MiB",
            format!("VmHWM while draining {orders} orders"),
        ));
        rows.push(row(
            &format!("6. host peak RSS after a restart, {mode}"),
            restarted_rss,
            "MiB",
            format!("VmHWM until ready, on the history of {orders} orders"),
        ));
    }

    let mut pipeline = TestPipeline::new(|config| {
        set_mode(config, "at_least_once");
    });
    pipeline.log = "info".into();
    if runs(5) {
        pipeline.start();
        // Warm-up, not reported: consumer groups settle and instances warm up.
        latency(&pipeline, 50.0, 3).await;
    }
    for rate in rates.iter().filter(|_| runs(5)) {
        progress.set_message(format!("latency at {rate}/s"));
        let report = latency(&pipeline, *rate, seconds).await;
        rows.push(row(
            &format!("5. latency at {rate:.0} orders/s, p50"),
            report.p50_us as f64 / 1000.0,
            "ms",
            format!(
                "at_least_once, open loop for {seconds} s: {}",
                http_rows::load_note(&report)
            ),
        ));
        if *rate == 100.0 {
            figures.e2e_alo_100 = Some((report.p50_us, report.p99_us));
        }
        if *rate == 1000.0 {
            figures.e2e_alo_1000_p99 = Some(report.p99_us);
        }
        for (name, value) in [
            ("p99", report.p99_us),
            ("p99.9", report.p999_us),
            ("max", report.max_us),
        ] {
            rows.push(row(
                &format!("5. latency at {rate:.0} orders/s, {name}"),
                value as f64 / 1000.0,
                "ms",
                "",
            ));
        }
        progress.inc(1);
    }
    if runs(5) {
        pipeline.stop("TERM");
    }
    drop(pipeline);
    if runs(11) {
        progress.set_message("telemetry cost (row 11)");
        let orders = env_or("BENCH_TELEMETRY_ORDERS", 50_000);
        let repeats = env_or("BENCH_TELEMETRY_REPEATS", 2);
        telemetry_row::telemetry_rows(orders, repeats, &mut rows).await;
    }
    if runs(12) {
        progress.set_message("records per order (row 12)");
        let orders = env_or("BENCH_RECORD_ORDERS", 1_000);
        records_row::records_rows(orders, &mut rows, &mut figures).await;
    }
    progress.set_message("HTTP rows (7–10)");
    http_rows::http_rows(runs, seconds, idle_seconds, &mut rows, &mut figures).await;
    progress.inc(1);
    progress.finish_with_message(format!("done in {:.0?}", started.elapsed()));

    // In row order (rows 7–10 run after row 5, row 10 first of them).
    rows.sort_by_key(|row| {
        row.name
            .split('.')
            .next()
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(u32::MAX)
    });
    let summary = figures.render();
    let table = format!("{}\n{summary}", render(&rows));
    println!("\n{table}");
    let folder = common::repo().join(".bench");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("results.md"), &table).unwrap();
    std::fs::write(
        folder.join("results.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "machine": machine(),
            "brokers": brokers(),
            "rows": rows,
            "summary": summary,
        }))
        .unwrap(),
    )
    .unwrap();
    println!("written to {}", folder.display());
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    format!("{cpus} CPUs ({model})")
}

fn render(rows: &[Row]) -> String {
    let mut out = format!(
        "Machine: {}\n\n| row | value | unit | note |\n|---|---:|---|---|\n",
        machine()
    );
    for row in rows {
        // Small values (cores, ratios) keep three decimals.
        let value = if row.value.abs() < 1.0 {
            format!("{:.3}", row.value)
        } else {
            format!("{:.1}", row.value)
        };
        out.push_str(&format!(
            "| {} | {value} | {} | {} |\n",
            row.name, row.unit, row.note
        ));
    }
    out
}
