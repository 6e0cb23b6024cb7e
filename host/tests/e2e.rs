//! End-to-end tests: the repository's pipeline.toml and plugins, a real `stagehost` process
//! and a real Kafka broker, each test on freshly named topics.
//!
//! Each test waits for the outcome it expects (polling the topics or the HTTP read models),
//! then stops the host cleanly and reads every topic it checks `read_committed` up to its end
//! offsets: the counts are exact (one outcome per order, no event twice, an empty
//! dead-letter queue), never what arrived before a quiet window.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{
    Record, SETTLE, TestPipeline, count_by, field, order, produce_raw, read_to_end, repeated_by,
    stage_mut, wait_for_records, wait_until,
};

const TIMEOUT: Duration = Duration::from_secs(60);
/// The three notifications of a shipped order, by kind.
const SHIPPED_KINDS: [&str; 3] = ["order_confirmed", "being_fulfilled", "shipped"];

fn kinds(records: &[Record]) -> BTreeSet<String> {
    records.iter().map(|r| field(r, "kind")).collect()
}

/// `<order_id>/<kind>` of a notification or delivery.
fn order_and_kind(record: &Record) -> String {
    format!("{}/{}", field(record, "order_id"), field(record, "kind"))
}

/// `{key: 1}` for every key: what an exact count per business key must be.
fn once_each<I: IntoIterator<Item = String>>(keys: I) -> BTreeMap<String, usize> {
    keys.into_iter().map(|k| (k, 1)).collect()
}

/// Stops the host cleanly (it finishes and commits its work) and checks that it exited well.
fn stop_cleanly(pipeline: &mut TestPipeline) {
    let status = pipeline.stop("TERM");
    assert!(status.success(), "the host did not stop cleanly: {status}");
}

