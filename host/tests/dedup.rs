//! The deduplication contract, black-box: the same event (the same `ce_id`) written into a
//! stage's input by an outside producer, twice before a restart and once more after it, gives
//! exactly one output, in each processing mode; exactly-once also when the restarted host lost
//! its state dir (its processed ids are read back from their topic).

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::{SETTLE, TestPipeline, count_by, field, keep_stages, produce_raw, read_to_end};

/// Writes the `OrderConfirmed` event of `order` with event id `ce_id` into the stage's input.
async fn confirmed(pipeline: &TestPipeline, order: &str, ce_id: &str) {
    produce_raw(
        &pipeline.topic("OrderConfirmed"),
        order,
        common::confirmed(order).as_bytes(),
        &[("ce_id", ce_id), ("ce_type", "OrderConfirmed")],
    )
    .await;
}

/// Waits until `order` has been packed.
async fn packed(pipeline: &TestPipeline, order: &str) {
    let topic = pipeline.topic("OrderPickedAndPacked");
    common::wait_until(&format!("{order} packed"), SETTLE, || {
        let topic = topic.clone();
        async move {
            read_to_end(&topic, SETTLE)
                .await
                .iter()
                .any(|r| field(r, "order_id") == order)
        }
    })
    .await;
}

async fn an_event_written_three_times_is_processed_once(mode: &str, lose_state: bool) {
    let mut pipeline = TestPipeline::new(|config| {
        keep_stages(config, &["warehouse"]);
        common::stage_mut(config, "warehouse").insert("mode".into(), mode.into());
    });
    pipeline.start();
    confirmed(&pipeline, "twice", "outside-1").await;
    confirmed(&pipeline, "twice", "outside-1").await;
    // A barrier after the repeat, on the same partition (same key): once it is packed, the
    // repeat before it has been handled.
    confirmed(&pipeline, "twice", "barrier-1").await;
    packed(&pipeline, "twice").await;
    let topic = pipeline.topic("OrderPickedAndPacked");
    common::wait_until("the barrier packed", SETTLE, || {
        let topic = topic.clone();
        async move { read_to_end(&topic, SETTLE).await.len() >= 2 }
    })
    .await;
    assert!(pipeline.stop("TERM").success(), "{}", pipeline.logs());
    if lose_state {
        let config: toml::Table = std::fs::read_to_string(&pipeline.config_path)
            .unwrap()
            .parse()
            .unwrap();
        std::fs::remove_dir_all(config["state"]["dir"].as_str().unwrap()).unwrap();
    }

    // Across a restart: the same event once more, then another barrier.
    pipeline.start();
    confirmed(&pipeline, "twice", "outside-1").await;
    confirmed(&pipeline, "after", "barrier-2").await;
    confirmed(&pipeline, "twice", "barrier-3").await;
    packed(&pipeline, "after").await;
    common::wait_until("the second barrier packed", SETTLE, || {
        let topic = topic.clone();
        async move { read_to_end(&topic, SETTLE).await.len() >= 4 }
    })
    .await;
    assert!(pipeline.stop("TERM").success(), "{}", pipeline.logs());

    let out = read_to_end(&topic, SETTLE).await;
    let by_source: std::collections::BTreeMap<String, usize> = count_by(&out, |r| {
        r.headers.get("ce_id").cloned().unwrap_or_default()
    });
    // One output per distinct input id: outside-1, barrier-1, barrier-2, barrier-3.
    assert_eq!(out.len(), 4, "[{mode}] outputs: {by_source:?}");
    assert!(
        by_source.values().all(|n| *n == 1),
        "[{mode}] {by_source:?}"
    );
    let logs = pipeline.logs();
    assert!(
        logs.matches("repeat of an event already handled: dropped")
            .count()
            >= 2,
        "[{mode}] the repeats were not dropped as duplicates"
    );
    let dead = read_to_end(&pipeline.topic("DeadLetterQueue"), SETTLE).await;
    assert!(dead.is_empty(), "[{mode}] dead letters: {dead:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_an_event_written_three_times_is_processed_once() {
    an_event_written_three_times_is_processed_once("exactly_once", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_a_repeat_after_the_state_dir_was_lost_is_still_dropped() {
    an_event_written_three_times_is_processed_once("exactly_once", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_an_event_written_three_times_is_processed_once() {
    an_event_written_three_times_is_processed_once("at_least_once", false).await;
}
