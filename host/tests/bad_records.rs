//! Bad records against a real broker and the shipped pipeline: a value as large as the broker
//! allows and a value that grows sixfold when quoted are dead-lettered in letters that fit,
//! the stage goes on without a restart, and `dlq replay` sends the whole event back (only to a
//! stage that still reads its topic); and a SIGTERM during start-up stops the host cleanly.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    Record, TestPipeline, order, produce_raw, read_to_end, stage_mut, stagehost, wait_until,
};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use sha2::{Digest, Sha256};

/// The bound of a serialized dead letter (`event::dead_letter::DEFAULT_MAX_BYTES`).
const MAX_LETTER_BYTES: usize = 64 * 1024;
const TIMEOUT: Duration = Duration::from_secs(90);
const READ_TIMEOUT: Duration = Duration::from_secs(30);

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The topic's `max.message.bytes` (the broker's default unless the topic overrides it).
async fn max_message_bytes(topic: &str) -> usize {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", common::brokers())
        .create()
        .unwrap();
    let results = admin
        .describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new())
        .await
        .unwrap();
    let resource = results.into_iter().next().unwrap().unwrap();
    resource
        .get("max.message.bytes")
        .and_then(|entry| entry.value.as_deref())
        .and_then(|value| value.parse().ok())
        .unwrap()
}

/// A JSON string of `len` control bytes, raw (not JSON: control characters must be escaped),
/// each escaped as `\u0001` in a dead letter.
fn control_bytes(len: usize) -> Vec<u8> {
    let mut payload = vec![b'"'];
    payload.extend(std::iter::repeat_n(1u8, len));
    payload.push(b'"');
    payload
}

/// The input record written with `key`.
fn by_key<'a>(records: &'a [Record], key: &str) -> &'a Record {
    records
        .iter()
        .find(|r| r.key.as_deref() == Some(key))
        .unwrap_or_else(|| panic!("no record with key {key}"))
}