/// The dead-letter queue, read to its end, is empty.
async fn assert_no_dead_letters(pipeline: &TestPipeline) {
    let dead = read_to_end(&pipeline.topic("DeadLetterQueue"), SETTLE).await;
    assert!(dead.is_empty(), "nothing may be dead-lettered: {dead:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_travels_through_every_stage_to_three_notifications() {
    let mut pipeline = TestPipeline::new(|_| {});
    pipeline.start();
    let body = std::fs::read_to_string(common::repo().join("examples/order.json")).unwrap();
    let delivered_topic = pipeline.topic("NotificationDelivered");
    let posted_ms = unix_ms();
    let (status, answer) = pipeline.post_order(&body).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["order_id"], "order-1001");
    let delivered = wait_for_records(
        &delivered_topic,
        "the three deliveries of order-1001",
        TIMEOUT,
        |r| r.len() >= 3,
    )
    .await;
    let last = delivered.iter().map(|r| r.timestamp_ms).max().unwrap();
    eprintln!(
        "first order (consumer groups joining): POST to third delivered notification {} ms",
        last - posted_ms
    );

    // A second order on the warm pipeline: the figure the README quotes.
    let second = body.replace("order-1001", "order-1002");
    let posted_ms = unix_ms();
    assert_eq!(pipeline.post_order(&second).await.0, 202);
    let delivered = wait_for_records(
        &delivered_topic,
        "the three deliveries of order-1002",
        TIMEOUT,
        |r| {
            r.iter()
                .filter(|d| field(d, "order_id") == "order-1002")
                .count()
                >= 3
        },
    )
    .await;
    let last = delivered
        .iter()
        .filter(|d| field(d, "order_id") == "order-1002")
        .map(|r| r.timestamp_ms)
        .max()
        .unwrap();
    eprintln!(
        "warm order: POST to third delivered notification {} ms",
        last - posted_ms
    );
    wait_for_records(
        &pipeline.topic("KPIs"),
        "the inventory stage's events_processed KPI",
        TIMEOUT,
        |kpis| {
            kpis.iter().any(|k| {
                k.value["kpi_name"] == "inventory.events_processed"
                    && k.value["metric"] == "count"
                    && k.value["value"].as_u64() >= Some(1)
                    && k.value["timestamp"].as_u64().is_some()
            })
        },
    )
    .await;
    stop_cleanly(&mut pipeline);

    let orders = ["order-1001", "order-1002"];
    let delivered = read_to_end(&delivered_topic, SETTLE).await;
    assert_eq!(
        count_by(&delivered, order_and_kind),
        once_each(
            orders
                .iter()
                .flat_map(|o| SHIPPED_KINDS.map(|k| format!("{o}/{k}")))
        ),
        "each order's three notifications delivered once: {delivered:#?}"
    );
    assert_eq!(kinds(&delivered), SHIPPED_KINDS.map(String::from).into());
    for shipped in delivered.iter().filter(|r| r.value["kind"] == "shipped") {
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
    }

    for (topic, per_order, status) in [
        ("OrderReceived", 1, Some("received")),
        ("OrderConfirmed", 1, Some("confirmed")),
        ("OrderPickedAndPacked", 1, Some("picked_and_packed")),
        ("Notification", 3, None),
    ] {
        let records = read_to_end(&pipeline.topic(topic), SETTLE).await;
        assert_eq!(
            count_by(&records, |r| field(r, "order_id")),
            orders.iter().map(|o| (o.to_string(), per_order)).collect(),
            "{topic}: exactly {per_order} per order: {records:#?}"
        );
        let repeated = repeated_by(&records, |r| r.ce_id().to_string());
        assert!(repeated.is_empty(), "{topic}: ids repeated: {repeated:?}");
        for record in &records {
            let order_id = field(record, "order_id");
            assert_eq!(record.key.as_deref(), Some(order_id.as_str()), "{topic}");
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
    assert_no_dead_letters(&pipeline).await;
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
        let stock = stage_mut(config, "stock");
        stock["config"]["catalog"]
            .as_table_mut()
            .unwrap()
            .insert("scarce-1".into(), 2.into());
    });
    pipeline.start();
    let (status, answer) = pipeline
        .post_order(&order("order-oos", "scarce-1", 3))
        .await;
    assert_eq!(status, 202, "{answer}");
    let delivered_topic = pipeline.topic("NotificationDelivered");
    wait_for_records(
        &delivered_topic,
        "the rejection of order-oos",
        TIMEOUT,
        |r| !r.is_empty(),
    )
    .await;
    stop_cleanly(&mut pipeline);

    let delivered = read_to_end(&delivered_topic, SETTLE).await;
    assert_eq!(delivered.len(), 1, "one outcome: {delivered:#?}");
    assert_eq!(delivered[0].value["order_id"], "order-oos");
    assert_eq!(delivered[0].value["kind"], "order_rejected");
    assert_eq!(
        delivered[0].value["short_products"],
        serde_json::json!(["scarce-1"])
    );
    let confirmed = read_to_end(&pipeline.topic("OrderConfirmed"), SETTLE).await;
    assert!(confirmed.is_empty(), "{confirmed:#?}");
    let ledger = read_to_end(&pipeline.topic("InventoryLedger"), SETTLE).await;
    assert!(ledger.is_empty(), "no stock was taken: {ledger:#?}");
    assert_no_dead_letters(&pipeline).await;
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

    let delivered_topic = pipeline.topic("NotificationDelivered");
    wait_for_records(
        &delivered_topic,
        "the three deliveries of order-1001",
        TIMEOUT,
        |r| r.len() >= 3,
    )
    .await;
    stop_cleanly(&mut pipeline);
    let received = read_to_end(&pipeline.topic("OrderReceived"), SETTLE).await;
    assert_eq!(received.len(), 1, "{received:#?}");
    let delivered = read_to_end(&delivered_topic, SETTLE).await;
    assert_eq!(
        count_by(&delivered, order_and_kind),
        once_each(SHIPPED_KINDS.map(|k| format!("order-1001/{k}"))),
        "one flow: {delivered:#?}"
    );
    assert_no_dead_letters(&pipeline).await;
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

    // None of them entered the pipeline; a good order after them does (so the topic read
    // below is known to see what the ingress publishes).
    let (status, answer) = pipeline
        .post_order(&order("order-good", "prod-789", 1))
        .await;
    assert_eq!(status, 202, "{answer}");
    let received_topic = pipeline.topic("OrderReceived");
    wait_for_records(&received_topic, "order-good", TIMEOUT, |r| !r.is_empty()).await;
    stop_cleanly(&mut pipeline);
    let received = read_to_end(&received_topic, SETTLE).await;
    let ids: Vec<String> = received.iter().map(|r| field(r, "order_id")).collect();
    assert_eq!(ids, ["order-good"], "{received:#?}");
    assert_no_dead_letters(&pipeline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_message_is_dead_lettered_and_the_next_one_flows() {
    let mut pipeline = TestPipeline::new(|_| {});
    pipeline.start();
    let confirmed_topic = pipeline.topic("OrderConfirmed");
    let dead_topic = pipeline.topic("DeadLetterQueue");
    let packed_topic = pipeline.topic("OrderPickedAndPacked");
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
    wait_for_records(&dead_topic, "the undecodable record", TIMEOUT, |r| {
        !r.is_empty()
    })
    .await;
    wait_for_records(&packed_topic, "order-good packed", TIMEOUT, |r| {
        !r.is_empty()
    })
    .await;

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
    wait_for_records(&dead_topic, "the schema violation", TIMEOUT, |r| {
        r.len() >= 2
    })
    .await;
    stop_cleanly(&mut pipeline);

    let dead = read_to_end(&dead_topic, SETTLE).await;
    assert_eq!(
        dead.len(),
        2,
        "each bad record dead-lettered once: {dead:#?}"
    );
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
    assert!(
        dead[1].value["error"].as_str().unwrap().contains("/items"),
        "{:#?}",
        dead[1]
    );

    let packed = read_to_end(&packed_topic, SETTLE).await;
    assert_eq!(packed.len(), 1, "only the good record: {packed:#?}");
    assert_eq!(packed[0].value["order_id"], "order-good");
}

/// An order id and the answer its POST got.
type Answered = (String, (u16, serde_json::Value));

/// Posts `count` orders while the host is stopped once with `signal` and restarted: the first
/// half at once (eight clients, so the stages have a backlog), the host stopped as soon as the
/// first notifications are delivered, the second half one by one against the restarted host.
/// Returns each order with the answer it got.
async fn post_across_a_restart(
    pipeline: &mut TestPipeline,
    count: usize,
    signal: &str,
) -> Vec<Answered> {
    let ids: Vec<String> = (0..count).map(|i| format!("order-{signal}-{i}")).collect();
    let (first_half, second_half) = ids.split_at(count / 2);
    let mut answers = Vec::new();
    for chunk in first_half.chunks(first_half.len().div_ceil(8)) {
        let (http, chunk) = (pipeline.http.clone(), chunk.to_vec());
        answers.push(tokio::spawn(async move {
            let mut answered = Vec::new();
            for id in chunk {
                let body = order(&id, "prod-789", 1);
                let answer = common::post_until_answered(&http, "/orders", &body, TIMEOUT).await;
                answered.push((id, answer));
            }
            answered
        }));
    }
    let mut answered = Vec::new();
    for task in answers {
        answered.extend(task.await.unwrap());
    }
    let delivered = wait_for_records(
        &pipeline.topic("NotificationDelivered"),
        "the first deliveries",
        TIMEOUT,
        |r| !r.is_empty(),
    )
    .await;
    eprintln!(
        "{signal} after {} of the first half's {} deliveries",
        delivered.len(),
        3 * first_half.len()
    );
    pipeline.stop(signal);
    pipeline.start();
    for id in second_half {
        let answer = pipeline
            .post_until_answered("/orders", &order(id, "prod-789", 1), TIMEOUT)
            .await;
        answered.push((id.clone(), answer));
    }
    for (id, (status, body)) in &answered {
        assert_eq!(*status, 202, "{id}: {body}");
    }
    answered
}

/// Waits until every order has its three notifications delivered.
async fn wait_for_every_delivery(pipeline: &TestPipeline, answered: &[Answered]) {
    let wanted: BTreeSet<String> = answered
        .iter()
        .flat_map(|(id, _)| SHIPPED_KINDS.map(|k| format!("{id}/{k}")))
        .collect();
    wait_for_records(
        &pipeline.topic("NotificationDelivered"),
        "three deliveries per order",
        Duration::from_secs(180),
        |r| {
            let seen: BTreeSet<String> = r.iter().map(order_and_kind).collect();
            wanted.is_subset(&seen)
        },
    )
    .await;
}

/// Posts every order again: each gets the answer its first POST got (same status and event
/// ids), whether it was accepted before or after the restart. (That nothing is published
/// again is checked by the exact counts afterwards.)
async fn assert_reposts_get_the_first_answers(
    pipeline: &TestPipeline,
    answered: &[Answered],
    signal: &str,
) {
    let restarted_at = answered.len() / 2;
    for (i, (id, first)) in answered.iter().enumerate() {
        let again = pipeline.post_order(&order(id, "prod-789", 1)).await;
        let when = if i < restarted_at { "before" } else { "after" };
        assert_eq!(
            &again, first,
            "{id}, accepted {when} the {signal}: a repeat gets the first answer"
        );
        assert!(
            first.1["event_ids"]
                .as_array()
                .is_some_and(|ids| !ids.is_empty()),
            "{id}: {}",
            first.1
        );
    }
}

/// The business key of a record (e.g. its order id, or order id and kind).
type BusinessKey = fn(&Record) -> String;
/// The business keys an order must have in a topic, once each.
type ExpectedKeys = dyn Fn(&str) -> Vec<String>;

/// Reads every topic of the order flow to its end and checks exactly one outcome per order:
/// one OrderReceived, OrderConfirmed and OrderPickedAndPacked per order, its three
/// notifications once each, each notification delivered once, nothing dead-lettered.
/// `same_id_repeats`: whether a record may be committed twice with the same id (at-least-once
/// after a crash; the copies must then be identical, and the next stage drops them).
async fn assert_one_outcome_per_order(
    pipeline: &TestPipeline,
    answered: &[Answered],
    mode: &str,
    same_id_repeats: bool,
) {
    let ids: Vec<&str> = answered.iter().map(|(id, _)| id.as_str()).collect();
    let per_order = |key: &ExpectedKeys| -> BTreeMap<String, usize> {
        once_each(ids.iter().flat_map(|id| key(id)))
    };
    let by_order: &ExpectedKeys = &|id| vec![id.to_string()];
    let by_kind: &ExpectedKeys = &|id| SHIPPED_KINDS.map(|k| format!("{id}/{k}")).to_vec();
    let topics: [(&str, BusinessKey, &ExpectedKeys); 5] = [
        ("OrderReceived", |r| field(r, "order_id"), by_order),
        ("OrderConfirmed", |r| field(r, "order_id"), by_order),
        ("OrderPickedAndPacked", |r| field(r, "order_id"), by_order),
        ("Notification", order_and_kind, by_kind),
        ("NotificationDelivered", order_and_kind, by_kind),
    ];
    let mut notification_ids = BTreeSet::new();
    for (topic, business_key, expected) in topics {
        let records = read_to_end(&pipeline.topic(topic), SETTLE).await;
        let mut distinct: BTreeMap<&str, &Record> = BTreeMap::new();
        for record in &records {
            let first = *distinct.entry(record.ce_id()).or_insert(record);
            assert!(
                first.raw == record.raw,
                "{mode}, {topic}: event {} committed twice with different contents",
                record.ce_id()
            );
        }
        let repeated = repeated_by(&records, |r| r.ce_id().to_string());
        eprintln!(
            "{mode}, {topic}: {} records, {} distinct ids, {} ids committed more than once",
            records.len(),
            distinct.len(),
            repeated.len()
        );
        if !same_id_repeats {
            assert!(
                repeated.is_empty(),
                "{mode}, {topic}: events committed twice: {repeated:?}"
            );
        }
        assert_eq!(
            count_by(distinct.values().copied(), business_key),
            per_order(expected),
            "{mode}, {topic}: exactly one event per order (and kind)"
        );
        if topic == "Notification" {
            notification_ids = distinct.keys().map(|id| id.to_string()).collect();
        }
        if topic == "NotificationDelivered" {
            let delivered: BTreeSet<String> = distinct
                .values()
                .map(|r| field(r, "notification_id"))
                .collect();
            assert_eq!(
                delivered, notification_ids,
                "{mode}: each notification delivered"
            );
            assert_eq!(delivered.len(), distinct.len(), "{mode}: delivered once");
        }
    }
    assert_no_dead_letters(pipeline).await;
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
    restart_mid_stream("exactly_once", "TERM", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_a_clean_restart_mid_stream_neither_loses_nor_repeats_anything() {
    // A clean stop settles the open work (acknowledgements, processed ids, offsets), so
    // nothing is handled twice.
    restart_mid_stream("at_least_once", "TERM", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_each_order_has_exactly_one_outcome_and_a_repost_gets_the_first_answer() {
    // Exactly-once: the killed instance's open transactions are aborted; nothing committed
    // twice.
    restart_mid_stream("exactly_once", "KILL", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_after_kill_9_each_order_has_one_outcome_and_repeats_carry_the_same_ids() {
    // At-least-once: an input may be handled again after the crash; its outputs carry the
    // same ids (and contents), so each order still has one outcome.
    restart_mid_stream("at_least_once", "KILL", true).await;
}

async fn restart_mid_stream(mode: &str, signal: &str, same_id_repeats: bool) {
    let mut pipeline = TestPipeline::new(|config| all_stages_in(config, mode));
    pipeline.start();
    let answered = post_across_a_restart(&mut pipeline, 300, signal).await;
    wait_for_every_delivery(&pipeline, &answered).await;
    let received_topic = pipeline.topic("OrderReceived");
    let received = read_to_end(&received_topic, SETTLE).await.len();
    assert_reposts_get_the_first_answers(&pipeline, &answered, signal).await;
    stop_cleanly(&mut pipeline);
    // The ingress publishes before it answers: a repeat that published again (even with the
    // same event id, which the at-least-once checks below would let through) shows here.
    assert_eq!(
        read_to_end(&received_topic, SETTLE).await.len(),
        received,
        "{mode}: the repeated POSTs published nothing"
    );
    assert_one_outcome_per_order(&pipeline, &answered, mode, same_id_repeats).await;
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
    let delivered_topic = pipeline.topic("NotificationDelivered");
    let delivered_to = |order_id: &'static str, kind: &'static str| {
        move |records: &[Record]| {
            records
                .iter()
                .any(|d| d.value["order_id"] == order_id && d.value["kind"] == kind)
        }
    };
    let running = &pipeline;
    let stock_becomes =
        |want: i64| move || async move { running.get("/inventory/few-1").await.1["stock"] == want };

    // 2 of 3 reserved, then an order for 2 more is short, then a restock lets it through.
    assert_eq!(
        pipeline.post_order(&order("order-a", "few-1", 2)).await.0,
        202
    );
    wait_for_records(
        &delivered_topic,
        "order-a shipped",
        TIMEOUT,
        delivered_to("order-a", "shipped"),
    )
    .await;
    assert_eq!(
        pipeline.post_order(&order("order-b", "few-1", 2)).await.0,
        202
    );
    wait_for_records(
        &delivered_topic,
        "order-b rejected",
        TIMEOUT,
        delivered_to("order-b", "order_rejected"),
    )
    .await;
    wait_until("GET /inventory/few-1 to show 1", TIMEOUT, stock_becomes(1)).await;

    let restock = r#"{"quantity": 5, "restock_id": "r-1"}"#;
    let first = pipeline.post("/inventory/few-1/restock", restock).await;
    assert_eq!(first.0, 202, "{}", first.1);
    assert_eq!(
        pipeline.post("/inventory/few-1/restock", restock).await,
        first,
        "a repeated restock gets the first answer"
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
    wait_for_records(
        &delivered_topic,
        "order-c shipped",
        TIMEOUT,
        delivered_to("order-c", "shipped"),
    )
    .await;
    wait_until("GET /inventory/few-1 to show 0", TIMEOUT, stock_becomes(0)).await;

    // Order status, built by the order-status stage.
    let shipped_and_delivered = || async {
        let (status, doc) = running.get("/orders/order-c").await;
        let delivered = doc["timeline"].as_array().map_or(0, |events| {
            events
                .iter()
                .filter(|e| e["event"] == "notification_delivered")
                .count()
        });
        status == 200 && doc["status"] == "shipped" && delivered == 3
    };
    wait_until(
        "order-c's status: shipped, three notifications delivered",
        TIMEOUT,
        shipped_and_delivered,
    )
    .await;
    let (_, doc) = pipeline.get("/orders/order-c").await;
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
    wait_until("order-b's status: rejected", TIMEOUT, || async {
        running.get("/orders/order-b").await.1["status"] == "rejected"
    })
    .await;
    assert_eq!(pipeline.get("/orders/never-posted").await.0, 404);
    stop_cleanly(&mut pipeline);

    // Exactly: one reservation of 2, one restock of 5 (the repeat not applied), one
    // reservation of 6; three deliveries for a and c, one for b.
    let ledger = read_to_end(&pipeline.topic("InventoryLedger"), SETTLE).await;
    let deltas: Vec<i64> = ledger
        .iter()
        .map(|l| l.value["delta"].as_i64().unwrap())
        .collect();
    assert_eq!(deltas, [-2, 5, -6], "{ledger:#?}");
    let stocks: Vec<i64> = ledger
        .iter()
        .map(|l| l.value["stock"].as_i64().unwrap())
        .collect();
    assert_eq!(stocks, [1, 6, 0], "{ledger:#?}");
    let delivered = read_to_end(&delivered_topic, SETTLE).await;
    assert_eq!(
        count_by(&delivered, |r| field(r, "order_id")),
        BTreeMap::from([
            ("order-a".to_string(), 3),
            ("order-b".to_string(), 1),
            ("order-c".to_string(), 3)
        ]),
        "{delivered:#?}"
    );
    let confirmed = read_to_end(&pipeline.topic("OrderConfirmed"), SETTLE).await;
    let confirmed: Vec<String> = confirmed.iter().map(|r| field(r, "order_id")).collect();
    assert_eq!(
        confirmed.iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([&"order-a".to_string(), &"order-c".to_string()]),
        "order-b never confirmed"
    );
    assert_eq!(confirmed.len(), 2, "{confirmed:?}");
    assert_no_dead_letters(&pipeline).await;
}

/// `logs` without the terminal colour codes the host's log lines carry.
fn without_colours(logs: &str) -> String {
    let mut plain = String::with_capacity(logs.len());
    let mut chars = logs.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip to the end of the escape sequence (`ESC [ ... m`).
            chars.by_ref().find(|c| *c == 'm');
        } else {
            plain.push(c);
        }
    }
    plain
}

/// Closed-loop clients that post orders until the host is gone; the orders answered `202`.
async fn post_until_gone(http: String, client: usize, accepted: Arc<AtomicUsize>) -> Vec<String> {
    let mut answered = Vec::new();
    let http_client = reqwest::Client::new();
    for n in 0.. {
        let id = format!("pool-{client}-{n}");
        let sent = http_client
            .post(format!("http://{http}/orders"))
            .header("content-type", "application/json")
            .body(order(&id, "prod-789", 1))
            .send()
            .await;
        match sent {
            Ok(response) if response.status() == 202 => {
                answered.push(id);
                accepted.fetch_add(1, Ordering::Relaxed);
            }
            Ok(response) => {
                let status = response.status();
                assert_eq!(status, 503, "{id}: {:?}", response.text().await);
            }
            Err(_) => break, // the host is gone
        }
    }
    answered
}

/// The exactly-once ingress alone, four producers, 32 closed-loop clients, killed (`kill -9`)
/// while they post: more than one producer committed, every order answered `202` before the
/// kill is in OrderReceived `read_committed` exactly once (`202` means committed), and after a
/// restart (whose producers fence the killed ones' open transactions) a repost gets `202`
/// without publishing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_clients_share_the_ingress_producers_and_every_202_was_committed() {
    let mut pipeline = TestPipeline::new(|config| {
        common::keep_stages(config, &["order"]);
        config["http"]
            .as_table_mut()
            .unwrap()
            .insert("ingress_producers".into(), 4.into());
    });
    pipeline.start();
    let accepted = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..32)
        .map(|client| {
            tokio::spawn(post_until_gone(
                pipeline.http.clone(),
                client,
                accepted.clone(),
            ))
        })
        .collect();
    wait_until("400 orders accepted", TIMEOUT, || {
        let accepted = accepted.clone();
        async move { accepted.load(Ordering::Relaxed) >= 400 }
    })
    .await;
    pipeline.stop("KILL");
    let mut answered = Vec::new();
    for client in clients {
        answered.extend(client.await.unwrap());
    }
    let logs = without_colours(&pipeline.logs());
    let producers: BTreeSet<&str> = logs
        .lines()
        .filter(|line| line.contains("ingress transaction ended"))
        .filter_map(|line| line.split("producer=").nth(1)?.split_whitespace().next())
        .collect();
    eprintln!(
        "{} orders answered 202 before the kill; transactions ended on producers {producers:?}",
        answered.len()
    );
    assert!(
        producers.len() > 1,
        "one producer did all the work:\n{logs}"
    );

    // The restarted host's producers (same transactional ids) abort what the killed ones left
    // open, so read_committed readers reach the end without waiting for the timeout.
    pipeline.start();
    for id in answered.iter().take(16) {
        let (status, body) = pipeline.post_order(&order(id, "prod-789", 1)).await;
        assert_eq!(status, 202, "a repost of {id}: {body}");
    }
    let received = read_to_end(&pipeline.topic("OrderReceived"), TIMEOUT).await;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for record in &received {
        *counts.entry(field(record, "order_id")).or_default() += 1;
    }
    let missing: Vec<&String> = answered
        .iter()
        .filter(|id| !counts.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} orders answered 202 are not in OrderReceived ({} records): {missing:?}",
        missing.len(),
        answered.len(),
        received.len()
    );
    let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "published twice: {repeated:?}");
    stop_cleanly(&mut pipeline);
}
