//! `GET /metrics` during a run: the repository's pipeline on a real broker, scraped while
//! orders flow. The counters move as events flow, a poison event moves the dead-letter counter
//! of its stage with its reason, repeats and conflicts of the ingress are counted, the lag of
//! every topic-fed stage is there, and every series served is one the catalogue lists.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{TestPipeline, flow, order, produce_raw, wait_until};
use prometheus_parse::{Sample, Scrape, Value};
use stagehost::observe::catalogue;

const TIMEOUT: Duration = Duration::from_secs(60);

/// Scrapes the host's admin listener (with the token `admin` sends).
async fn scrape(admin: &(reqwest::Client, String)) -> Scrape {
    let response = admin.0.get(&admin.1).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().await.unwrap();
    Scrape::parse(text.lines().map(|line| Ok(line.to_string()))).unwrap()
}

/// The value of the series `name` whose labels include `labels` (0 when there is none).
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|sample| sample.metric == name && has_labels(sample, labels))
        .map(|sample| match &sample.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.last().map(|b| b.count).unwrap_or_default(),
            Value::Summary(_) => panic!("{name} is a summary"),
        })
        .sum()
}

fn has_labels(sample: &Sample, labels: &[(&str, &str)]) -> bool {
    labels
        .iter()
        .all(|(name, want)| sample.labels.get(name) == Some(want))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_as_events_flow_and_count_dead_letters_by_reason() {
    let mut pipeline = TestPipeline::new(flow::stocked);
    pipeline.start();
    let admin = (pipeline.admin_http(), pipeline.admin_url("/metrics"));
    let before = scrape(&admin).await;
    assert_eq!(value(&before, catalogue::BUILD_INFO, &[]), 1.0);

    for n in 0..5 {
        let (status, answer) = pipeline
            .post_order(&order(&format!("m-{n}"), "fp-1", 1))
            .await;
        assert_eq!(status, 202, "{answer}");
    }
    // A repeat of an accepted order, and the same id with another body.
    assert_eq!(pipeline.post_order(&order("m-0", "fp-1", 1)).await.0, 202);
    assert_eq!(pipeline.post_order(&order("m-0", "fp-2", 1)).await.0, 409);

    // Every order reaches the last stage.
    wait_until("five orders counted by order-status", TIMEOUT, || async {
        let now = scrape(&admin).await;
        value(
            &now,
            catalogue::STAGE_EVENTS_IN,
            &[("stage", "notification")],
        ) >= 15.0
    })
    .await;
    // A fused stage's own worker only skips what its writer handled, and commits such work
    // within a second (`SKIPPED_WORK_INTERVAL`).
    let stages = ["inventory", "stock", "reservation", "warehouse", "shipper"];
    wait_until("every stage's worker committed", TIMEOUT, || async {
        let now = scrape(&admin).await;
        stages
            .iter()
            .all(|stage| value(&now, catalogue::STAGE_COMMIT_SECONDS, &[("stage", stage)]) >= 1.0)
    })
    .await;
    let flowing = scrape(&admin).await;
    for stage in stages {
        let events = value(&flowing, catalogue::STAGE_EVENTS_IN, &[("stage", stage)]);
        assert!(events >= 5.0, "{stage} counted {events} events");
        let outputs = value(&flowing, catalogue::STAGE_EVENTS_OUT, &[("stage", stage)]);
        assert!(outputs >= 5.0, "{stage} counted {outputs} outputs");
        let calls = value(
            &flowing,
            catalogue::PLUGIN_CALL_SECONDS,
            &[("stage", stage)],
        );
        assert!(calls >= 5.0, "{stage} timed {calls} plugin calls");
        let commits = value(
            &flowing,
            catalogue::STAGE_COMMIT_SECONDS,
            &[("stage", stage)],
        );
        assert!(commits >= 1.0, "{stage} timed {commits} commits");
        assert!(
            flowing
                .samples
                .iter()
                .any(|s| s.metric == catalogue::STAGE_LAG && s.labels.get("stage") == Some(stage)),
            "no lag gauge for {stage}"
        );
        let version = flowing
            .samples
            .iter()
            .find(|s| {
                s.metric == catalogue::PLUGIN_INFO
                    && s.labels.get("stage") == Some(stage)
                    && matches!(s.value, Value::Gauge(v) if v == 1.0)
            })
            .unwrap_or_else(|| panic!("no live plugin version for {stage}"));
        assert!(
            version
                .labels
                .get("version")
                .unwrap()
                .starts_with("sha256:")
        );
    }
    let route = [("route", "/orders"), ("method", "POST")];
    let accepted = [route[0], route[1], ("status", "202")];
    assert_eq!(value(&flowing, catalogue::HTTP_REQUESTS, &accepted), 6.0);
    assert_eq!(
        value(
            &flowing,
            catalogue::HTTP_REQUESTS,
            &[route[0], ("status", "409")]
        ),
        1.0
    );
    assert_eq!(
        value(&flowing, catalogue::HTTP_REQUEST_SECONDS, &route),
        7.0
    );
    assert_eq!(
        value(&flowing, catalogue::INGRESS_REPEATS, &[route[0]]),
        1.0
    );
    assert_eq!(
        value(&flowing, catalogue::INGRESS_CONFLICTS, &[route[0]]),
        1.0
    );
    assert!(
        value(
            &flowing,
            catalogue::PART_READY,
            &[("part", "stage:inventory")]
        ) == 1.0
    );
    assert!(value(&flowing, catalogue::PROCESS_RSS, &[]) > 1e6);

    // A poison event: not even a CloudEvent.
    let undecodable = [("stage", "inventory"), ("reason", "undecodable")];
    let poisoned = value(&flowing, catalogue::STAGE_DEAD_LETTERS, &undecodable);
    produce_raw(
        &pipeline.topic("OrderReceived"),
        "poison",
        b"{not json",
        &[],
    )
    .await;
    wait_until(
        "the poison event counted as dead-lettered",
        TIMEOUT,
        || async {
            let now = scrape(&admin).await;
            value(&now, catalogue::STAGE_DEAD_LETTERS, &undecodable) == poisoned + 1.0
        },
    )
    .await;

    // Every series is in the catalogue (the process collector adds more `process_` ones).
    let last = scrape(&admin).await;
    for sample in &last.samples {
        assert!(
            catalogue::find(&sample.metric).is_some() || sample.metric.starts_with("process_"),
            "{} is served but not in the catalogue",
            sample.metric
        );
    }
    let status = pipeline.stop("TERM");
    assert!(status.success(), "the host did not stop cleanly: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_metrics_nothing_is_served() {
    let mut pipeline = TestPipeline::new(|config| {
        let mut telemetry = toml::Table::new();
        telemetry.insert("metrics".into(), false.into());
        config.insert("telemetry".into(), telemetry.into());
    });
    pipeline.start();
    let response = pipeline
        .admin_http()
        .get(pipeline.admin_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let status = pipeline.stop("TERM");
    assert!(status.success());
}