/// Checks one dead letter against the bad record it stands for.
fn assert_letter(letter: &Record, input: &Record, topic: &str, stage: &str) {
    assert!(
        letter.raw.len() <= MAX_LETTER_BYTES,
        "letter of {} bytes",
        letter.raw.len()
    );
    let value = &letter.value;
    assert_eq!(value["stage"], stage, "{}", value["error"]);
    assert_eq!(value["source_topic"], topic);
    assert_eq!(value["partition"], input.partition);
    assert_eq!(value["offset"], input.offset);
    let cut = &value["truncated"]["original_event"];
    assert_eq!(cut["size_bytes"], input.raw.len());
    assert_eq!(cut["sha256"], sha256_hex(&input.raw));
    let kept = value["original_event"].as_str().unwrap();
    assert!(kept.ends_with(" bytes truncated)"), "{:.100}", kept);
    assert!(value["error"].as_str().is_some_and(|e| !e.is_empty()));
    assert!(!value["timestamp"].is_null() && !value["plugin_version"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_escaping_heavy_records_are_dead_lettered_and_the_stages_go_on() {
    let mut pipeline = TestPipeline::new(|_| {});
    pipeline.start();
    let packed = pipeline.topic("OrderPickedAndPacked");
    let delivered = pipeline.topic("NotificationDelivered");

    // A 900 KB JSON string: valid JSON, violates the schema, whose error quotes it whole.
    let big = format!("\"{}\"", "x".repeat(900 * 1024));
    assert!(
        max_message_bytes(&packed).await > big.len() + 1024,
        "the topic must accept a 900 KB record"
    );
    produce_raw(&packed, "bad-big", big.as_bytes(), &[]).await;
    // 200 KB of \x01: six times as large once quoted in a letter.
    let escaping = control_bytes(200 * 1024);
    produce_raw(&packed, "bad-escaping", &escaping, &[]).await;
    // The same for order-status, the only reader of NotificationDelivered.
    produce_raw(&delivered, "bad-status", &escaping, &[]).await;

    let dead_letter_topic = pipeline.topic("DeadLetterQueue");
    wait_until("three dead letters", TIMEOUT, || {
        let topic = dead_letter_topic.clone();
        async move { read_to_end(&topic, READ_TIMEOUT).await.len() >= 3 }
    })
    .await;

    // The stages go on: an order posted now travels to its three delivered notifications.
    let (status, answer) = pipeline
        .post_order(&order("order-after-bad", "prod-789", 1))
        .await;
    assert_eq!(status, 202, "{answer}");
    wait_until("the order's three notifications", TIMEOUT, || {
        let topic = delivered.clone();
        async move {
            read_to_end(&topic, READ_TIMEOUT)
                .await
                .iter()
                .filter(|r| r.value["order_id"] == "order-after-bad")
                .count()
                >= 3
        }
    })
    .await;

    let letters = read_to_end(&dead_letter_topic, READ_TIMEOUT).await;
    assert_eq!(letters.len(), 3, "one letter per bad record: {letters:#?}");
    let packed_records = read_to_end(&packed, READ_TIMEOUT).await;
    let delivered_records = read_to_end(&delivered, READ_TIMEOUT).await;
    for (key, inputs, topic, stage) in [
        ("bad-big", &packed_records, &packed, "shipper"),
        ("bad-escaping", &packed_records, &packed, "shipper"),
        ("bad-status", &delivered_records, &delivered, "order-status"),
    ] {
        let letter = by_key(&letters, key);
        assert_letter(letter, by_key(inputs, key), topic, stage);
    }
    let big_letter = by_key(&letters, "bad-big");
    assert!(
        big_letter.value["error"]
            .as_str()
            .unwrap()
            .starts_with("schema violation"),
        "{:.200}",
        big_letter.value["error"]
    );
    // The schema error quotes the value; it is cut where it is made (1 KiB of the value).
    let error = big_letter.value["error"].as_str().unwrap();
    assert!(
        error.len() < 4 * 1024 && error.contains("bytes truncated)"),
        "the schema error quoting the value must be cut: {} bytes: {:.200}",
        error.len(),
        error
    );

    replay_checks_the_stage_and_restores_the_whole_event(&pipeline, &letters, big.as_bytes()).await;

    let logs = pipeline.logs();
    assert!(!logs.contains("restarting it"), "a stage restarted");
    assert!(
        !logs.contains("MessageSizeTooLarge"),
        "a record was too large"
    );
    let status = pipeline.stop("TERM");
    assert!(status.success(), "{status}");
}

/// `dlq replay` of the cut letter of `big`: refused, and not marked replayed, with a
/// configuration where the shipper reads another topic; with the real one, the whole event
/// (read back from its partition and offset) goes back to the shipper's topic.
async fn replay_checks_the_stage_and_restores_the_whole_event(
    pipeline: &TestPipeline,
    letters: &[Record],
    big: &[u8],
) {
    let packed = pipeline.topic("OrderPickedAndPacked");
    let confirmed = pipeline.topic("OrderConfirmed");
    let id = by_key(letters, "bad-big").ce_id().to_string();
    let mut moved: toml::Table = std::fs::read_to_string(&pipeline.config_path)
        .unwrap()
        .parse()
        .unwrap();
    stage_mut(&mut moved, "shipper").insert("input".into(), confirmed.clone().into());
    let moved_path = pipeline.dir.path().join("moved.toml");
    std::fs::write(&moved_path, toml::to_string(&moved).unwrap()).unwrap();
    let replay = |config: &std::path::Path| {
        let config = config.display().to_string();
        let id = id.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                stagehost(&[
                    "dlq", "replay", "--config", &config, "--stage", "shipper", "--id", &id,
                ])
            })
            .await
            .unwrap()
        }
    };
    let (ok, out, err) = replay(&moved_path).await;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&format!(
            "cannot replay {id}: stage shipper no longer reads topic {packed} (its inputs are \
             {confirmed})"
        )) && out.contains("0 replayed"),
        "{out}"
    );
    let (ok, out, err) = replay(&pipeline.config_path).await;
    assert!(ok && out.contains(&format!("replayed {id}")), "{out}{err}");
    assert!(out.contains("1 replayed"), "{out}");
    let replayed = read_to_end(&packed, READ_TIMEOUT)
        .await
        .into_iter()
        .find(|r| r.headers.get("stagehost-replay-of") == Some(&id))
        .unwrap_or_else(|| panic!("no replay of {id} on {packed}"));
    assert!(
        replayed.raw == big,
        "the replay is not the whole original event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_during_start_up_stops_the_host_cleanly() {
    let pipeline = TestPipeline::new(|_| {});
    let log_path = pipeline.dir.path().join("early-stop.log");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_stagehost"))
        .args(["run", "--config"])
        .arg(&pipeline.config_path)
        .env_remove("KAFKA_BROKERS")
        .env_remove("STAGEHOST_HTTP_ADDR")
        .env_remove("STAGEHOST_ADMIN_ADDR")
        .env_remove("STAGEHOST_STATE_DIR")
        .env("STAGEHOST_LOG", "info,stagehost=debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    // The handlers are installed first thing; then the host compiles its plugins (its state
    // folder is new) and connects to Kafka, which takes seconds.
    while !log().contains("stop signals handled") {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "no signal handlers after 1 s:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(started.elapsed() < Duration::from_secs(1));
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());

    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("the host did not stop within 120 s:\n{}", log());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = log();
    assert!(status.success(), "{status}:\n{log}");
    let requested = log
        .find("stop requested")
        .unwrap_or_else(|| panic!("{log}"));
    // The signal came during start-up: before the HTTP server was up.
    if let Some(listening) = log.find("HTTP server listening") {
        assert!(requested < listening, "{log}");
    }
    assert!(
        log.lines()
            .any(|line| line.contains("stagehost::app") && line.trim_end().ends_with(" stopped")),
        "no clean stop:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_ids_and_amounts_that_do_not_add_up_are_refused_and_the_pipeline_goes_on() {
    let mut pipeline = TestPipeline::new(|_| {});
    pipeline.start();
    // The ingress: an order id over http.max_id_bytes, and amounts that would overflow or
    // round to nothing, each get a 400 naming what is wrong.
    let long_id = "x".repeat(60_000);
    let (status, body) = pipeline.post_order(&order(&long_id, "prod-789", 1)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("order_id is 60000 bytes long"),
        "{body}"
    );
    let huge = serde_json::json!({
        "order_id": "money-1", "customer_id": "c",
        "items": [{"product_id": "prod-789", "quantity": 1, "price": 1e17}],
        "total": 1e300
    });
    let (status, body) = pipeline.post_order(&huge.to_string()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("price"), "{body}");
    let free = serde_json::json!({
        "order_id": "money-2", "customer_id": "c",
        "items": [{"product_id": "prod-789", "quantity": 1000, "price": 0.004}],
        "total": 0.0
    });
    let (status, body) = pipeline.post_order(&free.to_string()).await;
    assert_eq!(status, 400, "1000 units at 0.004 must not be free: {body}");
    let overflowing = serde_json::json!({
        "order_id": "money-3", "customer_id": "c",
        "items": [
            {"product_id": "prod-789", "quantity": 5_000_000_000_000_000_000u64, "price": 0},
            {"product_id": "prod-789", "quantity": 5_000_000_000_000_000_000u64, "price": 0}
        ],
        "total": 0
    });
    let (status, body) = pipeline.post_order(&overflowing.to_string()).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("quantity"),
        "{body}"
    );

    // A stage's input: an event whose ce_id is 100 KB is dead-lettered (not kept as an id),
    // and the stage goes on.
    let shipped_topic = pipeline.topic("OrderPickedAndPacked");
    let long_ce_id = "y".repeat(100_000);
    produce_raw(
        &shipped_topic,
        "long-id",
        common::confirmed("long-id").as_bytes(),
        &[("ce_id", long_ce_id.as_str())],
    )
    .await;
    let (status, _) = pipeline
        .post_order(&order("after-long-id", "prod-789", 1))
        .await;
    assert_eq!(status, 202);
    let delivered_topic = pipeline.topic("NotificationDelivered");
    wait_until(
        "the order after the long id to be delivered",
        TIMEOUT,
        || {
            let topic = delivered_topic.clone();
            async move {
                read_to_end(&topic, READ_TIMEOUT)
                    .await
                    .iter()
                    .any(|r| r.value["order_id"] == "after-long-id" && r.value["kind"] == "shipped")
            }
        },
    )
    .await;
    assert!(pipeline.stop("TERM").success(), "{}", pipeline.logs());
    let letters = read_to_end(&pipeline.topic("DeadLetterQueue"), READ_TIMEOUT).await;
    assert_eq!(letters.len(), 1, "one dead letter: {letters:?}");
    assert!(
        letters[0].value["error"]
            .as_str()
            .unwrap()
            .contains("100000 bytes long"),
        "{}",
        letters[0].value
    );
    assert!(letters[0].raw.len() <= MAX_LETTER_BYTES);
    let received = read_to_end(&pipeline.topic("OrderReceived"), READ_TIMEOUT).await;
    assert_eq!(received.len(), 1, "only the good order was published");
}

/// Sets `max.message.bytes` of `topic`.
async fn limit_message_bytes(topic: &str, bytes: usize) {
    use rdkafka::admin::AlterConfig;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", common::brokers())
        .create()
        .unwrap();
    let value = bytes.to_string();
    let change = AlterConfig::new(ResourceSpecifier::Topic(topic)).set("max.message.bytes", &value);
    let results = admin
        .alter_configs(&[change], &AdminOptions::new())
        .await
        .unwrap();
    for result in results {
        result.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_cannot_be_dead_lettered_holds_only_its_partition_until_an_operator_skips_it()
{
    let mut pipeline = TestPipeline::new(|_| {});
    pipeline.start();
    let packed = pipeline.topic("OrderPickedAndPacked");
    let delivered = pipeline.topic("NotificationDelivered");
    let dead_letter_topic = pipeline.topic("DeadLetterQueue");
    // The dead-letter topic takes 2 KB records; the letter of a 20 KB bad record of random
    // letters (which compression cannot shrink below that) cannot fit.
    limit_message_bytes(&dead_letter_topic, 2048).await;
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let noise: String = (0..20 * 1024)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            char::from(b'a' + (seed % 26) as u8)
        })
        .collect();
    let bad = format!("\"{noise}\"");
    produce_raw(&packed, "bad-held", bad.as_bytes(), &[]).await;
    let held = by_key(&read_to_end(&packed, READ_TIMEOUT).await, "bad-held").clone();
    let part = format!("stuck:shipper/{packed}/{}", held.partition);

    wait_until("the partition held and named in /readyz", TIMEOUT, || {
        let pipeline = &pipeline;
        let part = part.clone();
        async move {
            let (status, body) = pipeline.get("/readyz").await;
            status == 503 && body["problems"][&part]["reason"].is_string()
        }
    })
    .await;
    let (_, body) = pipeline.get("/readyz").await;
    let reason = body["problems"][&part]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("offset {}", held.offset))
            && reason.contains("stagehost stuck skip"),
        "{reason}"
    );

    // The other partitions go on: orders flow while the partition is held.
    let orders: Vec<String> = (0..9).map(|i| format!("order-held-{i}")).collect();
    for id in &orders {
        let (status, answer) = pipeline.post_order(&order(id, "prod-789", 1)).await;
        assert_eq!(status, 202, "{answer}");
    }
    let delivered_for =
        |records: &[Record], id: &str| records.iter().filter(|r| r.value["order_id"] == id).count();
    wait_until("orders of the other partitions delivered", TIMEOUT, || {
        let (delivered, orders) = (delivered.clone(), orders.clone());
        async move {
            let records = read_to_end(&delivered, READ_TIMEOUT).await;
            orders.iter().any(|id| delivered_for(&records, id) >= 3)
        }
    })
    .await;

    let (admin, config) = (pipeline.admin.clone(), pipeline.config_path.clone());
    let cli = |args: Vec<String>| {
        let (admin, config) = (admin.clone(), config.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                let mut all: Vec<&str> = vec!["stuck"];
                all.extend(args.iter().map(String::as_str));
                common::admin_cli(&admin, &config, &all)
            })
            .await
            .unwrap()
        }
    };
    let (ok, out, err) = cli(vec!["list".into()]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!(
            "shipper {packed}/{}@{}",
            held.partition, held.offset
        )) && out.contains("MessageSizeTooLarge"),
        "{out}"
    );
    let (ok, out, err) = cli(vec![
        "skip".into(),
        "shipper".into(),
        packed.clone(),
        held.partition.to_string(),
    ])
    .await;
    assert!(ok, "{out}{err}");

    // Skipped: the partition goes on, every order is delivered, the host is ready again.
    wait_until("every order delivered after the skip", TIMEOUT, || {
        let (delivered, orders) = (delivered.clone(), orders.clone());
        async move {
            let records = read_to_end(&delivered, READ_TIMEOUT).await;
            orders.iter().all(|id| delivered_for(&records, id) >= 3)
        }
    })
    .await;
    wait_until("ready again", TIMEOUT, || {
        let pipeline = &pipeline;
        async move { pipeline.get("/readyz").await.0 == 200 }
    })
    .await;
    let records = read_to_end(&delivered, READ_TIMEOUT).await;
    for id in &orders {
        assert_eq!(delivered_for(&records, id), 3, "order {id}");
    }
    let letters = read_to_end(&dead_letter_topic, READ_TIMEOUT).await;
    assert!(
        letters.iter().all(|r| r.key.as_deref() != Some("bad-held")),
        "a skipped record is not dead-lettered"
    );
    assert!(
        pipeline
            .logs()
            .contains("skipping a record that could not be dead-lettered"),
        "the skip is logged"
    );
    let (ok, out, _) = cli(vec!["list".into()]).await;
    assert!(ok && out.contains("no record is held"), "{out}");
    let status = pipeline.stop("TERM");
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_at_its_state_cap_dead_letters_what_would_grow_its_state_and_the_rest_flows() {
    const CAP: i64 = 4;
    let mut pipeline = TestPipeline::new(|config| {
        stage_mut(config, "order-status").insert("state_max_keys".into(), CAP.into());
    });
    pipeline.start();
    let delivered = pipeline.topic("NotificationDelivered");
    let dead_letter_topic = pipeline.topic("DeadLetterQueue");
    let orders: Vec<String> = (0..12).map(|i| format!("order-capped-{i}")).collect();
    for id in &orders {
        let (status, answer) = pipeline.post_order(&order(id, "prod-789", 1)).await;
        assert_eq!(status, 202, "{answer}");
    }
    // Order status keeps a key per order: past the cap its writes are refused.
    wait_until("a state-full dead letter of order-status", TIMEOUT, || {
        let topic = dead_letter_topic.clone();
        async move {
            read_to_end(&topic, READ_TIMEOUT).await.iter().any(|r| {
                r.value["stage"] == "order-status"
                    && r.value["error"].as_str().is_some_and(|e| {
                        e.starts_with("state full:") && e.contains("state_max_keys is 4")
                    })
            })
        }
    })
    .await;
    // The other stages are not capped: every order is delivered.
    wait_until("every order's three notifications", TIMEOUT, || {
        let (delivered, orders) = (delivered.clone(), orders.clone());
        async move {
            let records = read_to_end(&delivered, READ_TIMEOUT).await;
            orders.iter().all(|id| {
                records
                    .iter()
                    .filter(|r| r.value["order_id"] == id.as_str())
                    .count()
                    >= 3
            })
        }
    })
    .await;
    let letters = read_to_end(&dead_letter_topic, READ_TIMEOUT).await;
    assert!(
        letters.iter().all(|r| r.value["stage"] == "order-status"),
        "only the capped stage dead-letters: {letters:#?}"
    );
    let status = pipeline.stop("TERM");
    assert!(status.success(), "{status}");
}
