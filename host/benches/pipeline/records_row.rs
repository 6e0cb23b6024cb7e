//! Row 12 (issue 23, "count it"): what one order of the shipped pipeline costs Kafka. The
//! default pipeline (exactly-once) takes `BENCH_RECORD_ORDERS` orders (default 1,000) through
//! its HTTP ingress at 100/s. Every partition's end offset is read before the host starts and
//! after it stopped: its growth is what the run wrote there, records and the transaction
//! markers between them (one per partition a transaction touched); the records themselves are
//! counted by reading the partitions `read_uncommitted` between the two (markers are never
//! delivered). Transactions and plugin calls come from the host's `/metrics` once every stage
//! is drained; host and broker CPU from `/proc` over the same span. Beside it, the business
//! records alone, as the system we replace writes them: OrderReceived, OrderConfirmed,
//! OrderPickedAndPacked and three Notifications per order.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use prometheus_parse::{Scrape, Value};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use stagehost::load::cpu::cpu_seconds;
use stagehost::observe::catalogue;

use super::common::{TestPipeline, brokers};
use super::summary::Figures;
use super::{Row, http_rows, row, set_mode};

/// Business records per order (the seed system's topics).
const BUSINESS_RECORDS: f64 = 6.0;
/// How long the stages get to drain after the load.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// A partition of a topic.
type Partition = (String, i32);

/// Every partition's end offset.
fn end_offsets() -> BTreeMap<Partition, i64> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    let mut ends = BTreeMap::new();
    for topic in metadata.topics() {
        for partition in topic.partitions() {
            let (_, high) = consumer
                .fetch_watermarks(topic.name(), partition.id(), Duration::from_secs(10))
                .unwrap();
            ends.insert((topic.name().to_string(), partition.id()), high);
        }
    }
    ends
}

