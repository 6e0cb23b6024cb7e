//! What an ingress client learns when the stage fails: a plugin trap answers `500` with a short
//! message and an id, never the wasm backtrace; the host log carries the id with the whole trap
//! (escaped, on one line) and the dead letter the whole trap. A stage `config` its plugin
//! refuses is the operator's mistake: `503`, never the client's `400`.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{
    TestPipeline, add_stage, add_topic, faulty_stage, keep_stages, read_to_end, stage_mut,
};

/// What the host's account of a trap holds (the frames are the internals a client must not see).
const TRAP_DETAIL: &str = "wasm backtrace";

/// A pipeline whose only stage is the faulty component behind `POST /faulty`.
fn faulty_ingress() -> TestPipeline {
    TestPipeline::new(|config| {
        keep_stages(config, &[]);
        let out = add_topic(config, "FaultyOut", 1);
        add_stage(config, faulty_stage("gate", "http", &out));
        let mut route = toml::Table::new();
        route.insert("path".into(), "/faulty".into());
        route.insert("stage".into(), "gate".into());
        route.insert("id_field".into(), "request_id".into());
        route.insert("event_type".into(), "Faulty".into());
        let http = config["http"].as_table_mut().unwrap();
        http.insert("routes".into(), toml::Value::Array(vec![route.into()]));
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_trap_answers_an_id_and_keeps_the_detail_for_the_operator() {
    let mut pipeline = faulty_ingress();
    pipeline.start();
    let (status, body) = pipeline
        .post("/faulty", r#"{"request_id": "r-1", "fault": "trap"}"#)
        .await;
    assert_eq!(status, 500, "{body}");
    let object = body.as_object().unwrap();
    assert_eq!(object.len(), 2, "only a message and an id: {body}");
    assert_eq!(body["error"], "internal error");
    let id = body["id"].as_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    let text = body.to_string();
    assert!(!text.contains("wasm") && !text.contains("trap"), "{text}");

    // A request that passes still passes.
    let (status, body) = pipeline.post("/faulty", r#"{"request_id": "r-2"}"#).await;
    assert_eq!(status, 202, "{body}");

    let logs = pipeline.logs();
    let line = logs
        .lines()
        .find(|l| l.contains(&id) && l.contains("ingress stage failed"))
        .unwrap_or_else(|| panic!("no log line with {id}:\n{logs}"));
    assert!(
        line.contains(TRAP_DETAIL) && line.contains("unreachable"),
        "the whole trap in the log: {line}"
    );
    assert!(
        line.contains("backtrace:\\n    0:"),
        "the backtrace's lines escaped once onto one line: {line}"
    );

    let letters = read_to_end(&pipeline.topic("DeadLetterQueue"), Duration::from_secs(10)).await;
    let letter = letters
        .iter()
        .find(|r| r.ce_id() == id)
        .unwrap_or_else(|| panic!("no dead letter {id} in {} letters", letters.len()));
    let error = letter.value["error"].as_str().unwrap();
    assert!(
        error.contains(TRAP_DETAIL) && error.contains("unreachable"),
        "{error}"
    );
    assert!(pipeline.stop("TERM").success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_config_the_plugin_refuses_is_not_the_clients_fault() {
    let mut pipeline = TestPipeline::new(|config| {
        keep_stages(config, &["order"]);
        let mut bad = toml::Table::new();
        bad.insert("misplaced_setting".into(), 1.into());
        stage_mut(config, "order").insert("config".into(), bad.into());
    });
    pipeline.start();
    let order = std::fs::read_to_string(common::repo().join("examples/order.json")).unwrap();
    let (status, body) = pipeline.post_order(&order).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["error"],
        "the service is misconfigured; try again later"
    );
    assert!(!body.to_string().contains("misplaced_setting"), "{body}");
    let id = body["id"].as_str().unwrap();
    let logs = pipeline.logs();
    assert!(
        logs.lines().any(|l| l.contains(id)
            && l.contains("operator's mistake")
            && l.contains("misplaced_setting")),
        "{logs}"
    );
    assert!(pipeline.stop("TERM").success());
}
