//! `stagehost trace <key>` against a real broker: an order posted through a running host is
//! traced through every stage in time order, a poison event shows its dead letter, and an
//! unknown key says so.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{TestPipeline, produce_raw, stagehost, wait_for_records, wait_until};

const TIMEOUT: Duration = Duration::from_secs(90);

/// `stagehost trace <key> --config <config> --json`, parsed.
fn trace_json(pipeline: &TestPipeline, key: &str) -> serde_json::Value {
    let config = pipeline.config_path.display().to_string();
    let (ok, out, err) = stagehost(&["trace", key, "--config", &config, "--json"]);
    assert!(ok, "trace {key} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_is_traced_through_every_stage_and_a_poison_event_shows_its_dead_letter() {
    let mut pipeline = TestPipeline::new(|_| {});
    pipeline.start();
    let order_id = "trace-1";
    let (status, answer) = pipeline
        .post_order(&common::order(order_id, "prod-789", 2))
        .await;
    assert_eq!(status, 202, "{answer}");
    // The order's last event: order-status publishes the document of the shipped order with
    // its third delivered notification (its topic keeps the latest document per key, so the
    // seven inputs make one to seven documents, as they fall into commits).
    wait_until("the order shipped with 3 deliveries", TIMEOUT, || async {
        let (_, doc) = pipeline.get(&format!("/orders/{order_id}")).await;
        doc["status"] == "shipped" && doc["notifications_delivered"] == 3
    })
    .await;
    wait_for_records(
        &pipeline.topic("OrderStatus"),
        "the order's last status document",
        TIMEOUT,
        |records| {
            records.iter().any(|r| {
                r.key.as_deref() == Some(order_id) && r.value["notifications_delivered"] == 3
            })
        },
    )
    .await;

    let trace = trace_json(&pipeline, order_id);
    let events = trace["events"].as_array().unwrap();
    let on = |logical: &str| {
        let topic = pipeline.topic(logical);
        events
            .iter()
            .filter(|e| e["topic"] == topic.as_str())
            .count()
    };
    // One unit of one product: every hop of the saga, keyed by the order or by the product.
    let expected = [
        ("OrderReceived", 1),
        ("InventoryCommands", 1),
        ("InventoryResults", 2),
        ("InventoryLedger", 1),
        ("OrderConfirmed", 1),
        ("OrderPickedAndPacked", 1),
        ("Notification", 3),
        ("NotificationDelivered", 3),
    ];
    for (logical, count) in expected {
        assert_eq!(on(logical), count, "events on {logical}: {trace:#}");
    }
    let statuses = on("OrderStatus");
    assert!(
        (1..=7).contains(&statuses),
        "{statuses} status documents: {trace:#}"
    );
    assert_eq!(events.len(), 13 + statuses, "{trace:#}");
    // Every stage but restock wrote one of them.
    let config: toml::Table = std::fs::read_to_string(&pipeline.config_path)
        .unwrap()
        .parse()
        .unwrap();
    for stage in config["stages"].as_array().unwrap() {
        let name = stage["name"].as_str().unwrap();
        if name == "restock" {
            continue;
        }
        let source = format!("/stagehost/{name}");
        assert!(
            events.iter().any(|e| e["source"] == source.as_str()),
            "no event of stage {name}: {trace:#}"
        );
    }
    // Records keyed by product are found by the body's order_id.
    let command = events
        .iter()
        .find(|e| e["topic"] == pipeline.topic("InventoryCommands").as_str())
        .unwrap();
    assert_eq!(command["key"], "prod-789");
    assert_eq!(command["matched_by"], "order_id");
    // Time order, non-negative hops adding up to the total.
    let times: Vec<i64> = events
        .iter()
        .map(|e| e["timestamp_ms"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert!(events[0]["hop_ms"].is_null());
    let hops: Vec<i64> = events[1..]
        .iter()
        .map(|e| e["hop_ms"].as_i64().unwrap())
        .collect();
    assert!(hops.iter().all(|hop| *hop >= 0), "{hops:?}");
    assert_eq!(
        hops.iter().sum::<i64>(),
        trace["total_ms"].as_i64().unwrap()
    );
    assert_eq!(events[0]["topic"], pipeline.topic("OrderReceived").as_str());
    assert!(trace["dead_letters"].as_array().unwrap().is_empty());

    // The table a person reads.
    let config_path = pipeline.config_path.display().to_string();
    let (ok, table, err) = stagehost(&["trace", order_id, "--config", &config_path]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("time (UTC)") && lines[0].contains("+hop ms"),
        "{table}"
    );
    let prefix = pipeline.topic("");
    let total = events.len();
    assert_eq!(
        lines[1..=total]
            .iter()
            .filter(|l| l.contains(&prefix) && l.contains('@'))
            .count(),
        total,
        "{table}"
    );
    assert!(lines[total + 1].is_empty(), "{table}");
    assert!(
        table.contains(&format!("{total} event(s), 0 dead letter(s); first → last")),
        "{table}"
    );
    eprintln!("{table}");

    // A poison event: an OrderConfirmed that breaks its topic's schema, dead-lettered by the
    // warehouse stage.
    let poison = "trace-poison";
    let body = serde_json::json!({"order_id": poison, "items": "none"}).to_string();
    produce_raw(
        &pipeline.topic("OrderConfirmed"),
        poison,
        body.as_bytes(),
        &[("ce_id", "poison-1"), ("ce_type", "OrderConfirmed")],
    )
    .await;
    wait_for_records(
        &pipeline.topic("DeadLetterQueue"),
        "the poison event's dead letter",
        TIMEOUT,
        |records| records.iter().any(|r| r.key.as_deref() == Some(poison)),
    )
    .await;
    let trace = trace_json(&pipeline, poison);
    let topics: Vec<&str> = trace["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["topic"].as_str().unwrap())
        .collect();
    assert_eq!(
        topics,
        [
            pipeline.topic("OrderConfirmed"),
            pipeline.topic("DeadLetterQueue")
        ],
        "{trace:#}"
    );
    let letters = trace["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{trace:#}");
    assert_eq!(letters[0]["stage"], "warehouse");
    assert_eq!(letters[0]["reason"], "schema");
    assert_eq!(
        letters[0]["source_topic"],
        pipeline.topic("OrderConfirmed").as_str()
    );
    assert_eq!(letters[0]["event_id"], "poison-1");
    let (ok, table, err) = stagehost(&["trace", poison, "--config", &config_path]);
    assert!(ok, "{err}");
    assert!(
        table.contains("dead letters:") && table.contains("stage warehouse  schema  from"),
        "{table}"
    );

    let (ok, table, err) = stagehost(&["trace", "never-posted", "--config", &config_path]);
    assert!(ok, "{err}");
    assert!(table.contains("no event of key never-posted"), "{table}");
    let status = pipeline.stop("TERM");
    assert!(status.success(), "the host stopped cleanly: {status}");
}
