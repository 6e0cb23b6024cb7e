//! End-to-end test of the example pipeline `examples/sensors` (sensor readings → threshold
//! alerts), run by the same `stagehost` binary against a real broker: it proves the host knows
//! nothing of orders. Readings are posted over HTTP (a declared route with a path parameter),
//! alerts and statuses are read back `read_committed` to the end offsets, and the status read
//! model is read over HTTP (a declared view).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Record, SETTLE, TestPipeline, field, read_to_end, repo, wait_until};

const TIMEOUT: Duration = Duration::from_secs(60);

fn reading(id: &str, value: f64) -> String {
    format!(r#"{{"reading_id": "{id}", "value": {value}}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_raise_and_clear_alerts_and_the_status_is_served_over_http() {
    let mut pipeline =
        TestPipeline::from_file(&repo().join("examples/sensors/pipeline.toml"), |_| {});
    pipeline.start();
    let running = &pipeline;
    assert_eq!(
        pipeline.get("/sensors/boiler-1").await.0,
        404,
        "no reading yet"
    );

    // boiler-1's threshold is 90 (config.thresholds), lab-1 has the default 50.
    let plan = [
        ("boiler-1", "b-1", 70.0),
        ("boiler-1", "b-2", 95.5),
        ("boiler-1", "b-3", 97.0),
        ("boiler-1", "b-4", 80.0),
        ("lab-1", "l-1", 60.0),
    ];
    let mut answers = Vec::new();
    for (sensor, id, value) in plan {
        let path = format!("/sensors/{sensor}/readings");
        let (status, answer) = pipeline.post(&path, &reading(id, value)).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["sensor_id"], sensor, "{answer}");
        assert_eq!(answer["reading_id"], id, "{answer}");
        // Each status becomes visible before the next reading, so the order per sensor is
        // the posting order whatever the partitions do.
        wait_until(
            &format!("{sensor}'s status after {id}"),
            TIMEOUT,
            || async move {
                let (status, doc) = running.get(&format!("/sensors/{sensor}")).await;
                status == 200 && doc["last_reading_id"] == id
            },
        )
        .await;
        answers.push((path, id, value, answer));
    }

    // Idempotency per route: a repeat gets the first answer, another body gets 409, the same
    // reading id under another sensor is another reading.
    let (path, id, value, first) = &answers[0];
    assert_eq!(
        pipeline.post(path, &reading(id, *value)).await,
        (202, first.clone())
    );
    assert_eq!(pipeline.post(path, &reading(id, value + 1.0)).await.0, 409);
    let (status, other) = pipeline
        .post("/sensors/lab-2/readings", &reading(id, 1.0))
        .await;
    assert_eq!(status, 202, "{other}");
    assert_ne!(other["event_ids"], first["event_ids"]);
    // The route's schema and the plugin refuse bad bodies with 400.
    assert_eq!(pipeline.post(path, r#"{"reading_id": "x"}"#).await.0, 400);
    assert_eq!(
        pipeline
            .post(path, r#"{"reading_id": "x", "value": "hot"}"#)
            .await
            .0,
        400
    );
    wait_until("lab-2's status", TIMEOUT, || async {
        running.get("/sensors/lab-2").await.0 == 200
    })
    .await;

    let (status, boiler) = pipeline.get("/sensors/boiler-1").await;
    assert_eq!(status, 200);
    assert_eq!(boiler["level"], "normal", "{boiler}");
    assert_eq!(boiler["readings"], 4, "{boiler}");
    assert_eq!(boiler["alerts_raised"], 1, "{boiler}");
    assert_eq!(boiler["threshold"], 90.0, "{boiler}");
    let (_, lab) = pipeline.get("/sensors/lab-1").await;
    assert_eq!(
        (lab["level"].as_str(), lab["threshold"].as_f64()),
        (Some("alert"), Some(50.0)),
        "{lab}"
    );

    let status = pipeline.stop("TERM");
    assert!(status.success(), "the host did not stop cleanly: {status}");

    // Exactly these alerts, each once, keyed by sensor.
    let alerts = read_to_end(&pipeline.topic("Alerts"), SETTLE).await;
    let mut seen: Vec<(String, String, String)> = alerts
        .iter()
        .map(|a| {
            (
                field(a, "sensor_id"),
                field(a, "kind"),
                field(a, "reading_id"),
            )
        })
        .collect();
    seen.sort();
    let expected = [
        ("boiler-1", "cleared", "b-4"),
        ("boiler-1", "raised", "b-2"),
        ("lab-1", "raised", "l-1"),
    ]
    .map(|(s, k, r)| (s.to_string(), k.to_string(), r.to_string()));
    assert_eq!(seen, expected, "{alerts:#?}");
    assert!(
        alerts
            .iter()
            .all(|a| a.key.as_deref() == Some(&field(a, "sensor_id")[..]))
    );
    assert!(alerts.iter().all(|a| a.headers["ce_type"] == "Alert"));

    // Every accepted reading once (the repeat was not published again), with the route's
    // event type handed to the plugin and the topic's type on the output.
    let readings = read_to_end(&pipeline.topic("Readings"), SETTLE).await;
    let per_reading: BTreeMap<String, usize> = readings.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(format!(
            "{}/{}",
            field(r, "sensor_id"),
            field(r, "reading_id")
        ))
        .or_default() += 1;
        m
    });
    assert_eq!(per_reading.len(), 6, "{per_reading:?}");
    assert!(per_reading.values().all(|n| *n == 1), "{per_reading:?}");
    assert!(
        readings
            .iter()
            .all(|r: &Record| r.headers["ce_type"] == "Reading"
                && r.headers["ce_source"] == "/stagehost/reading")
    );
    let dead = read_to_end(&pipeline.topic("SensorDeadLetters"), SETTLE).await;
    assert!(dead.is_empty(), "nothing may be dead-lettered: {dead:#?}");
}

/// `stagehost load` knows nothing of orders either: it drives the sensor pipeline open loop
/// (done when the reading reaches `Readings`, matched by the payload's `reading_id`) and closed
/// loop (the id in the URL as the sensor id, done when the sensor's status is published,
/// matched by key), and every accepted request completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stagehost_load_drives_the_sensor_pipeline_open_and_closed_loop() {
    let mut pipeline =
        TestPipeline::from_file(&repo().join("examples/sensors/pipeline.toml"), |_| {});
    pipeline.start();
    let brokers = common::brokers();
    let template = repo().join("examples/sensors/load-reading.json");
    let readings_url = format!("http://{}/sensors/load-1/readings", pipeline.http);
    let status_url = format!("http://{}/sensors/{{id}}/readings", pipeline.http);
    let (readings, status) = (pipeline.topic("Readings"), pipeline.topic("SensorStatus"));
    let body = format!("@{}", template.display());
    let runs: [Vec<&str>; 2] = [
        vec![
            "--url",
            &readings_url,
            "--body",
            &body,
            "--done-topic",
            &readings,
            "--match-field",
            "reading_id",
            "--rate",
            "20",
            "--duration",
            "2s",
        ],
        vec![
            "--url",
            &status_url,
            "--body",
            r#"{"reading_id": "r-1", "value": 1}"#,
            "--done-topic",
            &status,
            "--clients",
            "2",
            "--duration",
            "2s",
        ],
    ];
    for (args, mode) in runs.into_iter().zip(["open", "closed"]) {
        let mut all = vec!["load", "--brokers", &brokers, "--json", "--settle", "60s"];
        all.extend(args);
        let (ok, stdout, stderr) = common::stagehost(&all);
        assert!(ok, "stagehost load failed: {stderr}");
        let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert!(report["accepted"].as_u64().unwrap() > 0, "{report}");
        assert_eq!(report["mode"], mode, "{report}");
        assert_eq!(report["errors"], 0, "{report}");
        assert_eq!(report["accepted"], report["sent"], "{report}");
        assert_eq!(report["completed"], report["accepted"], "{report}");
        assert!(report["cpu_seconds"].as_f64().unwrap() >= 0.0, "{report}");
    }
}
