//! End-to-end tests: the repository's pipeline.toml and plugins, a real `stagehost` process
//! and a real Kafka broker, each test on freshly named topics.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{TestPipeline, order, produce_raw, read_topic, stage_mut};

const QUIET: Duration = Duration::from_millis(1500);
const TIMEOUT: Duration = Duration::from_secs(60);

fn kinds(records: &[common::Record]) -> BTreeSet<String> {
    records
        .iter()
        .map(|r| r.value["kind"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_travels_through_every_stage_to_three_notifications() {
    let mut pipeline = TestPipeline::new(|_| {});
    pipeline.start();
    let body = std::fs::read_to_string(common::repo().join("examples/order.json")).unwrap();
    let posted_ms = unix_ms();
    let (status, answer) = pipeline.post_order(&body).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["order_id"], "order-1001");

    let delivered = read_topic(&pipeline.topic("NotificationDelivered"), 3, QUIET, TIMEOUT).await;
    assert_eq!(delivered.len(), 3, "{delivered:#?}");
    let last = delivered.iter().map(|r| r.timestamp_ms).max().unwrap();
    eprintln!(
        "first order (consumer groups joining): POST to third delivered notification {} ms",
        last - posted_ms
    );
    assert_eq!(
        kinds(&delivered),
        BTreeSet::from([
            "order_confirmed".into(),
            "being_fulfilled".into(),
            "shipped".into()
        ])
    );
    let shipped = delivered
        .iter()
        .find(|r| r.value["kind"] == "shipped")
        .unwrap();
    assert!(
        shipped.value["carrier"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    );
    assert!(
        shipped.value["tracking_number"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );

    for (topic, expected, status) in [
        ("OrderReceived", 1, Some("received")),
        ("OrderConfirmed", 1, Some("confirmed")),
        ("OrderPickedAndPacked", 1, Some("picked_and_packed")),
        ("Notification", 3, None),
    ] {
        let records = read_topic(&pipeline.topic(topic), expected, QUIET, TIMEOUT).await;
        assert_eq!(records.len(), expected, "{topic}: {records:#?}");
        for record in &records {
            assert_eq!(record.key.as_deref(), Some("order-1001"), "{topic}");
            assert_eq!(record.value["order_id"], "order-1001", "{topic}");
            assert_eq!(record.headers["ce_type"], topic);
            assert_eq!(record.headers["ce_specversion"], "1.0");
            assert!(record.headers["ce_source"].starts_with("/stagehost/"));
            assert!(!record.headers["ce_time"].is_empty());
            assert!(record.headers["ce_pluginversion"].starts_with("sha256:"));
            if let Some(status) = status {
                assert_eq!(record.value["status"], status, "{topic}");
            }
        }
    }
    let dead = read_topic(&pipeline.topic("DeadLetterQueue"), 0, QUIET, QUIET).await;
    assert!(dead.is_empty(), "{dead:#?}");
    let kpis = read_topic(&pipeline.topic("KPIs"), 1, QUIET, TIMEOUT).await;
    assert!(
        kpis.iter()
            .any(|k| k.value["kpi_name"] == "inventory.events_processed"
                && k.value["metric"] == "count"
                && k.value["value"].as_u64() >= Some(1)
                && k.value["timestamp"].as_u64().is_some()),
        "{kpis:#?}"
    );

    // A second order on the warm pipeline: the figure the README quotes.
    let second = body.replace("order-1001", "order-1002");
    let posted_ms = unix_ms();
    assert_eq!(pipeline.post_order(&second).await.0, 202);
    let delivered = read_topic(&pipeline.topic("NotificationDelivered"), 6, QUIET, TIMEOUT).await;
    assert_eq!(delivered.len(), 6, "{delivered:#?}");
    let last = delivered.iter().map(|r| r.timestamp_ms).max().unwrap();
    eprintln!(
        "warm order: POST to third delivered notification {} ms",
        last - posted_ms
    );
    pipeline.stop("TERM");
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_stock_order_is_rejected_and_never_confirmed() {
    let mut pipeline = TestPipeline::new(|config| {
        let inventory = stage_mut(config, "stock");
        let catalog = inventory["config"]["catalog"].as_table().unwrap().clone();
        let mut catalog = catalog;
        catalog.insert("scarce-1".into(), 2.into());
        inventory
            .get_mut("config")
            .unwrap()
            .as_table_mut()
            .unwrap()
            .insert("catalog".into(), catalog.into());
    });
    pipeline.start();
    let (status, answer) = pipeline
        .post_order(&order("order-oos", "scarce-1", 3))
        .await;
    assert_eq!(status, 202, "{answer}");
    let delivered = read_topic(&pipeline.topic("NotificationDelivered"), 1, QUIET, TIMEOUT).await;
    assert_eq!(delivered.len(), 1, "{delivered:#?}");
    assert_eq!(delivered[0].value["kind"], "order_rejected");
    assert_eq!(
        delivered[0].value["short_products"],
        serde_json::json!(["scarce-1"])
    );
    let confirmed = read_topic(&pipeline.topic("OrderConfirmed"), 0, QUIET, QUIET).await;
    assert!(confirmed.is_empty(), "{confirmed:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_order_twice_gives_one_flow_and_a_changed_body_gets_409() {
    let mut pipeline = TestPipeline::new(|_| {});
    pipeline.start();
    let body = std::fs::read_to_string(common::repo().join("examples/order.json")).unwrap();
    let first = pipeline.post_order(&body).await;
    // Same content, different formatting: still the same order.
    let reformatted =
        serde_json::to_string_pretty(&serde_json::from_str::<serde_json::Value>(&body).unwrap())
            .unwrap();
    let second = pipeline.post_order(&reformatted).await;
    assert_eq!(first.0, 202);
    assert_eq!(first, second, "a repeat gets the first answer");
    let duplicate =
        std::fs::read_to_string(common::repo().join("examples/duplicate-order.json")).unwrap();
    let (status, answer) = pipeline.post_order(&duplicate).await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("order-1001"),
        "{answer}"
    );

    let received = read_topic(&pipeline.topic("OrderReceived"), 1, QUIET, TIMEOUT).await;
    assert_eq!(received.len(), 1, "{received:#?}");
    let delivered = read_topic(&pipeline.topic("NotificationDelivered"), 3, QUIET, TIMEOUT).await;
    assert_eq!(delivered.len(), 3, "{delivered:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_with_a_message_naming_the_problem() {
    let mut pipeline = TestPipeline::new(|config| {
        config["http"]
            .as_table_mut()
            .unwrap()
            .insert("max_body_bytes".into(), 2048.into());
    });
    pipeline.start();
    let (status, answer) = pipeline.post_order("{\"order_id\": ").await;
    assert_eq!(status, 400);
    assert!(
        answer["error"].as_str().unwrap().contains("JSON"),
        "{answer}"
    );

    let mut zero =
        serde_json::from_str::<serde_json::Value>(&order("order-zero", "prod-789", 1)).unwrap();
    zero["items"][0]["quantity"] = 0.into();
    let (status, answer) = pipeline.post_order(&zero.to_string()).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("quantity"),
        "{answer}"
    );

    let mut wrong_total =
        serde_json::from_str::<serde_json::Value>(&order("order-total", "prod-789", 2)).unwrap();
    wrong_total["total"] = 40.0.into();
    let (status, answer) = pipeline.post_order(&wrong_total.to_string()).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("total"),
        "{answer}"
    );

    let huge = format!("{{\"order_id\": \"{}\"}}", "x".repeat(4096));
    let (status, answer) = pipeline.post_order(&huge).await;
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("max_body_bytes"),
        "{answer}"
    );

    // None of them entered the pipeline.
    let received = read_topic(&pipeline.topic("OrderReceived"), 0, QUIET, QUIET).await;
    assert!(received.is_empty(), "{received:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_message_is_dead_lettered_and_the_next_one_flows() {
    let mut pipeline = TestPipeline::new(|_| {});
    pipeline.start();
    let confirmed_topic = pipeline.topic("OrderConfirmed");
    produce_raw(&confirmed_topic, "order-bad", b"{this is not json", &[]).await;
    let mut good: serde_json::Value =
        serde_json::from_str(&order("order-good", "prod-789", 1)).unwrap();
    good["status"] = "confirmed".into();
    produce_raw(
        &confirmed_topic,
        "order-good",
        good.to_string().as_bytes(),
        &[
            ("ce_id", "external-good-1"),
            ("ce_type", "OrderConfirmed"),
            ("ce_specversion", "1.0"),
        ],
    )
    .await;

    let dead = read_topic(&pipeline.topic("DeadLetterQueue"), 1, QUIET, TIMEOUT).await;
    assert_eq!(dead.len(), 1, "{dead:#?}");
    let letter = &dead[0].value;
    assert_eq!(letter["original_event"], "{this is not json");
    assert!(
        letter["error"].as_str().unwrap().starts_with("undecodable"),
        "{letter}"
    );
    assert_eq!(letter["stage"], "warehouse");
    assert_eq!(letter["source_topic"], confirmed_topic.as_str());
    assert!(letter["partition"].as_i64().is_some());
    assert!(letter["offset"].as_i64().is_some());
    assert!(
        letter["plugin_version"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert!(letter["timestamp"].as_str().is_some());
    assert_eq!(dead[0].headers["ce_type"], "DeadLetter");

    let packed = read_topic(&pipeline.topic("OrderPickedAndPacked"), 1, QUIET, TIMEOUT).await;
    assert_eq!(packed.len(), 1, "{packed:#?}");
    assert_eq!(packed[0].value["order_id"], "order-good");

    // A schema violation is dead-lettered too, with the offending field named.
    let mut invalid = good.clone();
    invalid["order_id"] = "order-invalid".into();
    invalid["items"] = serde_json::json!("not a list");
    produce_raw(
        &confirmed_topic,
        "order-invalid",
        invalid.to_string().as_bytes(),
        &[],
    )
    .await;
    let dead = read_topic(&pipeline.topic("DeadLetterQueue"), 2, QUIET, TIMEOUT).await;
    assert_eq!(dead.len(), 2, "{dead:#?}");
    assert!(
        dead[1].value["error"].as_str().unwrap().contains("/items"),
        "{:#?}",
        dead[1]
    );
}

/// Posts `count` orders while the host is stopped once with `signal` and restarted.
async fn post_across_a_restart(
    pipeline: &mut TestPipeline,
    count: usize,
    signal: &str,
) -> Vec<String> {
    let ids: Vec<String> = (0..count).map(|i| format!("order-{signal}-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        if i == count / 2 {
            // Let the stages be busy with the first half, then stop the host mid-stream.
            tokio::time::sleep(Duration::from_millis(150)).await;
            pipeline.stop(signal);
            pipeline.start();
        }
        let status = pipeline
            .post_order_until_answered(&order(id, "prod-789", 1), TIMEOUT)
            .await;
        assert_eq!(status, 202, "{id}");
    }
    ids
}

fn by_ce_id(records: &[common::Record]) -> BTreeMap<String, Vec<&common::Record>> {
    let mut map: BTreeMap<String, Vec<&common::Record>> = BTreeMap::new();
    for record in records {
        map.entry(record.ce_id().to_string())
            .or_default()
            .push(record);
    }
    map
}

/// Sets every stage's processing `mode`.
fn all_stages_in(config: &mut toml::Table, mode: &str) {
    for stage in config.get_mut("stages").unwrap().as_array_mut().unwrap() {
        stage
            .as_table_mut()
            .unwrap()
            .insert("mode".into(), mode.into());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_restart_mid_stream_neither_loses_nor_repeats_anything() {
    clean_restart_mid_stream("exactly_once").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_a_clean_restart_mid_stream_neither_loses_nor_repeats_anything() {
    // A clean stop settles the open work (acknowledgements, processed ids, offsets), so
    // nothing is handled twice.
    clean_restart_mid_stream("at_least_once").await;
}

async fn clean_restart_mid_stream(mode: &str) {
    let mut pipeline = TestPipeline::new(|config| all_stages_in(config, mode));
    pipeline.start();
    let count = 300;
    let ids = post_across_a_restart(&mut pipeline, count, "TERM").await;
    let delivered = read_topic(
        &pipeline.topic("NotificationDelivered"),
        3 * count,
        QUIET,
        TIMEOUT,
    )
    .await;
    assert_eq!(
        delivered.len(),
        3 * count,
        "{mode}: lost or repeated deliveries"
    );
    for (topic, per_order) in [
        ("OrderReceived", 1),
        ("OrderConfirmed", 1),
        ("OrderPickedAndPacked", 1),
        ("Notification", 3),
    ] {
        let records = read_topic(&pipeline.topic(topic), per_order * count, QUIET, TIMEOUT).await;
        assert_eq!(
            records.len(),
            per_order * count,
            "{mode}, {topic}: nothing lost, nothing re-emitted"
        );
        assert_eq!(
            by_ce_id(&records).len(),
            per_order * count,
            "{topic}: ids unique"
        );
    }
    let orders: BTreeSet<&str> = delivered
        .iter()
        .map(|r| r.value["order_id"].as_str().unwrap())
        .collect();
    assert_eq!(orders, ids.iter().map(String::as_str).collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_nothing_is_lost_and_repeats_carry_the_same_ids() {
    kill_9_mid_stream("exactly_once").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_after_kill_9_nothing_is_lost_and_repeats_carry_the_same_ids() {
    kill_9_mid_stream("at_least_once").await;
}

async fn kill_9_mid_stream(mode: &str) {
    let mut pipeline = TestPipeline::new(|config| all_stages_in(config, mode));
    pipeline.start();
    let count = 300;
    let ids = post_across_a_restart(&mut pipeline, count, "KILL").await;
    let delivered = read_topic(
        &pipeline.topic("NotificationDelivered"),
        3 * count,
        QUIET,
        TIMEOUT,
    )
    .await;
    // Every notification was delivered; a delivery repeated by the crash has the same id.
    let deliveries = by_ce_id(&delivered);
    assert_eq!(deliveries.len(), 3 * count, "distinct deliveries");
    let notifications: BTreeSet<&str> = delivered
        .iter()
        .map(|r| r.value["notification_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        notifications.len(),
        3 * count,
        "each notification delivered"
    );
    for (topic, per_order) in [
        ("OrderReceived", 1),
        ("OrderConfirmed", 1),
        ("OrderPickedAndPacked", 1),
        ("Notification", 3),
    ] {
        let records = read_topic(&pipeline.topic(topic), per_order * count, QUIET, TIMEOUT).await;
        let distinct = by_ce_id(&records);
        assert_eq!(distinct.len(), per_order * count, "{topic}: nothing lost");
        for (id, copies) in &distinct {
            assert!(
                copies.iter().all(|c| c.raw == copies[0].raw),
                "{topic}: re-emitted event {id} differs from the original"
            );
        }
        eprintln!(
            "{mode}, {topic}: {} records, {} distinct ids after kill -9",
            records.len(),
            distinct.len()
        );
    }
    let orders: BTreeSet<&str> = delivered
        .iter()
        .map(|r| r.value["order_id"].as_str().unwrap())
        .collect();
    assert_eq!(orders, ids.iter().map(String::as_str).collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_is_reserved_restocked_and_order_status_is_served_over_http() {
    let mut pipeline = TestPipeline::new(|config| {
        let stock = stage_mut(config, "stock");
        stock["config"]["catalog"]
            .as_table_mut()
            .unwrap()
            .insert("few-1".into(), 3.into());
    });
    pipeline.start();
    assert_eq!(
        pipeline.get("/inventory/few-1").await.1["stock"],
        3,
        "catalog stock before any order"
    );
    assert_eq!(pipeline.get("/inventory/nope").await.0, 404);

    // 2 of 3 reserved, then an order for 2 more is short, then a restock lets it through.
    assert_eq!(
        pipeline.post_order(&order("order-a", "few-1", 2)).await.0,
        202
    );
    let delivered = read_topic(&pipeline.topic("NotificationDelivered"), 3, QUIET, TIMEOUT).await;
    assert_eq!(delivered.len(), 3);
    assert_eq!(
        pipeline.post_order(&order("order-b", "few-1", 2)).await.0,
        202
    );
    let delivered = read_topic(&pipeline.topic("NotificationDelivered"), 4, QUIET, TIMEOUT).await;
    assert!(
        delivered
            .iter()
            .any(|d| d.value["order_id"] == "order-b" && d.value["kind"] == "order_rejected")
    );

    let (status, stock) = pipeline.get("/inventory/few-1").await;
    assert_eq!(status, 200);
    assert_eq!(stock["stock"], 1, "{stock}");
    let restock = r#"{"quantity": 5, "restock_id": "r-1"}"#;
    let first = pipeline.post("/inventory/few-1/restock", restock).await;
    assert_eq!(first.0, 202, "{}", first.1);
    assert_eq!(
        pipeline.post("/inventory/few-1/restock", restock).await,
        first,
        "a repeated restock is not applied twice"
    );
    assert_eq!(
        pipeline
            .post(
                "/inventory/few-1/restock",
                r#"{"quantity": 0, "restock_id": "r-2"}"#
            )
            .await
            .0,
        400
    );
    assert_eq!(
        pipeline.post_order(&order("order-c", "few-1", 6)).await.0,
        202
    );
    let delivered = read_topic(&pipeline.topic("NotificationDelivered"), 7, QUIET, TIMEOUT).await;
    assert!(
        delivered
            .iter()
            .any(|d| d.value["order_id"] == "order-c" && d.value["kind"] == "shipped"),
        "{delivered:#?}"
    );
    let ledger = read_topic(&pipeline.topic("InventoryLedger"), 3, QUIET, TIMEOUT).await;
    let deltas: Vec<i64> = ledger
        .iter()
        .map(|l| l.value["delta"].as_i64().unwrap())
        .collect();
    assert_eq!(deltas, [-2, 5, -6], "{ledger:#?}");
    assert_eq!(pipeline.get("/inventory/few-1").await.1["stock"], 0);

    // Order status, built by the order-status stage.
    let (status, doc) = pipeline.get("/orders/order-c").await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["status"], "shipped", "{doc}");
    assert!(
        doc["carrier"].as_str().is_some() && doc["tracking_number"].as_str().is_some(),
        "{doc}"
    );
    let events: Vec<&str> = doc["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    for expected in [
        "received",
        "confirmed",
        "picked_and_packed",
        "shipped",
        "notification_delivered",
    ] {
        assert!(
            events.contains(&expected),
            "{expected} missing from {events:?}"
        );
    }
    let (_, rejected) = pipeline.get("/orders/order-b").await;
    assert_eq!(rejected["status"], "rejected", "{rejected}");
    assert_eq!(pipeline.get("/orders/never-posted").await.0, 404);
}
