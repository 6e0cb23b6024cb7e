//! A stage never stalls silently: against the real broker, each way a stage used to stop
//! working while orders kept being accepted is made to happen, and afterwards every accepted
//! order has exactly one outcome, the other partitions kept flowing, and readiness and the log
//! said what was wrong.
//!
//! - a consumer that silently stops consuming (forced with `STAGEHOST_FAULT_SILENT_PAUSE`, the
//!   look of a member that never got back into its group after a broker outage): the stage's
//!   watchdog finds it stalled, it is unready with the reason and rebuilt;
//! - a schema-valid `OrderReceived` of about 1 MB whose outputs no topic takes: that one input is
//!   dead-lettered (`too large`), the stage goes on;
//! - Notifications with a 100 KB `ce_time` header (both readers dead-letter them), and one
//!   whose ~1 MB message the read model would copy into a status document no topic takes
//!   (dead-lettered `too large`): the read model and the notification stage go on;
//! - a key whose events all run into `max_event_time`: its partition cools down between them
//!   and the other partitions of the stage go on;
//! - the KPIs topic deleted under load: processing goes on (KPIs are published outside the
//!   stages' transactions), the log reports it, the host recreates it and KPIs flow again;
//! - two hosts started with the same instance id: `/readyz` and the log name it.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::flow::{
    ReadyWatch, SETTLE, assert_exactly_once, outcomes, post_orders, stocked, wait_for_outcomes,
};
use common::{TestPipeline, add_stage, add_topic, brokers, keep_stages, wait_until};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

/// Sets `key` on every stage.
fn on_every_stage(config: &mut toml::Table, key: &str, value: toml::Value) {
    for stage in config["stages"].as_array_mut().unwrap() {
        stage
            .as_table_mut()
            .unwrap()
            .insert(key.into(), value.clone());
    }
}

/// A producer that may write records of up to 2 MB.
fn big_producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("message.max.bytes", "2000000")
        .create()
        .unwrap()
}

async fn produce(
    producer: &FutureProducer,
    topic: &str,
    partition: Option<i32>,
    key: &str,
    payload: &str,
    headers: &[(&str, &str)],
) {
    let mut record = FutureRecord::to(topic)
        .key(key)
        .payload(payload)
        .headers(common::headers_of(headers));
    if let Some(partition) = partition {
        record = record.partition(partition);
    }
    producer
        .send(record, Timeout::After(Duration::from_secs(30)))
        .await
        .unwrap();
}

/// The dead letters of `stage` whose error contains `reason`.
async fn dead_letters(host: &TestPipeline, stage: &str, reason: &str) -> usize {
    common::read_to_end(&host.topic("DeadLetterQueue"), Duration::from_secs(60))
        .await
        .iter()
        .filter(|letter| letter.value["stage"] == stage)
        .filter(|letter| {
            letter.value["error"]
                .as_str()
                .is_some_and(|error| error.contains(reason))
        })
        .count()
}

