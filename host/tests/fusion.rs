//! Stage fusion against a real broker: with fusion allowed for inventory (the shipped pipeline
//! sets `fuse = false` on it) inventory runs in process in the exactly-once ingress's
//! transactions, and warehouse, shipper and notification in the workers that write their
//! inputs; every order still
//! reaches each of its deliveries exactly once, the records they read carry the handled-by
//! header and their own workers skip them (and say so in their KPIs and logs); a fused stage
//! that does not simply succeed in process (retry, reject, trap) is left to its own worker; an
//! outside repeat of an id handled in process is dropped; a hot swap of a fused stage takes
//! effect for the in-process calls; the host places keyed records where librdkafka would.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{
    Record, SETTLE, TestPipeline, add_stage, add_topic, brokers, component, count_by, field,
    keep_stages, order, produce_raw, read_to_end, stage_mut, wait_for_records,
};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use stagehost::kafka::{KafkaClients, Partitioner, ensure_compacted};
use stagehost::plugin::content_version;

const HANDLED_BY: &str = "stagehost-handled-by";
const TIMEOUT: Duration = Duration::from_secs(90);
const KINDS: [&str; 3] = ["order_confirmed", "being_fulfilled", "shipped"];

fn order_and_kind(record: &Record) -> String {
    format!("{}/{}", field(record, "order_id"), field(record, "kind"))
}

/// Sum of the values of KPI `name` (e.g. `shipper.handled_upstream`).
fn kpi_sum(kpis: &[Record], name: &str) -> u64 {
    kpis.iter()
        .filter(|k| k.value["kpi_name"] == name)
        .filter_map(|k| k.value["value"].as_u64())
        .sum()
}

async fn post_orders(pipeline: &TestPipeline, prefix: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for n in 0..count {
        let id = format!("{prefix}-{n}");
        let (status, answer) = pipeline.post_order(&order(&id, "prod-789", 1)).await;
        assert_eq!(status, 202, "{answer}");
        ids.push(id);
    }
    ids
}

