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

/// Settings of one stage's consumer: offsets are stored by the host only after the input's
/// outputs are acknowledged, and committed in the background (and on shutdown and revoke).
pub fn consumer_config(kafka: &KafkaConfig, group: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.brokers)
        .set("client.id", format!("stagehost-{group}"))
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("fetch.wait.max.ms", "10");
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
