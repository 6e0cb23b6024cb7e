//! Hot swaps against a real broker: under steady load nothing is lost or duplicated and every
//! output's stamp matches the version in its headers; invalid components are refused while
//! the old version keeps running (among them a plugin that declares an output its stage does
//! not map, which `stagehost check` refuses too); the CLI lists, swaps and rolls back.
//!
//! `SWAP_RATE` (orders/s, default 500) and `SWAP_COUNT` (default 20) size the load test.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use common::{
    Record, SETTLE, TestPipeline, component, field, keep_stages, read_to_end, stage_mut, stagehost,
    wait_for_records,
};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use stagehost::plugin::content_version;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn version_of(stem: &str) -> String {
    content_version(&std::fs::read(component(stem)).unwrap())
}

/// A pipeline that runs only the warehouse stage, with `plugin` (a component stem).
fn warehouse_only(plugin: &str) -> TestPipeline {
    let path = component(plugin);
    TestPipeline::new(|config| {
        keep_stages(config, &["warehouse"]);
        stage_mut(config, "warehouse").insert("plugin".into(), path.display().to_string().into());
    })
}

async fn swap(pipeline: &TestPipeline, stage: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
    let response = pipeline
        .admin_http()
        .put(pipeline.admin_url(&format!("/plugins/{stage}")))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

/// Asserts that swapping the warehouse to `bytes` is refused with a message naming `reason`.
async fn assert_refused(pipeline: &TestPipeline, bytes: Vec<u8>, reason: &str) {
    let (status, body) = swap(pipeline, "warehouse", bytes).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains(reason),
        "expected '{reason}': {body}"
    );
}

