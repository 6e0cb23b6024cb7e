//! Row 12 (issue 23, "count it"): what one order of the shipped pipeline writes to Kafka. The
//! default pipeline (exactly-once) takes `BENCH_RECORD_ORDERS` orders (default 1,000) through
//! its HTTP ingress at 100/s; every topic's end offsets are read before the host starts and
//! after it stopped, so each topic's growth is what the run wrote there: records and the
//! transaction markers between them (one per partition a transaction touched). Beside it, the
//! business records alone, as the system we replace writes them: OrderReceived, OrderConfirmed,
//! OrderPickedAndPacked and three Notifications per order.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use super::common::{TestPipeline, brokers};
use super::{Row, http_rows, row, set_mode};

/// Business records per order (the seed system's topics).
const BUSINESS_RECORDS: f64 = 6.0;

/// Every topic's summed end offsets.
fn end_offsets() -> BTreeMap<String, i64> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    let mut ends = BTreeMap::new();
    for topic in metadata.topics() {
        let mut sum = 0;
        for partition in topic.partitions() {
            let (_, high) = consumer
                .fetch_watermarks(topic.name(), partition.id(), Duration::from_secs(10))
                .unwrap();
            sum += high;
        }
        ends.insert(topic.name().to_string(), sum);
    }
    ends
}

/// Runs row 12, adding its rows to `rows`.
pub async fn records_rows(orders: u64, rows: &mut Vec<Row>) {
    let mut pipeline = TestPipeline::new(|config| set_mode(config, "exactly_once"));
    pipeline.log = "info".into();
    // Topics exist once the host started once.
    pipeline.start();
    pipeline.stop("TERM");
    let before = end_offsets();
    pipeline.start();
    let mut options = http_rows::order_load(&pipeline, "NotificationDelivered", 3);
    options.rate = 100.0;
    options.duration = Duration::from_secs_f64(orders as f64 / 100.0);
    let report = http_rows::load(&options).await;
    pipeline.stop("TERM");
    let after = end_offsets();
    let accepted = report.accepted.max(1) as f64;
    let growth = |topic: &str| after[topic] - before.get(topic).copied().unwrap_or(0);
    let mut grown: Vec<(String, i64)> = after
        .keys()
        .filter(|topic| !topic.starts_with("__"))
        .map(|topic| (topic.clone(), growth(topic)))
        .filter(|(_, grown)| *grown > 0)
        .collect();
    grown.sort_by_key(|(_, grown)| -grown);
    let total: i64 = grown.iter().map(|(_, n)| n).sum();
    let per_order = total as f64 / accepted;
    rows.push(row(
        "12. Kafka offsets written per order",
        per_order,
        "records + markers",
        format!(
            "{} orders accepted, exactly-once, 100/s through the ingress; business records alone: {BUSINESS_RECORDS} ({:.1}× them; target ≤ 2×); the broker's internal topics not counted",
            report.accepted,
            per_order / BUSINESS_RECORDS
        ),
    ));
    if after.contains_key("__transaction_state") {
        rows.push(row(
            "12. __transaction_state records per order",
            growth("__transaction_state") as f64 / accepted,
            "records",
            "the broker's own log of transaction states (a few per transaction)",
        ));
    }
    for (topic, grown) in grown {
        let name = topic.strip_prefix(&pipeline.prefix).unwrap_or(&topic);
        rows.push(row(
            &format!("12. offsets per order: {name}"),
            grown as f64 / accepted,
            "records + markers",
            "",
        ));
    }
}
