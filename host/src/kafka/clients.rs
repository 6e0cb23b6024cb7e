//! librdkafka client settings: the host's defaults, then the user's overrides from pipeline.toml.

use rdkafka::ClientConfig;

use crate::config::KafkaConfig;

/// Settings of the one shared producer: idempotent, `acks=all`, small linger for batching.
pub fn producer_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.brokers)
        .set("client.id", "stagehost")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", "60000");
    for (key, value) in &kafka.producer {
        config.set(key, value);
    }
    config
}

/// Settings of a stage's own transactional producer; `transactional_id` must be stable across
/// restarts of the same instance so the new incarnation fences the old one.
pub fn transactional_producer_config(kafka: &KafkaConfig, transactional_id: &str) -> ClientConfig {
    let timeout_ms = kafka.transaction_timeout.as_millis();
    let mut config = producer_config(kafka);
    config
        .set("transactional.id", transactional_id)
        .set("transaction.timeout.ms", timeout_ms.to_string())
        .set("message.timeout.ms", timeout_ms.to_string())
        // The coordinator answers CONCURRENT_TRANSACTIONS while the previous commit completes;
        // librdkafka's default 100 ms back-off would add that to every transaction.
        .set("retry.backoff.ms", "5")
        .set("retry.backoff.max.ms", "100");
    config
}

/// Settings of one stage's consumer. At-least-once: offsets are stored by the host only after
/// the input's outputs are acknowledged and committed in the background (and on shutdown and
/// revoke). Exactly-once: offsets are committed only inside the stage's transactions.
/// `instance` makes the consumer a static member of its group (`group.instance.id`): a
/// restarted instance gets its partitions back at once instead of after a rebalance.
pub fn consumer_config(
    kafka: &KafkaConfig,
    group: &str,
    instance: &str,
    exactly_once: bool,
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.brokers)
        .set("client.id", format!("stagehost-{group}"))
        .set("group.id", group)
        .set("group.instance.id", format!("{group}.{instance}"))
        .set(
            "enable.auto.commit",
            if exactly_once { "false" } else { "true" },
        )
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("partition.assignment.strategy", "cooperative-sticky")
        // The broker answers a fetch as soon as data arrives (fetch.min.bytes=1), so this only
        // bounds how often an idle consumer asks again: at 10 ms the idle fetches of a dozen
        // consumers cost CPU that busy stages lacked (per-hop p99 at 100 orders/s: 33–55 ms
        // at 10 ms, 22–26 ms at 100 ms).
        .set("fetch.wait.max.ms", "100")
        // librdkafka prefetches up to 64 MiB per consumer by default; with a consumer per
        // stage that is most of the host's memory on a backlog. 8 MiB is still ~20,000
        // events of a few hundred bytes ahead.
        .set("queued.max.messages.kbytes", "8192");
    for (key, value) in &kafka.consumer {
        config.set(key, value);
    }
    config
}

/// Settings of the admin client and of one-off tools.
pub fn admin_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    config
}
