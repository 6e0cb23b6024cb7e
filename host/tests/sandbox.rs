//! Broken plugins against a real broker: an endless loop, a memory bomb, a trap, malformed
//! output, an unknown output name, a rejection and a retry that never succeeds each put that
//! event (and only that event) in the dead-letter queue with its reason, while good events
//! keep flowing and the host stays up with bounded memory. A retried event keeps its place
//! among the events of its key without holding up the other partitions.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{
    Record, SETTLE, TestPipeline, add_stage, add_topic, count_by, field, keep_stages, read_to_end,
    wait_for_records,
};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

const TIMEOUT: Duration = Duration::from_secs(90);

fn stage(name: &str, input: &str, output: &str, limits: toml::Table) -> toml::Table {
    let mut stage = common::faulty_stage(name, input, output);
    stage.insert("limits".into(), limits.into());
    let mut retry = toml::Table::new();
    retry.insert("max_attempts".into(), 3.into());
    retry.insert("initial_delay".into(), "1s".into());
    retry.insert("max_delay".into(), "2s".into());
    stage.insert("retry".into(), retry.into());
    stage
}

async fn produce(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    key: &str,
    id: &str,
    payload: &str,
) {
    let headers = common::headers_of(&[("ce_id", id)]);
    producer
        .send(
            FutureRecord::to(topic)
                .partition(partition)
                .key(key)
                .payload(payload)
                .headers(headers),
            Timeout::After(Duration::from_secs(10)),
        )
        .await
        .unwrap();
}