async fn plugins_report(pipeline: &TestPipeline, stage: &str) -> serde_json::Value {
    pipeline
        .admin_http()
        .get(pipeline.admin_url(&format!("/plugins/{stage}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Whether every order of `ids` is among the records (by `order_id`).
fn all_of(ids: &[String]) -> impl FnMut(&[Record]) -> bool + '_ {
    move |records| {
        let seen: BTreeSet<String> = records.iter().map(|r| field(r, "order_id")).collect();
        ids.iter().all(|id| seen.contains(id))
    }
}

/// Produces `count` OrderConfirmed events at `rate` per second; returns the order ids and the
/// achieved rate.
async fn produce_confirmed(topic: &str, prefix: &str, count: u64, rate: u64) -> (Vec<String>, f64) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", common::brokers())
        .set("linger.ms", "2")
        .create()
        .unwrap();
    let per_tick = (rate / 100).max(1);
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    let mut ids = Vec::new();
    let mut deliveries = Vec::new();
    let started = Instant::now();
    while (ids.len() as u64) < count {
        ticker.tick().await;
        for _ in 0..per_tick.min(count - ids.len() as u64) {
            let id = format!("{prefix}-{}", ids.len());
            let payload = common::confirmed(&id);
            let ce_id = format!("confirmed-{id}");
            let headers =
                common::headers_of(&[("ce_id", ce_id.as_str()), ("ce_type", "OrderConfirmed")]);
            let record = FutureRecord::to(topic)
                .key(&id)
                .payload(&payload)
                .headers(headers);
            match producer.send_result(record) {
                Ok(delivery) => deliveries.push(delivery),
                Err((error, _)) => panic!("cannot produce: {error}"),
            }
            ids.push(id);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    for delivery in deliveries {
        delivery.await.unwrap().unwrap();
    }
    (ids, count as f64 / elapsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swapping_under_load_loses_nothing_and_every_output_names_its_version() {
    let rate = env_or("SWAP_RATE", 500);
    let swaps = env_or("SWAP_COUNT", 20);
    let swap_every = Duration::from_millis(400);
    let blue = version_of("warehouse_blue");
    let green = version_of("warehouse_green");
    assert_ne!(blue, green);
    let stamps = HashMap::from([(blue.clone(), "blue"), (green.clone(), "green")]);

    let mut pipeline = warehouse_only("warehouse_blue");
    pipeline.start();
    let input = pipeline.topic("OrderConfirmed");
    // Load for the whole swap period plus a second on each side.
    let seconds = (swap_every.as_secs_f64() * swaps as f64 + 2.0).ceil() as u64;
    let total = rate * seconds;

    let packed_topic = pipeline.topic("OrderPickedAndPacked");
    let load = tokio::spawn({
        let input = input.clone();
        async move { produce_confirmed(&input, "swap", total, rate).await }
    });
    wait_for_records(
        &packed_topic,
        "the first outputs of blue",
        Duration::from_secs(60),
        |r| !r.is_empty(),
    )
    .await;
    let files = [
        std::fs::read(component("warehouse_green")).unwrap(),
        std::fs::read(component("warehouse_blue")).unwrap(),
    ];
    for i in 0..swaps {
        let (status, body) = swap(&pipeline, "warehouse", files[(i % 2) as usize].clone()).await;
        assert_eq!(status, 200, "swap {i} refused: {body}");
        assert_eq!(body["changed"], true, "swap {i}: {body}");
        // The rhythm of the swaps under the load (not a wait for anything).
        tokio::time::sleep(swap_every).await;
    }
    let (ids, achieved_rate) = load.await.unwrap();
    wait_for_records(
        &packed_topic,
        "every order packed",
        Duration::from_secs(180),
        all_of(&ids),
    )
    .await;
    let report = plugins_report(&pipeline, "warehouse").await;
    let status = pipeline.stop("TERM");
    assert!(status.success(), "the host stopped cleanly: {status}");

    let packed = read_to_end(&packed_topic, SETTLE).await;
    let mut per_order: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_version: BTreeMap<String, usize> = BTreeMap::new();
    let mut mismatched = 0;
    for record in &packed {
        let order_id = record.value["order_id"].as_str().unwrap().to_string();
        *per_order.entry(order_id).or_default() += 1;
        let version = record
            .headers
            .get("ce_pluginversion")
            .cloned()
            .unwrap_or_default();
        let stamp = record.value["stamp"].as_str().unwrap_or("");
        if stamps.get(&version) != Some(&stamp) {
            mismatched += 1;
        }
        *per_version.entry(version).or_default() += 1;
    }
    let lost = ids.iter().filter(|id| !per_order.contains_key(*id)).count();
    let duplicated = per_order.values().filter(|n| **n > 1).count();
    let mut times: Vec<i64> = packed.iter().map(|r| r.timestamp_ms).collect();
    times.sort_unstable();
    let largest_gap = times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    // The load generator's rate and the stalls are figures (printed); the benchmarks measure
    // speed.
    println!(
        "swap under load: {} orders produced at {achieved_rate:.0}/s, {swaps} swaps; packed {}, lost {lost}, duplicated {duplicated}, stamp/version mismatches {mismatched}; per version {per_version:?}; longest swap stall (host-measured) {} µs; largest gap between consecutive outputs {largest_gap} ms",
        ids.len(),
        packed.len(),
        report["max_stall_us"]
    );
    assert_eq!(lost, 0, "orders lost");
    assert_eq!(duplicated, 0, "orders duplicated");
    assert_eq!(
        mismatched, 0,
        "outputs whose stamp does not match their version"
    );
    assert_eq!(packed.len(), ids.len());
    assert!(
        per_version.len() == 2,
        "both versions produced outputs: {per_version:?}"
    );
    assert_eq!(report["swaps"], swaps);
    assert_eq!(
        report["history"].as_array().unwrap().len() as u64,
        swaps + 1
    );
    assert!(
        report["history"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["live_since"].is_string()),
        "every version went live: {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_components_are_refused_and_the_old_version_keeps_running() {
    let mut pipeline = warehouse_only("warehouse_blue");
    pipeline.start();
    let blue = version_of("warehouse_blue");

    assert_refused(
        &pipeline,
        b"definitely not wasm".to_vec(),
        "not a valid WebAssembly component",
    )
    .await;
    for (stem, reason) in [
        (
            "not_a_stage",
            "does not fit the stagehost:pipeline stage world",
        ),
        ("always_trap", "smoke call"),
        ("order_status", "keyed state"),
        // The pass-through test component declares its one output, `out`, which the
        // warehouse stage does not map.
        (
            "identity",
            "declares output(s) 'out' that stage warehouse does not map (its outputs table maps: 'notify', 'packed')",
        ),
    ] {
        assert_refused(&pipeline, std::fs::read(component(stem)).unwrap(), reason).await;
    }
    let (status, body) = swap(&pipeline, "nowhere", b"x".to_vec()).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = pipeline
        .admin_http()
        .post(pipeline.admin_url("/plugins/warehouse/rollback"))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(
        status,
        409,
        "nothing to roll back to: {:?}",
        body.text().await
    );

    let report = plugins_report(&pipeline, "warehouse").await;
    assert_eq!(report["version"], blue.as_str());
    assert_eq!(report["refused"], 5);
    assert_eq!(report["swaps"], 0);

    // Still processing, on the old version.
    let input = pipeline.topic("OrderConfirmed");
    let packed_topic = pipeline.topic("OrderPickedAndPacked");
    let (refused_ids, _) = produce_confirmed(&input, "refused", 5, 100).await;
    wait_for_records(
        &packed_topic,
        "the orders sent after the refusals",
        Duration::from_secs(60),
        all_of(&refused_ids),
    )
    .await;

    // The command line: swap, list, roll back.
    let green_path = component("warehouse_green").display().to_string();
    let (ok, out, err) = pipeline.admin_cli(&["plugin", "swap", "warehouse", &green_path]);
    assert!(ok, "swap failed: {err}");
    assert!(out.contains(&version_of("warehouse_green")), "{out}");
    let (ok, out, err) = pipeline.admin_cli(&["plugin", "list"]);
    assert!(ok, "list failed: {err}");
    assert!(
        out.contains("warehouse: sha256:") && out.contains("1 swaps, 5 refused"),
        "{out}"
    );
    assert!(out.contains(&blue) && out.contains(&green_path), "{out}");
    let (ok, out, err) = pipeline.admin_cli(&["plugin", "rollback", "warehouse"]);
    assert!(ok, "rollback failed: {err}");
    assert!(out.contains(&format!("-> {blue}")), "{out}");
    let (ok, _, err) = pipeline.admin_cli(&["plugin", "swap", "warehouse", "/no/such.wasm"]);
    assert!(!ok && err.contains("/no/such.wasm"), "{err}");

    let (rolled_back_ids, _) = produce_confirmed(&input, "rolled-back", 3, 100).await;
    wait_for_records(
        &packed_topic,
        "the orders sent after the rollback",
        Duration::from_secs(60),
        all_of(&rolled_back_ids),
    )
    .await;
    let logs = pipeline.logs();
    assert!(logs.contains("plugin swap refused"), "refusals are logged");
    let status = pipeline.stop("TERM");
    assert!(status.success(), "the host stopped cleanly: {status}");

    // Exactly the eight orders, each once, all by blue (before the swap and after the
    // rollback).
    let packed = read_to_end(&packed_topic, SETTLE).await;
    let mut packed_ids: Vec<String> = packed.iter().map(|r| field(r, "order_id")).collect();
    packed_ids.sort();
    let mut sent: Vec<String> = refused_ids
        .iter()
        .chain(&rolled_back_ids)
        .cloned()
        .collect();
    sent.sort();
    assert_eq!(packed_ids, sent, "each order packed once");
    assert!(
        packed.iter().all(|r| r.value["stamp"] == "blue"
            && r.headers.get("ce_pluginversion") == Some(&blue)),
        "by blue: {packed:#?}"
    );
}

async fn wait_for_version(
    pipeline: &TestPipeline,
    stage: &str,
    version: &str,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let report = plugins_report(pipeline, stage).await;
        if report["version"] == version {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "{stage} never went to {version}: {report}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_swaps_a_plugin_when_its_file_is_rebuilt() {
    let workdir = tempfile::tempdir().unwrap();
    let file = workdir.path().join("warehouse.wasm");
    std::fs::copy(component("warehouse_blue"), &file).unwrap();
    let plugin = file.clone();
    let mut pipeline = TestPipeline::new(|config| {
        keep_stages(config, &["warehouse"]);
        stage_mut(config, "warehouse").insert("plugin".into(), plugin.display().to_string().into());
    });
    pipeline.run_args = vec!["--watch".into()];
    pipeline.start();

    // A rebuild writes the file in place.
    std::fs::write(&file, std::fs::read(component("warehouse_green")).unwrap()).unwrap();
    let green = version_of("warehouse_green");
    let report = wait_for_version(&pipeline, "warehouse", &green).await;
    assert_eq!(report["swaps"], 1);
    // A broken build is refused and the live version stays.
    std::fs::write(&file, b"half-written garbage").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let report = plugins_report(&pipeline, "warehouse").await;
        if report["refused"] == 1 {
            assert_eq!(report["version"], green.as_str());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the broken file was not refused: {report}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ids, _) = produce_confirmed(&pipeline.topic("OrderConfirmed"), "watched", 2, 100).await;
    let packed_topic = pipeline.topic("OrderPickedAndPacked");
    wait_for_records(
        &packed_topic,
        "the watched orders",
        Duration::from_secs(60),
        all_of(&ids),
    )
    .await;
    let status = pipeline.stop("TERM");
    assert!(status.success(), "the host stopped cleanly: {status}");
    let packed = read_to_end(&packed_topic, SETTLE).await;
    assert_eq!(packed.len(), 2, "{packed:#?}");
    assert!(packed.iter().all(|r| r.value["stamp"] == "green"));
}

/// A log field's number, e.g. `startup_ms` of the `ready` line (colour codes removed).
fn logged_number(logs: &str, field: &str) -> Option<u64> {
    let mut plain = String::with_capacity(logs.len());
    let mut chars = logs.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let at = plain.rfind(&format!("{field}="))? + field.len() + 1;
    plain[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_loads_the_compiled_plugins_from_the_cache() {
    let mut pipeline = TestPipeline::new(|_| {});
    pipeline.start();
    // `/readyz` answers 200 a moment before the host logs its `ready` line (with the start-up
    // time): wait for the line, not for a while.
    wait_for_ready_line(&pipeline, 0).await;
    pipeline.stop("TERM");
    let first = pipeline.logs();
    let cache = pipeline.dir.path().join("state/compiled");
    let cached = walk(&cache);
    assert!(cached > 0, "nothing cached under {}", cache.display());
    pipeline.start();
    wait_for_ready_line(&pipeline, first.len()).await;
    pipeline.stop("TERM");
    let all = pipeline.logs();
    let second = &all[first.len()..];
    let figures = |logs: &str| {
        (
            logged_number(logs, "elapsed_ms").unwrap(),
            logged_number(logs, "startup_ms").unwrap(),
        )
    };
    let (compile_ms, first_ready_ms) = figures(&first);
    let (cached_ms, second_ready_ms) = figures(second);
    println!(
        "start with 6 plugins (8 stages): plugins loaded in {compile_ms} ms, ready in {first_ready_ms} ms when compiling; {cached_ms} ms and {second_ready_ms} ms from the cache ({cached} cache files)"
    );
}

/// Waits until the host's logs after the first `from` bytes hold the `ready` line.
async fn wait_for_ready_line(pipeline: &TestPipeline, from: usize) {
    common::wait_until("the ready line", Duration::from_secs(30), || async {
        logged_number(&pipeline.logs()[from..], "startup_ms").is_some()
    })
    .await;
}

fn walk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        walk(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// `stagehost check` (no broker needed) loads every plugin and refuses one that declares an
/// output name its stage does not map, naming the output and the stage; the shipped plugins
/// declare exactly what the repository's pipeline.toml maps (the inventory component per
/// input event type, as it serves three stages).
#[test]
fn check_refuses_a_plugin_whose_declared_outputs_its_stage_does_not_map() {
    let shipped = TestPipeline::new(|_| {});
    let config = shipped.config_path.display().to_string();
    let (ok, out, err) = stagehost(&["check", "--config", &config]);
    assert!(ok, "the shipped pipeline must pass: {err}");
    for stage in [
        "order",
        "inventory",
        "stock",
        "reservation",
        "warehouse",
        "order-status",
    ] {
        assert!(out.contains(&format!("stage {stage}: ")), "{out}");
    }

    let unmapped = warehouse_only("identity");
    let config = unmapped.config_path.display().to_string();
    let (ok, out, err) = stagehost(&["check", "--config", &config]);
    assert!(!ok, "a plugin with an unmapped output passed: {out}");
    assert!(
        err.contains("stages[warehouse].plugin: plugin ")
            && err.contains(
                "identity.wasm declares output(s) 'out' that stage warehouse does not map (its outputs table maps: 'notify', 'packed')"
            ),
        "{err}"
    );

    // Mapping the output makes the same plugin pass.
    let mapped = TestPipeline::new(|config| {
        keep_stages(config, &["warehouse"]);
        let stage = stage_mut(config, "warehouse");
        stage.insert(
            "plugin".into(),
            component("identity").display().to_string().into(),
        );
        let outputs = stage.get_mut("outputs").unwrap().as_table_mut().unwrap();
        let packed = outputs["packed"].clone();
        outputs.insert("out".into(), packed);
    });
    let config = mapped.config_path.display().to_string();
    let (ok, _, err) = stagehost(&["check", "--config", &config]);
    assert!(ok, "{err}");
}