/// Waits until each of `ids` has its three deliveries.
async fn wait_delivered(pipeline: &TestPipeline, ids: &[String]) {
    let expected: BTreeSet<String> = ids
        .iter()
        .flat_map(|id| KINDS.map(|k| format!("{id}/{k}")))
        .collect();
    wait_for_records(
        &pipeline.topic("NotificationDelivered"),
        "every delivery",
        TIMEOUT,
        |records| {
            let seen: BTreeSet<String> = records.iter().map(order_and_kind).collect();
            expected.is_subset(&seen)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingress_runs_inventory_and_workers_run_warehouse_shipper_and_notification_in_process()
{
    let mut pipeline = TestPipeline::new(|config| {
        stage_mut(config, "inventory").remove("fuse");
    });
    pipeline.start();
    let ids = post_orders(&pipeline, "fused", 20).await;
    wait_delivered(&pipeline, &ids).await;

    // The downstream stages' own workers skipped what was handled in process, and say so; the
    // in-process work counts in the fused stage's own KPIs (published by its own worker).
    let kpi_topic = pipeline.topic("KPIs");
    let expected = [
        ("inventory", 20),
        ("warehouse", 20),
        ("shipper", 20),
        ("notification", 60),
    ];
    let kpis = wait_for_records(&kpi_topic, "the skip counts", TIMEOUT, |kpis| {
        expected
            .iter()
            .all(|(stage, n)| kpi_sum(kpis, &format!("{stage}.handled_upstream")) >= *n)
    })
    .await;
    let counted = |kpis: &[Record]| {
        expected
            .iter()
            .all(|(stage, n)| kpi_sum(kpis, &format!("{stage}.events_processed")) >= *n)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut kpis = kpis;
    while !counted(&kpis) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        kpis = read_to_end(&kpi_topic, SETTLE).await;
    }
    for (stage, n) in expected {
        let skipped = kpi_sum(&kpis, &format!("{stage}.handled_upstream"));
        let processed = kpi_sum(&kpis, &format!("{stage}.events_processed"));
        assert_eq!(skipped, n, "{stage}: each record skipped once");
        if processed != n {
            // A KPI window goes with the transaction it is published in: one that failed (its
            // stage rebuilt) loses its counts, fused or not. Never more than once, though.
            assert!(
                processed < n && pipeline.logs().contains("stage failed; restarting it"),
                "{stage}: in-process work counted {processed} times for {n} records"
            );
            eprintln!(
                "{stage}: a KPI window was lost with a failed transaction ({processed} of {n} counted)"
            );
        }
    }

    // An outside producer repeats a record that shipper handled in process: it is dropped.
    let packed = read_to_end(&pipeline.topic("OrderPickedAndPacked"), SETTLE).await;
    let original = packed
        .iter()
        .find(|r| field(r, "order_id") == "fused-7")
        .unwrap()
        .clone();
    let headers: Vec<(&str, &str)> = original
        .headers
        .iter()
        .filter(|(name, _)| name.as_str() != HANDLED_BY)
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let partition = producer
        .send(
            FutureRecord::to(&pipeline.topic("OrderPickedAndPacked"))
                .key(original.key.as_deref().unwrap())
                .payload(&original.raw)
                .headers(common::headers_of(&headers)),
            Timeout::After(Duration::from_secs(30)),
        )
        .await
        .unwrap()
        .partition;
    assert_eq!(
        partition, original.partition,
        "the host put the record where librdkafka's partitioner puts its key"
    );
    wait_for_records(&kpi_topic, "the outside repeat dropped", TIMEOUT, |kpis| {
        kpi_sum(kpis, "shipper.duplicates_dropped") >= 1
    })
    .await;

    let status = pipeline.stop("TERM");
    assert!(status.success(), "the host did not stop cleanly: {status}");
    let logs = pipeline.logs();
    assert!(
        logs.contains("stage fusion")
            && logs.contains("inventory, notification, shipper, warehouse"),
        "the start-up line lists the fused stages"
    );
    assert!(logs.contains("processed in process (fused)"));
    assert!(logs.contains("skipped: handled in process by the stage that wrote it"));
    assert!(
        logs.contains("repeat of an event already handled: dropped")
            && logs.contains(original.ce_id())
    );

    // After the run: every order reached each of its deliveries exactly once.
    let expected_once = |keys: Vec<String>| keys.into_iter().map(|k| (k, 1)).collect();
    let by_order: BTreeMap<String, usize> = expected_once(ids.clone());
    let by_kind: BTreeMap<String, usize> = expected_once(
        ids.iter()
            .flat_map(|id| KINDS.map(|k| format!("{id}/{k}")))
            .collect(),
    );
    for (topic, reader, handled_by) in [
        ("OrderReceived", "order", "inventory"),
        ("OrderConfirmed", "order", "warehouse"),
        ("OrderPickedAndPacked", "order", "shipper"),
        ("Notification", "kind", "notification"),
        ("NotificationDelivered", "kind", ""),
    ] {
        let records = read_to_end(&pipeline.topic(topic), SETTLE).await;
        let ours: Vec<&Record> = records
            .iter()
            .filter(|r| r.ce_id() != original.ce_id() || r.headers.contains_key(HANDLED_BY))
            .collect();
        let counts = if reader == "order" {
            count_by(ours.iter().copied(), |r| field(r, "order_id"))
        } else {
            count_by(ours.iter().copied(), order_and_kind)
        };
        let expected = if reader == "order" {
            &by_order
        } else {
            &by_kind
        };
        assert_eq!(&counts, expected, "{topic}: exactly one record per order");
        if !handled_by.is_empty() {
            for record in &ours {
                assert_eq!(
                    record.headers.get(HANDLED_BY).map(String::as_str),
                    Some(handled_by),
                    "{topic}: handled in process by {handled_by}"
                );
            }
        }
    }
    let dead = read_to_end(&pipeline.topic("DeadLetterQueue"), SETTLE).await;
    assert!(dead.is_empty(), "nothing dead-lettered: {dead:#?}");
}

/// A pipeline of two test stages, `a` (identity: In → Mid) and `b` (faulty: Mid → Out), that
/// `a`'s worker runs in process, both in `mode`.
fn pass_then_faulty(mode: &'static str) -> TestPipeline {
    TestPipeline::new(|config| {
        keep_stages(config, &[]);
        let input = add_topic(config, "In", 3);
        let middle = add_topic(config, "Mid", 3);
        let output = add_topic(config, "Out", 3);
        let stage = |name: &str, plugin: &str, from: &str, to: &str| -> toml::Table {
            let mut stage = toml::Table::new();
            stage.insert("name".into(), name.into());
            stage.insert(
                "plugin".into(),
                component(plugin).display().to_string().into(),
            );
            stage.insert("input".into(), from.into());
            let mut outputs = toml::Table::new();
            outputs.insert("out".into(), to.into());
            stage.insert("outputs".into(), outputs.into());
            let mut retry = toml::Table::new();
            retry.insert("initial_delay".into(), "50ms".into());
            stage.insert("retry".into(), retry.into());
            stage.insert("mode".into(), mode.into());
            stage
        };
        add_stage(config, stage("a", "identity", &input, &middle));
        add_stage(config, stage("b", "faulty", &middle, &output));
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fused_stage_that_does_not_simply_succeed_is_left_to_its_own_worker() {
    let mut pipeline = pass_then_faulty("exactly_once");
    pipeline.start();
    let input = pipeline.topic("In");
    for (n, fault) in [
        (1, None),
        (2, Some("retry-once")),
        (3, Some("reject")),
        (4, Some("trap")),
    ] {
        let mut payload = serde_json::json!({ "n": n });
        if let Some(fault) = fault {
            payload["fault"] = fault.into();
        }
        produce_raw(
            &input,
            &format!("key-{n}"),
            payload.to_string().as_bytes(),
            &[("ce_id", &format!("in-{n}")), ("ce_type", "In")],
        )
        .await;
    }
    let output = pipeline.topic("Out");
    wait_for_records(&output, "n = 1 and 2 through b", TIMEOUT, |records| {
        let seen: BTreeSet<u64> = records
            .iter()
            .filter_map(|r| r.value["n"].as_u64())
            .collect();
        seen.contains(&1) && seen.contains(&2)
    })
    .await;
    let dead_topic = pipeline.topic("DeadLetterQueue");
    wait_for_records(&dead_topic, "two dead letters of b", TIMEOUT, |records| {
        records.len() >= 2
    })
    .await;
    let status = pipeline.stop("TERM");
    assert!(status.success(), "the host did not stop cleanly: {status}");

    let middle = read_to_end(&pipeline.topic("Mid"), SETTLE).await;
    let handled: BTreeMap<u64, Option<String>> = middle
        .iter()
        .map(|r| {
            (
                r.value["n"].as_u64().unwrap(),
                r.headers.get(HANDLED_BY).cloned(),
            )
        })
        .collect();
    assert_eq!(
        handled,
        BTreeMap::from([(1, Some("b".to_string())), (2, None), (3, None), (4, None)]),
        "only the record b simply succeeded on in process carries the header"
    );
    let out = read_to_end(&output, SETTLE).await;
    let mut through: Vec<u64> = out.iter().filter_map(|r| r.value["n"].as_u64()).collect();
    through.sort_unstable();
    assert_eq!(through, [1, 2], "each once: {out:#?}");
    let dead = read_to_end(&dead_topic, SETTLE).await;
    assert_eq!(dead.len(), 2, "{dead:#?}");
    for letter in &dead {
        assert_eq!(letter.value["stage"], "b", "b's own worker dead-letters");
        assert_eq!(letter.value["source_topic"], pipeline.topic("Mid").as_str());
        assert!(
            letter.value["offset"].as_i64().unwrap() >= 0,
            "a real offset"
        );
    }
    let logs = pipeline.logs();
    assert!(logs.contains("fused call did not succeed"));
    assert!(
        logs.contains("plugin asked for a retry; pausing the partition"),
        "b's own worker retried n = 2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_swap_of_a_fused_stage_takes_effect_for_in_process_calls() {
    let mut pipeline = TestPipeline::new(|config| {
        let blue = component("warehouse_blue").display().to_string();
        stage_mut(config, "warehouse").insert("plugin".into(), blue.into());
    });
    pipeline.start();
    let before = post_orders(&pipeline, "blue", 2).await;
    wait_delivered(&pipeline, &before).await;

    let green_bytes = std::fs::read(component("warehouse_green")).unwrap();
    let green = content_version(&green_bytes);
    let response = pipeline
        .admin_http()
        .put(pipeline.admin_url("/plugins/warehouse"))
        .body(green_bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        200,
        "{:?}",
        response.text().await
    );
    let after = post_orders(&pipeline, "green", 2).await;
    wait_delivered(&pipeline, &after).await;
    let status = pipeline.stop("TERM");
    assert!(status.success(), "the host did not stop cleanly: {status}");

    let confirmed = read_to_end(&pipeline.topic("OrderConfirmed"), SETTLE).await;
    assert!(
        confirmed
            .iter()
            .all(|r| r.headers.get(HANDLED_BY).map(String::as_str) == Some("warehouse")),
        "every order was packed in process"
    );
    let packed = read_to_end(&pipeline.topic("OrderPickedAndPacked"), SETTLE).await;
    assert_eq!(packed.len(), 4, "{packed:#?}");
    for record in &packed {
        let stamp = if field(record, "order_id").starts_with("green") {
            "green"
        } else {
            "blue"
        };
        assert_eq!(record.value["stamp"], stamp, "{record:#?}");
        if stamp == "green" {
            assert_eq!(record.headers.get("ce_pluginversion"), Some(&green));
        }
    }
    let logs = pipeline.logs();
    assert!(
        logs.contains("worker switched plugin version"),
        "the in-process instance switched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_go_where_librdkafkas_default_partitioner_puts_them() {
    let topic = format!(
        "t{}-placement",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let kafka = KafkaClients::plain(&brokers());
    ensure_compacted(&kafka, &topic, 7, Default::default(), None)
        .await
        .unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let partitioner = Partitioner::default();
    let mut keys: Vec<String> = (0..300).map(|n| format!("order-{n}")).collect();
    keys.extend(
        [
            "ü-unicode-κλειδί",
            "x",
            "a much longer key with spaces and / slashes",
        ]
        .map(String::from),
    );
    let mut wrong = Vec::new();
    for key in &keys {
        let placed = loop {
            let sent = producer
                .send(
                    FutureRecord::to(&topic).key(key).payload("{}"),
                    Timeout::After(Duration::from_secs(30)),
                )
                .await;
            match sent {
                Ok(delivery) => break delivery.partition,
                // The new topic's leaders may not be known for a moment.
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        let ours = partitioner.partition(Some(key), "unused", 7);
        if placed != ours {
            wrong.push((key.clone(), placed, ours));
        }
    }
    assert!(wrong.is_empty(), "(key, librdkafka, host): {wrong:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_an_outside_repeat_of_an_id_handled_in_process_is_dropped() {
    let mut pipeline = pass_then_faulty("at_least_once");
    pipeline.start();
    produce_raw(
        &pipeline.topic("In"),
        "key-1",
        br#"{"n":1}"#,
        &[("ce_id", "in-1"), ("ce_type", "In")],
    )
    .await;
    let middle = pipeline.topic("Mid");
    let written = wait_for_records(&middle, "a's output", TIMEOUT, |records| {
        !records.is_empty()
    })
    .await;
    let original = written[0].clone();
    assert_eq!(
        original.headers.get(HANDLED_BY).map(String::as_str),
        Some("b"),
        "handled in process: {original:#?}"
    );
    let output = pipeline.topic("Out");
    wait_for_records(&output, "b's output", TIMEOUT, |records| {
        !records.is_empty()
    })
    .await;
    // a's batch is done once its input offset is committed: its outputs were acknowledged and
    // the ids handled in process were marked processed under b's name before that.
    let (input, group) = (pipeline.topic("In"), format!("{}a", pipeline.prefix));
    common::wait_until("a's input offset committed", TIMEOUT, || {
        let (input, group) = (input.clone(), group.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                use rdkafka::consumer::{BaseConsumer, Consumer};
                let consumer: BaseConsumer = ClientConfig::new()
                    .set("bootstrap.servers", brokers())
                    .set("group.id", &group)
                    .create()
                    .unwrap();
                let mut wanted = rdkafka::TopicPartitionList::new();
                for partition in 0..3 {
                    wanted.add_partition(&input, partition);
                }
                consumer
                    .committed_offsets(wanted, Duration::from_secs(5))
                    .is_ok_and(|committed| {
                        committed
                            .elements()
                            .iter()
                            .any(|e| matches!(e.offset(), rdkafka::Offset::Offset(n) if n >= 1))
                    })
            })
            .await
            .unwrap()
        }
    })
    .await;
    // The same record from an outside producer, without the header: b's own worker drops it
    // (its id was marked processed under b's name once a's batch was acknowledged).
    let headers: Vec<(&str, &str)> = original
        .headers
        .iter()
        .filter(|(name, _)| name.as_str() != HANDLED_BY)
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    produce_raw(&middle, "key-1", &original.raw, &headers).await;
    wait_for_records(&pipeline.topic("KPIs"), "b's duplicate", TIMEOUT, |kpis| {
        kpi_sum(kpis, "b.duplicates_dropped") >= 1 && kpi_sum(kpis, "b.handled_upstream") >= 1
    })
    .await;
    let status = pipeline.stop("TERM");
    assert!(status.success(), "the host did not stop cleanly: {status}");
    let out = read_to_end(&output, SETTLE).await;
    assert_eq!(out.len(), 1, "b's output once: {out:#?}");
    let kpis = read_to_end(&pipeline.topic("KPIs"), SETTLE).await;
    assert_eq!(
        kpi_sum(&kpis, "b.events_processed"),
        1,
        "counted once, in b's KPIs"
    );
    assert_eq!(kpi_sum(&kpis, "a.events_processed"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_event_of_a_partition_waits_behind_one_the_fused_stage_retries() {
    let mut pipeline = pass_then_faulty("exactly_once");
    pipeline.start();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let input = pipeline.topic("In");
    // One key: n = 1 is retried by b's own worker; n = 2 .. 4 must not overtake it.
    for n in 1..=4 {
        let payload = if n == 1 {
            serde_json::json!({ "n": n, "fault": "retry-once" })
        } else {
            serde_json::json!({ "n": n })
        };
        common::send(
            &producer,
            &input,
            "same-key",
            payload.to_string().as_bytes(),
            &[("ce_id", &format!("ordered-{n}")), ("ce_type", "In")],
        )
        .await;
    }
    let output = pipeline.topic("Out");
    wait_for_records(&output, "all four through b", TIMEOUT, |records| {
        records.len() >= 4
    })
    .await;
    let status = pipeline.stop("TERM");
    assert!(status.success(), "the host did not stop cleanly: {status}");
    let mut out = read_to_end(&output, SETTLE).await;
    out.sort_by_key(|r| (r.partition, r.offset));
    let order: Vec<u64> = out.iter().filter_map(|r| r.value["n"].as_u64()).collect();
    assert_eq!(order, [1, 2, 3, 4], "b's outputs keep the key's order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateless_stage_whose_plugin_writes_state_dead_letters_the_event_naming_the_fix() {
    // The stock stage writes the stock it holds: declared stateless, it has nowhere to write.
    let mut pipeline = TestPipeline::new(|config| {
        stage_mut(config, "stock").insert("stateless".into(), true.into());
    });
    pipeline.start();
    let (status, answer) = pipeline
        .post_order(&order("stateless-1", "prod-789", 1))
        .await;
    assert_eq!(status, 202, "{answer}");
    let dead = wait_for_records(
        &pipeline.topic("DeadLetterQueue"),
        "the stock command's dead letter",
        TIMEOUT,
        |letters| letters.iter().any(|l| l.value["stage"] == "stock"),
    )
    .await;
    let letter = dead.iter().find(|l| l.value["stage"] == "stock").unwrap();
    let error = letter.value["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("wrote state key") && error.contains("stateless = true"),
        "the dead letter names the write and the fix: {error}"
    );
    let stock = read_to_end(&pipeline.topic("InventoryLedger"), SETTLE).await;
    assert!(stock.is_empty(), "nothing was reserved: {stock:#?}");
}