fn by_event(records: &[Record]) -> BTreeMap<String, Vec<&Record>> {
    let mut map: BTreeMap<String, Vec<&Record>> = BTreeMap::new();
    for record in records {
        let id = record.value["event_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        map.entry(id).or_default().push(record);
    }
    map
}

/// The names (`n`) of the events a stage passed through to `records`.
fn names(records: &[Record]) -> Vec<String> {
    records.iter().map(|r| field(r, "n")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_broken_event_is_dead_lettered_with_its_reason_and_good_events_flow() {
    let mut topics: [String; 6] = Default::default();
    let mut pipeline = TestPipeline::new(|config| {
        keep_stages(config, &[]);
        topics[0] = add_topic(config, "Faults", 3);
        topics[1] = add_topic(config, "FaultsOut", 3);
        topics[2] = add_topic(config, "FuelFaults", 1);
        topics[3] = add_topic(config, "FuelOut", 1);
        topics[4] = add_topic(config, "Held", 3);
        topics[5] = add_topic(config, "HeldOut", 3);
        let mut limits = toml::Table::new();
        limits.insert("max_event_time".into(), "200ms".into());
        limits.insert("max_memory_bytes".into(), (32 * 1024 * 1024).into());
        let mut fuel_limits = toml::Table::new();
        fuel_limits.insert("max_event_time".into(), "30s".into());
        fuel_limits.insert("fuel".into(), 5_000_000.into());
        add_stage(config, stage("faulty", &topics[0], &topics[1], limits));
        add_stage(config, stage("fuel", &topics[2], &topics[3], fuel_limits));
        // A retry that waits an hour: while it waits, its partition is held and the others
        // go on; no clock decides the outcome.
        let mut held = stage("held", &topics[4], &topics[5], toml::Table::new());
        let retry = held["retry"].as_table_mut().unwrap();
        retry.insert("initial_delay".into(), "1h".into());
        retry.insert("max_delay".into(), "1h".into());
        add_stage(config, held);
    });
    let [faults, faults_out, fuel_faults, fuel_out, held, held_out] = topics;
    pipeline.start();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", common::brokers())
        .create()
        .unwrap();

    // Partition 0: a retry that succeeds on its second attempt, then two good events of the
    // same key, which must come out after it.
    produce(
        &producer,
        &faults,
        0,
        "k-order",
        "r1",
        r#"{"fault":"retry-once","n":"r1"}"#,
    )
    .await;
    produce(&producer, &faults, 0, "k-order", "g1", r#"{"n":"g1"}"#).await;
    produce(&producer, &faults, 0, "k-order", "g2", r#"{"n":"g2"}"#).await;
    // Partition 1: every fault, then a good event.
    let broken = [
        ("loop", "timeout"),
        ("memory", "memory limit"),
        ("trap", "trap:"),
        ("malformed", "invalid plugin output"),
        ("unknown-output", "invalid plugin output"),
        ("reject", "rejected: faulty plugin rejected the event"),
        ("retry", "retry: faulty plugin asks for a retry"),
    ];
    for (fault, _) in broken {
        produce(
            &producer,
            &faults,
            1,
            "k-broken",
            fault,
            &format!(r#"{{"fault":"{fault}"}}"#),
        )
        .await;
    }
    produce(&producer, &faults, 1, "k-broken", "g3", r#"{"n":"g3"}"#).await;
    // Partition 2: good events of other keys.
    for i in 4..14 {
        produce(
            &producer,
            &faults,
            2,
            &format!("k-{i}"),
            &format!("g{i}"),
            &format!(r#"{{"n":"g{i}"}}"#),
        )
        .await;
    }
    // The fuel-limited stage: an endless loop ends when the fuel is used up.
    produce(
        &producer,
        &fuel_faults,
        0,
        "k-fuel",
        "fuel-loop",
        r#"{"fault":"loop"}"#,
    )
    .await;
    produce(
        &producer,
        &fuel_faults,
        0,
        "k-fuel",
        "fuel-good",
        r#"{"n":"fuel-good"}"#,
    )
    .await;

    // Held: partition 0 starts with a retry (due again in an hour) and a good event of the
    // same key behind it; partitions 1 and 2 hold good events of other keys.
    produce(
        &producer,
        &held,
        0,
        "k-held",
        "h-retry",
        r#"{"fault":"retry-once","n":"h-retry"}"#,
    )
    .await;
    produce(
        &producer,
        &held,
        0,
        "k-held",
        "h-behind",
        r#"{"n":"h-behind"}"#,
    )
    .await;
    let elsewhere: Vec<String> = (1..=6).map(|i| format!("h-{i}")).collect();
    for (i, name) in elsewhere.iter().enumerate() {
        let payload = format!(r#"{{"n":"{name}"}}"#);
        let partition = 1 + (i % 2) as i32;
        produce(&producer, &held, partition, name, name, &payload).await;
    }

    // Wait for every expected outcome, then stop the host and count exactly.
    let letter_ids: BTreeSet<String> = broken
        .iter()
        .map(|(fault, _)| fault.to_string())
        .chain(["fuel-loop".to_string()])
        .collect();
    let dead_topic = pipeline.topic("DeadLetterQueue");
    wait_for_records(
        &dead_topic,
        "a dead letter per broken event",
        TIMEOUT,
        |r| {
            let ids: BTreeSet<String> = r.iter().map(|l| field(l, "event_id")).collect();
            letter_ids.is_subset(&ids)
        },
    )
    .await;
    wait_for_records(&faults_out, "the 14 good events", TIMEOUT, |r| {
        names(r).into_iter().collect::<BTreeSet<_>>().len() >= 14
    })
    .await;
    wait_for_records(
        &fuel_out,
        "the good event after the fuel trap",
        TIMEOUT,
        |r| !r.is_empty(),
    )
    .await;
    let held_now = wait_for_records(
        &held_out,
        "the held stage's other partitions",
        TIMEOUT,
        |r| {
            let seen: BTreeSet<String> = names(r).into_iter().collect();
            elsewhere.iter().all(|n| seen.contains(n))
        },
    )
    .await;
    // The other partitions went on while the retry waited, and the retry held back its key.
    let held_names = names(&held_now);
    assert!(
        !held_names.iter().any(|n| n == "h-retry" || n == "h-behind"),
        "the retried event and the one behind it wait for the retry: {held_names:?}"
    );

    let pid = pipeline.pid().unwrap();
    let rss = common::peak_rss_kib(pid);
    println!("host peak RSS after the broken plugins: {} MiB", rss / 1024);
    assert!(
        rss < 1024 * 1024,
        "peak RSS {rss} KiB: memory is not bounded"
    );
    let status = pipeline.stop("TERM");
    assert!(
        status.success(),
        "the host survived and stopped cleanly: {status}"
    );

    let dead = read_to_end(&dead_topic, SETTLE).await;
    let letters = by_event(&dead);
    for (fault, reason) in broken {
        let found = letters
            .get(fault)
            .unwrap_or_else(|| panic!("no dead letter for {fault}: {dead:#?}"));
        assert_eq!(found.len(), 1, "{fault} dead-lettered once");
        let letter = &found[0].value;
        let error = letter["error"].as_str().unwrap();
        assert!(error.starts_with(reason), "{fault}: {error}");
        assert_eq!(letter["stage"], "faulty");
        assert!(
            letter["plugin_version"]
                .as_str()
                .unwrap()
                .starts_with("sha256:")
        );
        let attempts = if fault == "retry" { 3 } else { 1 };
        assert_eq!(letter["attempts"], attempts, "{fault}: {letter}");
    }
    assert!(
        letters["malformed"][0].value["error"]
            .as_str()
            .unwrap()
            .contains("not JSON")
    );
    assert!(
        letters["unknown-output"][0].value["error"]
            .as_str()
            .unwrap()
            .contains("'nowhere'")
    );
    let fuel_letter = letters
        .get("fuel-loop")
        .expect("fuel-limited loop dead-lettered");
    assert_eq!(fuel_letter.len(), 1, "fuel-loop dead-lettered once");
    assert!(
        fuel_letter[0].value["error"]
            .as_str()
            .unwrap()
            .contains("fuel"),
        "{}",
        fuel_letter[0].value
    );
    assert_eq!(
        dead.len(),
        broken.len() + 1,
        "nothing else was dead-lettered: {dead:#?}"
    );

    // Good events: each exactly once; the retried one first among its key.
    let out = read_to_end(&faults_out, SETTLE).await;
    let counts = count_by(&out, |r| field(r, "n"));
    let mut expected: BTreeMap<String, usize> = ["r1", "g1", "g2", "g3"]
        .into_iter()
        .map(|n| (n.to_string(), 1))
        .collect();
    expected.extend((4..14).map(|i| (format!("g{i}"), 1)));
    assert_eq!(counts, expected, "every good event exactly once");
    let order_of_key: Vec<String> = out
        .iter()
        .filter(|r| r.key.as_deref() == Some("k-order"))
        .map(|r| field(r, "n"))
        .collect();
    assert_eq!(order_of_key, ["r1", "g1", "g2"], "the retry kept its place");
    let fuel = read_to_end(&fuel_out, SETTLE).await;
    assert_eq!(
        names(&fuel),
        ["fuel-good"],
        "the fuel-limited stage goes on after a fuel trap, once"
    );
    let held_out = read_to_end(&held_out, SETTLE).await;
    let mut held_names = names(&held_out);
    held_names.sort();
    assert_eq!(
        held_names, elsewhere,
        "the held stage: the other partitions once each, the held key still waiting"
    );
}

/// Broker-time throughput of the records of `topic` whose order id starts with `prefix`.
fn throughput(records: &[Record], prefix: &str) -> (usize, f64) {
    let times: Vec<i64> = records
        .iter()
        .filter(|r| {
            r.value["order_id"]
                .as_str()
                .is_some_and(|id| id.starts_with(prefix))
        })
        .map(|r| r.timestamp_ms)
        .collect();
    let first = times.iter().min().copied().unwrap_or(0);
    let last = times.iter().max().copied().unwrap_or(0);
    let seconds = ((last - first).max(1)) as f64 / 1000.0;
    (times.len(), times.len() as f64 / seconds)
}

async fn fill_confirmed(producer: &FutureProducer, topic: &str, prefix: &str, count: usize) {
    for i in 0..count {
        let id = format!("{prefix}-{i}");
        let mut order: serde_json::Value =
            serde_json::from_str(&common::order(&id, "prod-789", 1)).unwrap();
        order["status"] = "confirmed".into();
        let ce_id = format!("c-{id}");
        produce(
            producer,
            topic,
            (i % 3) as i32,
            &id,
            &ce_id,
            &order.to_string(),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_stage_keeps_flowing_while_a_plugin_loops_and_bombs_memory() {
    let count = 1500;
    let mut faults = String::new();
    let mut pipeline = TestPipeline::new(|config| {
        keep_stages(config, &["warehouse"]);
        faults = add_topic(config, "Faults", 1);
        let out = add_topic(config, "FaultsOut", 1);
        let mut limits = toml::Table::new();
        limits.insert("max_event_time".into(), "200ms".into());
        limits.insert("max_memory_bytes".into(), (64 * 1024 * 1024).into());
        add_stage(config, stage("faulty", &faults, &out, limits));
    });
    pipeline.start();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", common::brokers())
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let input = pipeline.topic("OrderConfirmed");
    let packed_topic = pipeline.topic("OrderPickedAndPacked");

    // Each phase drains a backlog written while the host is stopped, so the figures measure
    // the stage, not how fast this test can write while the host competes for the CPUs.
    pipeline.stop("TERM");
    fill_confirmed(&producer, &input, "calm", count).await;
    pipeline.start();
    wait_for_records(
        &packed_topic,
        "every calm order packed",
        Duration::from_secs(120),
        packed_all(count, "calm"),
    )
    .await;
    // The same load again while the other stage traps on 10 endless loops and 10 memory bombs.
    pipeline.stop("TERM");
    for i in 0..10 {
        produce(
            &producer,
            &faults,
            0,
            "k",
            &format!("loop-{i}"),
            r#"{"fault":"loop"}"#,
        )
        .await;
        produce(
            &producer,
            &faults,
            0,
            "k",
            &format!("memory-{i}"),
            r#"{"fault":"memory"}"#,
        )
        .await;
    }
    fill_confirmed(&producer, &input, "stormy", count).await;
    pipeline.start();
    wait_for_records(
        &packed_topic,
        "every stormy order packed",
        Duration::from_secs(120),
        packed_all(count, "stormy"),
    )
    .await;
    let dead_topic = pipeline.topic("DeadLetterQueue");
    wait_for_records(&dead_topic, "20 dead letters", TIMEOUT, |r| r.len() >= 20).await;
    let rss = common::peak_rss_kib(pipeline.pid().unwrap());
    assert!(
        rss < 1024 * 1024,
        "peak RSS {rss} KiB: memory is not bounded"
    );
    let status = pipeline.stop("TERM");
    assert!(status.success(), "the host stopped cleanly: {status}");

    let all = read_to_end(&packed_topic, SETTLE).await;
    let dead = read_to_end(&dead_topic, SETTLE).await;
    let (_, calm_rate) = throughput(&all, "calm");
    let (_, stormy_rate) = throughput(&all, "stormy");
    println!(
        "warehouse throughput: {calm_rate:.0} orders/s alone, {stormy_rate:.0} orders/s while faulty looped and bombed memory ({:.2}x); {} dead letters; host peak RSS {} MiB",
        stormy_rate / calm_rate,
        dead.len(),
        rss / 1024
    );
    let expected: BTreeMap<String, usize> = ["calm", "stormy"]
        .iter()
        .flat_map(|prefix| (0..count).map(move |i| (format!("{prefix}-{i}"), 1)))
        .collect();
    assert_eq!(
        count_by(&all, |r| field(r, "order_id")),
        expected,
        "every order packed exactly once, also while the other stage misbehaved"
    );
    let letters = count_by(&dead, |r| field(r, "event_id"));
    let expected: BTreeMap<String, usize> = (0..10)
        .flat_map(|i| [(format!("loop-{i}"), 1), (format!("memory-{i}"), 1)])
        .collect();
    assert_eq!(letters, expected, "each broken event dead-lettered once");
    for letter in &dead {
        let error = field(letter, "error");
        let want = if field(letter, "event_id").starts_with("loop") {
            "timeout"
        } else {
            "memory limit"
        };
        assert!(error.starts_with(want), "{error}");
    }
}

/// Whether `count` distinct orders `<prefix>-<i>` are among the records.
fn packed_all(count: usize, prefix: &'static str) -> impl FnMut(&[Record]) -> bool {
    move |records| {
        records
            .iter()
            .map(|r| field(r, "order_id"))
            .filter(|id| id.starts_with(&format!("{prefix}-")))
            .collect::<BTreeSet<_>>()
            .len()
            >= count
    }
}
