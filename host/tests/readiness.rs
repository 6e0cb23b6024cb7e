//! Readiness that tells the truth: once `/readyz` says ready, the read models answer from the
//! whole of their topics, not from a half-read one. (That `/readyz` turns unready, naming the
//! parts, during broker outages and freezes is checked in `faults.rs`.)

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::TestPipeline;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

/// Keys and updates per key written before the host starts.
const KEYS: usize = 10_000;
const UPDATES: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_ready_the_read_models_answer_from_their_whole_topic() {
    let mut pipeline = TestPipeline::new(|_| {});
    // The host creates its topics at start; start it once to have them, then stop it and
    // write a long history of order statuses while it is down.
    pipeline.start();
    assert!(pipeline.stop("TERM").success(), "{}", pipeline.logs());
    let topic = pipeline.topic("OrderStatus");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", common::brokers())
        .set("linger.ms", "20")
        .create()
        .unwrap();
    for update in 0..UPDATES {
        // One update of every key at a time: the producer's local queue holds fewer records
        // than the whole history.
        let mut sends = Vec::with_capacity(KEYS);
        for key in 0..KEYS {
            let value = serde_json::json!({
                "order_id": format!("ready-{key}"),
                "status": format!("update-{update}"),
            })
            .to_string();
            let key = format!("ready-{key}");
            sends.push(
                producer
                    .send_result(FutureRecord::to(&topic).key(&key).payload(&value))
                    .map_err(|(error, _)| error)
                    .unwrap(),
            );
        }
        for send in sends {
            send.await.unwrap().unwrap();
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    // `start` returns as soon as /readyz answers 200: from then on every key must show its
    // last update.
    pipeline.start();
    for key in [0, KEYS / 2, KEYS - 1] {
        let (status, body) = pipeline.get(&format!("/orders/ready-{key}")).await;
        assert_eq!(
            status, 200,
            "ready, but order ready-{key} is unknown: {body}"
        );
        assert_eq!(
            body["status"],
            format!("update-{}", UPDATES - 1),
            "ready, but the view of ready-{key} is not the latest"
        );
    }
    let logs = pipeline.logs();
    assert!(logs.contains("view restored"), "{logs}");
    assert!(pipeline.stop("TERM").success());
}