/// Asserts that no stage of `host` failed (and so was rebuilt) during the run.
fn assert_no_stage_failed(name: &str, host: &TestPipeline) {
    let logs = host.logs();
    let failures: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("stage failed; restarting it"))
        .collect();
    assert!(
        failures.is_empty(),
        "{name}: stages failed and were rebuilt:\n{}",
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stage_whose_consumer_silently_stops_is_found_stalled_and_rebuilt() {
    let mut host = TestPipeline::new(|config| {
        stocked(config);
        on_every_stage(config, "stall_timeout", "4s".into());
    });
    host.env
        .push(("STAGEHOST_FAULT_SILENT_PAUSE".into(), "inventory:20".into()));
    host.start();
    let watch = ReadyWatch::start(&host.http);
    let load = post_orders("silent".into(), 120, 20.0, vec![host.http.clone()]).await;
    let heal = wait_for_outcomes(&brokers(), &[&host], &load.accepted).await;
    let (unready, problems) = watch.finish();
    assert!(host.stop("TERM").success(), "{}", host.logs());
    let logs = host.logs();
    assert!(
        logs.contains("pausing the stage's partitions silently"),
        "the fault was never injected:\n{logs}"
    );
    let stalled: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("stage stalled") && line.contains("inventory"))
        .collect();
    assert!(
        stalled
            .iter()
            .any(|line| line.contains("made no progress") && line.contains("waiting")),
        "the watchdog did not say why inventory stalled:\n{logs}"
    );
    assert!(
        problems.contains("stage:inventory"),
        "/readyz never named the stalled stage (unready {unready} times: {problems:?})"
    );
    let outcomes = outcomes(&brokers(), &host).await;
    assert_exactly_once("silent-pause", &load.accepted, &outcomes, heal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_whose_outputs_no_topic_takes_is_dead_lettered_and_the_stage_goes_on() {
    let mut host = TestPipeline::new(stocked);
    host.start();
    let load = tokio::spawn(post_orders(
        "big".into(),
        200,
        20.0,
        vec![host.http.clone()],
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Schema-valid, just under what the topic takes; the inventory stage's `pending` result
    // carries the whole order and so is larger than any topic takes.
    let mut order: serde_json::Value =
        serde_json::from_str(&common::order("big-one", "fp-1", 1)).unwrap();
    order["customer_id"] = "c".repeat(999_800).into();
    order["status"] = "received".into();
    let body = order.to_string();
    produce(
        &big_producer(),
        &host.topic("OrderReceived"),
        None,
        "big-one",
        &body,
        &[("ce_id", "big-one"), ("ce_type", "OrderReceived")],
    )
    .await;
    let load = load.await.unwrap();
    let heal = wait_for_outcomes(&brokers(), &[&host], &load.accepted).await;
    wait_until("the big order's dead letter", SETTLE, || async {
        dead_letters(&host, "inventory", "too large").await == 1
    })
    .await;
    assert!(host.stop("TERM").success(), "{}", host.logs());
    assert_no_stage_failed("big-output", &host);
    let outcomes = outcomes(&brokers(), &host).await;
    assert_exactly_once("big-output", &load.accepted, &outcomes, heal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_notifications_are_dead_lettered_and_the_read_model_goes_on() {
    let mut host = TestPipeline::new(stocked);
    host.start();
    let producer = big_producer();
    let topic = host.topic("Notification");
    // A rejection: order-status copies its message into the status document (as `reason`).
    let notification = |order: &str, message: &str| {
        serde_json::json!({
            "order_id": order,
            "customer_id": "cust-456",
            "kind": "order_rejected",
            "message": message,
            "short_products": ["fp-1"],
        })
        .to_string()
    };
    // Twelve notifications of one order with a 100 KB ce_time (order-status copied it into a
    // timeline that grew without bound), and one of about 1 MB.
    let huge_time = "2".repeat(100_000);
    for n in 0..12 {
        let id = format!("hostile-time-{n}");
        produce(
            &producer,
            &topic,
            None,
            "hostile",
            &notification("hostile", "hello"),
            &[("ce_id", &id), ("ce_time", &huge_time)],
        )
        .await;
    }
    produce(
        &producer,
        &topic,
        None,
        "hostile",
        &notification("hostile", &"m".repeat(1_010_000)),
        &[("ce_id", "hostile-huge")],
    )
    .await;
    // Real orders after them flow to the end and the read model shows them shipped.
    let load = post_orders("after".into(), 30, 20.0, vec![host.http.clone()]).await;
    for id in &load.accepted {
        let path = format!("/orders/{id}");
        wait_until(
            &format!("{id} shipped in the read model"),
            SETTLE,
            || async {
                let (status, body) = host.get(&path).await;
                status == 200 && body["status"] == "shipped"
            },
        )
        .await;
    }
    for stage in ["order-status", "notification"] {
        wait_until(&format!("{stage}'s dead letters"), SETTLE, || async {
            dead_letters(&host, stage, "ce_time header is 100000 bytes").await == 12
        })
        .await;
    }
    wait_until("order-status's too-large letter", SETTLE, || async {
        dead_letters(&host, "order-status", "too large").await == 1
    })
    .await;
    assert!(host.stop("TERM").success(), "{}", host.logs());
    assert_no_stage_failed("hostile-notifications", &host);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_keeps_timing_out_does_not_hold_up_the_other_partitions() {
    let mut topics: [String; 2] = Default::default();
    let mut host = TestPipeline::new(|config| {
        keep_stages(config, &[]);
        topics[0] = add_topic(config, "Slow", 3);
        topics[1] = add_topic(config, "SlowOut", 3);
        let mut stage = common::faulty_stage("slow", &topics[0], &topics[1]);
        let mut limits = toml::Table::new();
        limits.insert("max_event_time".into(), "300ms".into());
        stage.insert("limits".into(), limits.into());
        let mut retry = toml::Table::new();
        retry.insert("initial_delay".into(), "1s".into());
        retry.insert("max_delay".into(), "2s".into());
        stage.insert("retry".into(), retry.into());
        add_stage(config, stage);
    });
    let [input, output] = topics;
    host.start();
    let producer = big_producer();
    const SLOW: usize = 20;
    const GOOD: usize = 30;
    for n in 0..SLOW {
        let id = format!("slow-{n}");
        produce(
            &producer,
            &input,
            Some(0),
            "slow-key",
            r#"{"fault":"loop"}"#,
            &[("ce_id", &id)],
        )
        .await;
    }
    for n in 0..GOOD {
        let id = format!("good-{n}");
        let payload = format!(r#"{{"n":"{id}"}}"#);
        produce(
            &producer,
            &input,
            Some(1 + (n % 2) as i32),
            &id,
            &payload,
            &[("ce_id", &id)],
        )
        .await;
    }
    let started = Instant::now();
    common::wait_for_records(&output, "the good events", SETTLE, |records| {
        records.len() >= GOOD
    })
    .await;
    let good_after = started.elapsed();
    let timed_out_by_then = dead_letters(&host, "slow", "timeout").await;
    eprintln!(
        "slow key: {GOOD} good events out after {:.1}s, when {timed_out_by_then} of {SLOW} slow events had been dead-lettered",
        good_after.as_secs_f64()
    );
    assert!(
        timed_out_by_then < SLOW / 2,
        "the good partitions waited behind the slow key: {timed_out_by_then} of {SLOW} slow events were dead-lettered before the good events were out"
    );
    wait_until("every slow event dead-lettered", SETTLE, || async {
        dead_letters(&host, "slow", "timeout").await == SLOW
    })
    .await;
    assert!(
        host.logs()
            .contains("its partition waits before the next event"),
        "the log does not say the slow partition cools down:\n{}",
        host.logs()
    );
    assert!(host.stop("TERM").success(), "{}", host.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_kpi_topic_never_stops_processing() {
    let mut host = TestPipeline::new(stocked);
    host.start();
    let first = post_orders("kpi-before".into(), 30, 20.0, vec![host.http.clone()]).await;
    wait_for_outcomes(&brokers(), &[&host], &first.accepted).await;
    let kpis = host.topic("KPIs");
    common::delete_topic(&kpis).await;
    let second = post_orders("kpi-after".into(), 150, 20.0, vec![host.http.clone()]).await;
    let heal = wait_for_outcomes(&brokers(), &[&host], &second.accepted).await;
    let logs = host.logs();
    assert!(
        logs.lines()
            .any(|line| line.contains("a declared topic was deleted")
                && line.contains(&kpis)
                && line.contains("the host recreates it")),
        "the log did not report the deleted KPI topic:\n{logs}"
    );
    wait_until("the KPI topic recreated and fed again", SETTLE, || async {
        !common::read_to_end(&kpis, Duration::from_secs(30))
            .await
            .is_empty()
    })
    .await;
    assert!(host.stop("TERM").success(), "{}", host.logs());
    assert_no_stage_failed("deleted-kpis", &host);
    let accepted: BTreeSet<String> = first.accepted.union(&second.accepted).cloned().collect();
    let outcomes = outcomes(&brokers(), &host).await;
    assert_exactly_once("deleted-kpis", &accepted, &outcomes, heal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hosts_with_one_instance_id_are_named_and_nothing_is_lost() {
    let mut first = TestPipeline::new(|config| {
        stocked(config);
        config["state"]
            .as_table_mut()
            .unwrap()
            .insert("instance_id".into(), "twin".into());
    });
    let mut second = first.sibling("twin");
    first.start();
    let load = tokio::spawn(post_orders(
        "twin".into(),
        100,
        20.0,
        vec![first.http.clone()],
    ));
    second.launch();
    let named = |reason: &str| reason.contains("another host with the same instance id (twin)");
    wait_until(
        "readiness naming the duplicate instance id",
        SETTLE,
        || async {
            let mut seen = false;
            for host in [&first, &second] {
                // The second host may not listen yet.
                let Ok(answer) = reqwest::get(format!("http://{}/readyz", host.http)).await else {
                    continue;
                };
                let status = answer.status().as_u16();
                let body: serde_json::Value = answer.json().await.unwrap_or_default();
                if status == 503
                    && body["problems"].as_object().is_some_and(|parts| {
                        parts
                            .values()
                            .any(|p| named(p["reason"].as_str().unwrap_or_default()))
                    })
                {
                    seen = true;
                }
            }
            seen
        },
    )
    .await;
    let load = load.await.unwrap();
    assert!(second.stop("TERM").success(), "{}", second.logs());
    let heal = wait_for_outcomes(&brokers(), &[&first], &load.accepted).await;
    assert!(first.stop("TERM").success(), "{}", first.logs());
    let logs = format!("{}\n{}", first.logs(), second.logs());
    assert!(
        logs.lines()
            .any(|line| line.contains("ERROR") && named(line)),
        "the log never named the duplicate instance id"
    );
    let outcomes = outcomes(&brokers(), &first).await;
    assert_exactly_once("twin", &load.accepted, &outcomes, heal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_added_to_an_input_are_read_without_a_restart() {
    let mut topics: [String; 2] = Default::default();
    let mut host = TestPipeline::new(|config| {
        keep_stages(config, &[]);
        topics[0] = add_topic(config, "Grows", 3);
        topics[1] = add_topic(config, "GrowsOut", 3);
        add_stage(config, common::faulty_stage("pass", &topics[0], &topics[1]));
    });
    let [input, output] = topics;
    host.start();
    let producer = big_producer();
    let record = |n: usize| (format!("grow-{n}"), format!(r#"{{"n":"grow-{n}"}}"#));
    for n in 0..30 {
        let (id, payload) = record(n);
        produce(
            &producer,
            &input,
            Some((n % 3) as i32),
            &id,
            &payload,
            &[("ce_id", &id)],
        )
        .await;
    }
    common::wait_for_records(&output, "the first records", SETTLE, |records| {
        records.len() >= 30
    })
    .await;
    let watch = ReadyWatch::start(&host.http);
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let grown = admin
        .create_partitions(
            &[rdkafka::admin::NewPartitions::new(&input, 6)],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(grown.iter().all(Result::is_ok), "{grown:?}");
    let added = Instant::now();
    // A new producer: the first one's metadata still says 3 partitions.
    let producer = big_producer();
    wait_until("the producer seeing 6 partitions", SETTLE, || async {
        use rdkafka::producer::Producer;
        producer
            .client()
            .fetch_metadata(Some(&input), Duration::from_secs(5))
            .is_ok_and(|m| m.topics()[0].partitions().len() == 6)
    })
    .await;
    for n in 30..60 {
        let (id, payload) = record(n);
        produce(
            &producer,
            &input,
            Some(3 + (n % 3) as i32),
            &id,
            &payload,
            &[("ce_id", &id)],
        )
        .await;
    }
    common::wait_for_records(
        &output,
        "the records of the new partitions",
        SETTLE,
        |records| records.len() >= 60,
    )
    .await;
    let (_, problems) = watch.finish();
    eprintln!(
        "partitions added: the records of the new partitions were read {:.1}s after they were added; readiness named {problems:?}",
        added.elapsed().as_secs_f64()
    );
    assert!(
        problems.contains("unassigned:pass"),
        "readiness never named the unassigned partitions: {problems:?}"
    );
    assert!(host.stop("TERM").success(), "{}", host.logs());
}
