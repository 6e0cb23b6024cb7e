//! Static membership and a changed input list, black-box: a stage's consumer is a static member
//! of its group (`group.instance.id`), so a restarted host gets its partitions back without a
//! rebalance. When the restarted host's stage reads a topic more than before, the new topic
//! must be read at once (with the classic protocol a static member that rejoins with another
//! subscription keeps its old assignment, KAFKA-12759; the restarted member keeps the session
//! alive, so without the host's remedy the new topic is never read).
//!
//! The session timeout is set far above how long anything else here takes, so that a stage
//! left on its old assignment fails the test unambiguously.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{SETTLE, TestPipeline, field, keep_stages, produce_raw, stage_mut, wait_for_records};

/// The stage consumers' session timeout in these tests.
const SESSION_TIMEOUT: Duration = Duration::from_secs(90);

/// A pipeline of the warehouse stage alone, reading `OrderConfirmed`, with a second topic of
/// the same event type (`MoreConfirmed`) that it does not read yet.
fn pipeline(mode: &str) -> TestPipeline {
    TestPipeline::new(|config| {
        keep_stages(config, &["warehouse"]);
        stage_mut(config, "warehouse").insert("mode".into(), mode.into());
        let more = common::add_topic(config, "MoreConfirmed", 1);
        config["topics"][&more]
            .as_table_mut()
            .unwrap()
            .insert("event_type".into(), "OrderConfirmed".into());
        let mut consumer = toml::Table::new();
        consumer.insert(
            "session.timeout.ms".into(),
            (SESSION_TIMEOUT.as_millis() as i64).into(),
        );
        config["kafka"]
            .as_table_mut()
            .unwrap()
            .insert("consumer".into(), consumer.into());
    })
}

/// Rewrites the pipeline's configuration so that the warehouse reads `inputs` (logical names).
fn set_inputs(pipeline: &TestPipeline, inputs: &[&str]) {
    let mut config: toml::Table = std::fs::read_to_string(&pipeline.config_path)
        .unwrap()
        .parse()
        .unwrap();
    let topics: Vec<toml::Value> = inputs.iter().map(|i| pipeline.topic(i).into()).collect();
    stage_mut(&mut config, "warehouse").insert("input".into(), topics.into());
    std::fs::write(&pipeline.config_path, toml::to_string(&config).unwrap()).unwrap();
}

/// Writes the `OrderConfirmed` event of `order` into `topic` (a logical name).
async fn confirm(pipeline: &TestPipeline, topic: &str, order: &str) {
    produce_raw(
        &pipeline.topic(topic),
        order,
        common::confirmed(order).as_bytes(),
        &[
            ("ce_id", &format!("{order}-confirmed")),
            ("ce_type", "OrderConfirmed"),
        ],
    )
    .await;
}

/// Waits (up to `limit`) until `order` has been packed.
async fn packed(pipeline: &TestPipeline, order: &str, limit: Duration) {
    wait_for_records(
        &pipeline.topic("OrderPickedAndPacked"),
        &format!("{order} packed"),
        limit,
        |records| records.iter().any(|r| field(r, "order_id") == order),
    )
    .await;
}

/// Runs the warehouse on `OrderConfirmed`, stops it with `signal`, restarts it (same instance
/// id) on `OrderConfirmed` and `MoreConfirmed`, and checks that an order written to the new
/// topic is packed well within the session timeout of the first run's membership.
async fn a_restart_with_a_new_input_reads_it_at_once(mode: &str, signal: &str) {
    let mut pipeline = pipeline(mode);
    pipeline.start();
    confirm(&pipeline, "OrderConfirmed", "before").await;
    // Packed: the stage has joined its group and holds its assignment.
    packed(&pipeline, "before", SETTLE).await;
    pipeline.stop(signal);

    set_inputs(&pipeline, &["OrderConfirmed", "MoreConfirmed"]);
    let restarted = Instant::now();
    pipeline.start();
    confirm(&pipeline, "MoreConfirmed", "on-the-new-input").await;
    confirm(&pipeline, "OrderConfirmed", "on-the-old-input").await;
    // The outcome must come before the first run's membership could have timed out (a stage
    // left on its old assignment keeps that membership alive, so it would never come).
    packed(&pipeline, "on-the-new-input", SESSION_TIMEOUT).await;
    eprintln!(
        "[{mode}, {signal}] restart to the new input's first event packed: {} ms \
         (session timeout {} ms)",
        restarted.elapsed().as_millis(),
        SESSION_TIMEOUT.as_millis()
    );
    for line in pipeline
        .logs()
        .lines()
        .filter(|l| l.contains("inputs changed"))
    {
        eprintln!("[{mode}, {signal}] host: {line}");
    }
    packed(&pipeline, "on-the-old-input", SETTLE).await;
    let status = pipeline.stop("TERM");
    assert!(status.success(), "the host did not stop cleanly: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_after_a_clean_stop_a_new_input_is_read_at_once() {
    a_restart_with_a_new_input_reads_it_at_once("exactly_once", "TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_after_a_kill_a_new_input_is_read_at_once() {
    a_restart_with_a_new_input_reads_it_at_once("at_least_once", "KILL").await;
}

/// Two instances of the stage (a rolling change: both stopped, both started again with the new
/// input list): the group rebalances onto the new input once both are back, well within the
/// session timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_restarted_with_a_new_input_read_it_at_once() {
    let mut first = pipeline("exactly_once");
    let mut second = first.sibling("host-1");
    first.start();
    second.start();
    confirm(&first, "OrderConfirmed", "before").await;
    packed(&first, "before", SETTLE).await;
    first.stop("TERM");
    second.stop("TERM");

    for instance in [&first, &second] {
        set_inputs(instance, &["OrderConfirmed", "MoreConfirmed"]);
    }
    let restarted = Instant::now();
    first.launch();
    second.launch();
    confirm(&first, "MoreConfirmed", "on-the-new-input").await;
    confirm(&first, "OrderConfirmed", "on-the-old-input").await;
    packed(&first, "on-the-new-input", SESSION_TIMEOUT).await;
    eprintln!(
        "[two instances] restart to the new input's first event packed: {} ms \
         (session timeout {} ms)",
        restarted.elapsed().as_millis(),
        SESSION_TIMEOUT.as_millis()
    );
    for (name, instance) in [("host-0", &first), ("host-1", &second)] {
        for line in instance
            .logs()
            .lines()
            .filter(|l| l.contains("inputs changed"))
        {
            eprintln!("[two instances] {name}: {line}");
        }
    }
    packed(&first, "on-the-old-input", SETTLE).await;
    for instance in [&mut first, &mut second] {
        let status = instance.stop("TERM");
        assert!(status.success(), "a host did not stop cleanly: {status}");
    }
}
