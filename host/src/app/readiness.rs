//! The readiness watch: whether Kafka answers and every declared topic exists, checked every
//! [`READINESS_EVERY`]; the `ready` log line with the host's start-up time.

use std::time::Duration;

use rdkafka::producer::FutureProducer;
use tokio::sync::watch;

use super::declared::DeclaredTopics;
use crate::health::Health;
use crate::kafka::existing_topics;

/// How often readiness re-checks that Kafka answers.
const READINESS_EVERY: Duration = Duration::from_secs(2);

/// Reports whether Kafka answers (part `kafka`) and whether every declared topic exists
/// (see [`DeclaredTopics`]), every [`READINESS_EVERY`]; logs once when the whole host is first
/// ready, with its start-up time.
pub(super) async fn watch_readiness(
    producer: FutureProducer,
    mut topics: DeclaredTopics,
    health: Health,
    mut stop: watch::Receiver<bool>,
    started: std::time::Instant,
) {
    let kafka = health.reporter("kafka", "not connected yet");
    let mut first = true;
    let mut last_check: Option<std::time::Instant> = None;
    loop {
        if last_check.is_none_or(|at| at.elapsed() >= READINESS_EVERY) {
            last_check = Some(std::time::Instant::now());
            let client = producer.clone();
            let existing = tokio::task::spawn_blocking(move || {
                existing_topics(&client, Duration::from_secs(2))
            })
            .await
            .unwrap_or(None);
            match existing {
                Some(existing) => {
                    kafka.ok();
                    topics.check(&existing).await;
                }
                None => kafka.unready("the brokers do not answer a metadata request"),
            }
        }
        if first && health.ready() {
            first = false;
            tracing::info!(startup_ms = started.elapsed().as_millis() as u64, "ready");
        }
        let pause = if first {
            Duration::from_millis(50)
        } else {
            READINESS_EVERY
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => break,
        }
    }
    kafka.unready("stopping");
}