/// Records (markers are not delivered; aborted records are) of each partition between its
/// offset in `from` (0 when absent) and its end in `to`.
fn records_between(
    from: &BTreeMap<Partition, i64>,
    to: &BTreeMap<Partition, i64>,
) -> HashMap<Partition, i64> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", "bench-records-row")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_uncommitted")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    let mut open = 0;
    for ((topic, partition), end) in to {
        let start = from.get(&(topic.clone(), *partition)).copied().unwrap_or(0);
        if *end > start && !topic.starts_with("__") {
            assignment
                .add_partition_offset(topic, *partition, Offset::Offset(start))
                .unwrap();
            open += 1;
        }
    }
    consumer.assign(&assignment).unwrap();
    let mut counted: HashMap<Partition, i64> = HashMap::new();
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while open > 0 && Instant::now() < deadline {
        match consumer.poll(Duration::from_secs(1)) {
            Some(Ok(message)) => {
                let at = (message.topic().to_string(), message.partition());
                if message.offset() < to[&at] {
                    *counted.entry(at).or_default() += 1;
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => open -= 1,
            Some(Err(error)) => panic!("cannot count records: {error}"),
            None => {}
        }
    }
    assert_eq!(open, 0, "partitions not read to their end");
    counted
}

/// The host's metrics (`pipeline`'s admin listener, with its token).
async fn scrape(pipeline: &TestPipeline) -> Scrape {
    let text = pipeline
        .admin_http()
        .get(pipeline.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    Scrape::parse(text.lines().map(|line| Ok(line.to_string()))).unwrap()
}

/// Per stage label (`""` without one), the sum of `metric` (a counter, or a histogram's
/// count).
fn by_stage(scrape: &Scrape, metric: &str) -> BTreeMap<String, f64> {
    let mut sums = BTreeMap::new();
    for sample in scrape.samples.iter().filter(|s| s.metric == metric) {
        let value = match &sample.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            Value::Summary(_) => continue,
        };
        let stage = sample.labels.get("stage").unwrap_or_default().to_string();
        *sums.entry(stage).or_default() += value;
    }
    sums
}

/// Waits until the lag the host measures is zero for every stage (once measured), then
/// scrapes.
async fn drained(pipeline: &TestPipeline) -> Scrape {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        let scrape = scrape(pipeline).await;
        let lag = by_stage(&scrape, catalogue::STAGE_LAG);
        if !lag.is_empty() && lag.values().all(|v| *v == 0.0) {
            return scrape;
        }
        if Instant::now() > deadline {
            eprintln!(
                "row 12: stages still lagging after {DRAIN_TIMEOUT:?} ({lag:?}); counting what was done"
            );
            return scrape;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `per_stage` as `stage a.b, …` per order, largest first.
fn breakdown(per_stage: &BTreeMap<String, f64>, orders: f64) -> String {
    let mut sorted: Vec<(&String, &f64)> = per_stage.iter().collect();
    sorted.sort_by(|a, b| b.1.total_cmp(a.1));
    sorted
        .iter()
        .map(|(stage, n)| {
            let stage = if stage.is_empty() { "ingress" } else { stage };
            format!("{stage} {:.2}", *n / orders)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs row 12, adding its rows to `rows`.
pub async fn records_rows(orders: u64, rows: &mut Vec<Row>, figures: &mut Figures) {
    let mut pipeline = TestPipeline::new(|config| set_mode(config, "exactly_once"));
    pipeline.log = "info".into();
    // Topics exist once the host started once.
    pipeline.start();
    pipeline.stop("TERM");
    let before = end_offsets();
    pipeline.start();
    let host = pipeline.pid().unwrap();
    let broker = http_rows::broker_pid();
    let cpu_before = (
        cpu_seconds(Some(host)),
        broker.and_then(|b| cpu_seconds(Some(b))),
    );
    let mut options = http_rows::order_load(&pipeline, "NotificationDelivered", 3);
    options.rate = 100.0;
    options.duration = Duration::from_secs_f64(orders as f64 / 100.0);
    let report = http_rows::load(&options).await;
    let metrics = drained(&pipeline).await;
    let cpu_after = (
        cpu_seconds(Some(host)),
        broker.and_then(|b| cpu_seconds(Some(b))),
    );
    pipeline.stop("TERM");
    let after = end_offsets();
    let records = tokio::task::spawn_blocking({
        let (before, after) = (before.clone(), after.clone());
        move || records_between(&before, &after)
    })
    .await
    .unwrap();
    let accepted = report.accepted.max(1) as f64;

    // Per topic (without the run's prefix): offsets grown, records written.
    let mut topics: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (at, end) in after
        .iter()
        .filter(|((topic, _), _)| !topic.starts_with("__"))
    {
        let grown = end - before.get(at).copied().unwrap_or(0);
        let name = at.0.strip_prefix(&pipeline.prefix).unwrap_or(&at.0);
        let entry = topics.entry(name.to_string()).or_default();
        entry.0 += grown;
        entry.1 += records.get(at).copied().unwrap_or(0);
    }
    topics.retain(|_, (grown, _)| *grown > 0);
    let offsets: i64 = topics.values().map(|(grown, _)| grown).sum();
    let written: i64 = topics.values().map(|(_, records)| records).sum();
    rows.push(row(
        "12. Kafka offsets written per order",
        offsets as f64 / accepted,
        "records + markers",
        format!(
            "{} orders accepted, exactly-once, 100/s through the ingress; business records alone: {BUSINESS_RECORDS} ({:.1}× them; target ≤ 2×); the broker's internal topics not counted",
            report.accepted,
            offsets as f64 / accepted / BUSINESS_RECORDS
        ),
    ));
    figures.records_per_order = Some(written as f64 / accepted);
    rows.push(row(
        "12. Kafka records written per order",
        written as f64 / accepted,
        "records",
        format!(
            "{:.1}× the business records; the other {:.1} offsets per order are transaction markers",
            written as f64 / accepted / BUSINESS_RECORDS,
            (offsets - written) as f64 / accepted
        ),
    ));
    let txn_state = |ends: &BTreeMap<Partition, i64>| -> i64 {
        ends.iter()
            .filter(|((topic, _), _)| topic == "__transaction_state")
            .map(|(_, end)| end)
            .sum()
    };
    rows.push(row(
        "12. __transaction_state records per order",
        (txn_state(&after) - txn_state(&before)) as f64 / accepted,
        "records",
        "the broker's own log of transaction states (a few per transaction)",
    ));
    let mut transactions = by_stage(&metrics, catalogue::STAGE_COMMIT_SECONDS);
    let ingress = by_stage(&metrics, catalogue::INGRESS_COMMIT_SECONDS);
    transactions.insert(String::new(), ingress.values().sum());
    rows.push(row(
        "12. transactions per order",
        transactions.values().sum::<f64>() / accepted,
        "transactions",
        format!(
            "committed, by stage: {}",
            breakdown(&transactions, accepted)
        ),
    ));
    let calls = by_stage(&metrics, catalogue::PLUGIN_CALL_SECONDS);
    rows.push(row(
        "12. plugin calls per order",
        calls.values().sum::<f64>() / accepted,
        "calls",
        format!("by stage: {}", breakdown(&calls, accepted)),
    ));
    if let ((Some(h0), b0), (Some(h1), b1)) = (cpu_before, cpu_after) {
        let host_ms = (h1 - h0) / accepted * 1000.0;
        let broker_ms = b0.zip(b1).map(|(b0, b1)| (b1 - b0) / accepted * 1000.0);
        let note = match broker_ms {
            Some(broker_ms) => format!(
                "host {host_ms:.2} + broker {broker_ms:.2} ms per order, from the first order until every stage was drained"
            ),
            None => "broker pid unknown (set KAFKA_HOME_DIR or BENCH_BROKER_PID)".into(),
        };
        rows.push(row(
            "12. host + broker CPU per order at 100/s",
            host_ms + broker_ms.unwrap_or(0.0),
            "ms",
            note,
        ));
    }
    let mut by_size: Vec<(String, (i64, i64))> = topics.into_iter().collect();
    by_size.sort_by_key(|(_, (grown, _))| -grown);
    for (topic, (grown, written)) in by_size {
        rows.push(row(
            &format!("12. records per order: {topic}"),
            written as f64 / accepted,
            "records",
            format!("{:.2} offsets with markers", grown as f64 / accepted),
        ));
    }
}
