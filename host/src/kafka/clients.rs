//! The one front door to Kafka: every client the host and its commands create (stage consumers
//! and producers, transactional producers, restores, read models, answers, dead letters,
//! admin, `tail`, `load`) is configured here from `[kafka]`.
//!
//! Each client's settings are layered, later layers winning: the host's defaults for the
//! client, then `[kafka]`'s librdkafka properties (security, TLS, SASL, …), then the role's
//! own table (`[kafka.producer]`, `[kafka.consumer]`, `[kafka.admin]`), then what the host
//! must decide itself (bootstrap servers, group, static member and transactional ids).

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::producer::FutureProducer;

use crate::config::{self, KafkaConfig, KafkaSettings, Overrides};

/// How long a long-lived follower's fetch waits for data (see [`KafkaClients::follower`]).
const FOLLOWER_FETCH_WAIT_MS: &str = "500";

/// Where a command-line tool finds Kafka when given neither a configuration nor brokers.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

/// The kinds of client, each with its own table of overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Every producer (`[kafka.producer]`).
    Producer,
    /// Every consumer and reader (`[kafka.consumer]`).
    Consumer,
    /// The admin client and metadata look-ups (`[kafka.admin]`).
    Admin,
}

/// Builds every Kafka client's settings from `[kafka]`. Cheap to clone; build it once from
/// the configuration and hand it to whatever creates clients.
#[derive(Clone)]
pub struct KafkaClients(Arc<Settings>);

/// What [`KafkaClients`] is built from.
struct Settings {
    /// `kafka.brokers`, also named in error messages.
    brokers: String,
    /// Bounds a stage's open transaction (and so its producer's message timeout).
    transaction_timeout: Duration,
    /// `[kafka]`'s librdkafka properties, for every client.
    common: KafkaSettings,
    /// `[kafka.producer]`.
    producer: KafkaSettings,
    /// `[kafka.consumer]`.
    consumer: KafkaSettings,
    /// `[kafka.admin]`.
    admin: KafkaSettings,
}

/// What every producer of the host starts from: idempotent, `acks=all`, no linger, lz4.
///
/// `linger.ms = 0` adapts to load by itself: a record goes out as soon as the producer's
/// thread sees it, and while requests are in flight (up to five per broker) the records that
/// arrive meanwhile wait and go out together in the next one, so batches grow with the load.
/// A fixed 2 ms linger was most of an at-least-once hop at low load (`make bench` row 8 at
/// 50 orders/s, one sitting: per-hop p50 10/3/4/3 ms → 3/1/2/1 ms, `POST` → packed p50
/// 18.8 → 7.7 ms) and made no measurable difference to a backlog drain (row 4). `[kafka.producer]
/// linger.ms` sets another value.
const PRODUCER_DEFAULTS: [(&str, &str); 5] = [
    ("client.id", "stagehost"),
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("linger.ms", "0"),
    ("compression.type", "lz4"),
];

impl KafkaClients {
    /// The clients of a pipeline's `[kafka]` section (its `${VAR}`s already filled by
    /// [`crate::config::load`]).
    pub fn new(kafka: &KafkaConfig) -> Self {
        Self(Arc::new(Settings {
            brokers: kafka.brokers.clone(),
            transaction_timeout: kafka.transaction_timeout,
            common: kafka.settings.clone(),
            producer: kafka.producer.clone(),
            consumer: kafka.consumer.clone(),
            admin: kafka.admin.clone(),
        }))
    }

    /// Clients of a cluster that needs nothing but its address (no `[kafka]` properties).
    pub fn plain(brokers: &str) -> Self {
        Self(Arc::new(Settings {
            brokers: brokers.to_string(),
            transaction_timeout: Duration::from_secs(60),
            common: KafkaSettings::default(),
            producer: KafkaSettings::default(),
            consumer: KafkaSettings::default(),
            admin: KafkaSettings::default(),
        }))
    }

    /// The clients of a command-line tool (`tail`, `load`): the `[kafka]` section of the
    /// pipeline configuration at `config` when given, its brokers replaced by `brokers` when
    /// that is given too; otherwise a plain cluster at `brokers` (or [`DEFAULT_BROKERS`]).
    pub fn for_tool(config: Option<&Path>, brokers: Option<&str>) -> anyhow::Result<Self> {
        match config {
            Some(path) => {
                let mut pipeline = config::load(path, &Overrides::from_env())?;
                if let Some(brokers) = brokers {
                    pipeline.kafka.brokers = brokers.to_string();
                }
                Ok(Self::new(&pipeline.kafka))
            }
            None => Ok(Self::plain(brokers.unwrap_or(DEFAULT_BROKERS))),
        }
    }

    /// The bootstrap servers, for messages.
    pub fn brokers(&self) -> &str {
        &self.0.brokers
    }

    /// Settings of a client of `role` with no defaults of its own: `[kafka]`'s properties,
    /// the role's, and the bootstrap servers.
    pub fn client(&self, role: Role) -> ClientConfig {
        self.layered(role, &[])
    }

    /// Settings of the one shared producer: idempotent, `acks=all`, no linger (see
    /// [`PRODUCER_DEFAULTS`]).
    pub fn producer(&self) -> ClientConfig {
        let mut defaults = PRODUCER_DEFAULTS.to_vec();
        defaults.push(("message.timeout.ms", "60000"));
        self.layered(Role::Producer, &defaults)
    }

    /// The one shared producer (see [`KafkaClients::producer`]).
    pub fn shared_producer(&self) -> anyhow::Result<FutureProducer> {
        self.producer()
            .create()
            .context("cannot create the Kafka producer")
    }

    /// Settings of a stage's own transactional producer; `transactional_id` must be stable
    /// across restarts of the same instance so the new incarnation fences the old one.
    pub fn transactional_producer(&self, transactional_id: &str) -> ClientConfig {
        let timeout_ms = self.0.transaction_timeout.as_millis().to_string();
        let mut defaults = PRODUCER_DEFAULTS.to_vec();
        defaults.extend([
            ("transaction.timeout.ms", timeout_ms.as_str()),
            ("message.timeout.ms", timeout_ms.as_str()),
            // The coordinator answers CONCURRENT_TRANSACTIONS while the previous commit
            // completes; librdkafka's default 100 ms back-off would add that to every
            // transaction.
            ("retry.backoff.ms", "5"),
            ("retry.backoff.max.ms", "100"),
        ]);
        let mut config = self.layered(Role::Producer, &defaults);
        config.set("transactional.id", transactional_id);
        config
    }

    /// Settings of one stage's consumer. Offsets are stored by the host only after the input's
    /// outputs are safe; with `auto_commit` they are committed in the background (and on
    /// shutdown and revoke), without it only by the host (inside a stage's transactions). `instance` makes the consumer a static member of its group
    /// (`group.instance.id`): a restarted instance gets its partitions back at once instead
    /// of after a rebalance.
    pub fn consumer(&self, group: &str, instance: &str, auto_commit: bool) -> ClientConfig {
        let client_id = format!("stagehost-{group}");
        let mut config = self.layered(
            Role::Consumer,
            &[
                ("client.id", &client_id),
                (
                    "enable.auto.commit",
                    if auto_commit { "true" } else { "false" },
                ),
                ("auto.commit.interval.ms", "1000"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "earliest"),
                ("isolation.level", "read_committed"),
                ("session.timeout.ms", "10000"),
                ("heartbeat.interval.ms", "1000"),
                // Eager, not cooperative-sticky: a cooperative rebalance moves a partition in
                // two rounds, and a stage rebuilt between them (its consumer replaced by a
                // static member with the same id, whose rejoin returns its cached assignment
                // without a new round) left the moved partition owned by nobody, for good
                // (faults test `two_instances_survive_…`). With static membership, restarts
                // do not rebalance, so eager rounds are rare.
                ("partition.assignment.strategy", "range"),
                // The broker answers a fetch as soon as data arrives (fetch.min.bytes=1), so
                // this only bounds how often an idle consumer asks again: at 10 ms the idle
                // fetches of a dozen consumers cost CPU that busy stages lacked (per-hop p99
                // at 100 requests/s through the shipped pipeline: 33–55 ms at 10 ms, 22–26 ms at
                // 100 ms); at 500 ms instead of 100 the idle shipped pipeline's broker threads
                // use a tenth of the CPU.
                ("fetch.wait.max.ms", "500"),
                // librdkafka prefetches up to 64 MiB per consumer by default; with a consumer
                // per stage that is most of the host's memory on a backlog. 8 MiB is still
                // ~20,000 events of a few hundred bytes ahead.
                ("queued.max.messages.kbytes", "8192"),
            ],
        );
        config
            .set("group.id", group)
            .set("group.instance.id", format!("{group}.{instance}"));
        config
    }

    /// Settings of a consumer that reads assigned partitions by hand (never subscribing,
    /// never committing) and sees only committed records; `group` names it to the broker.
    pub fn reader(&self, group: &str) -> ClientConfig {
        self.reader_waiting(group, "100")
    }

    /// Settings of a [`KafkaClients::reader`] that follows its partitions for as long as the
    /// host runs (a view, the ingress's answers log): like a stage's consumer, it waits up to
    /// 500 ms for data instead of 100 ms.
    ///
    /// The broker answers a fetch as soon as records arrive (`fetch.min.bytes = 1`), so this
    /// only bounds how often a follower with nothing to read asks again: at 100 ms, the four
    /// answers-log readers and two views of the idle shipped pipeline made 60 fetches a second,
    /// each waking a librdkafka broker thread of the host and the broker.
    pub fn follower(&self, group: &str) -> ClientConfig {
        self.reader_waiting(group, FOLLOWER_FETCH_WAIT_MS)
    }

    /// A reader's settings whose fetches wait up to `fetch_wait_ms` for data (unless
    /// `[kafka]` or `[kafka.consumer]` set `fetch.wait.max.ms`).
    fn reader_waiting(&self, group: &str, fetch_wait_ms: &str) -> ClientConfig {
        let mut config = self.layered(
            Role::Consumer,
            &[
                ("enable.auto.commit", "false"),
                ("isolation.level", "read_committed"),
                ("enable.partition.eof", "false"),
                ("fetch.wait.max.ms", fetch_wait_ms),
            ],
        );
        config.set("group.id", group);
        config
    }

    /// Settings of the admin client.
    pub fn admin(&self) -> ClientConfig {
        self.client(Role::Admin)
    }

    /// The host's `defaults`, then `[kafka]`, then the role's table, then the brokers.
    fn layered(&self, role: Role, defaults: &[(&str, &str)]) -> ClientConfig {
        let settings = &self.0;
        let mut config = ClientConfig::new();
        for (name, value) in defaults {
            config.set(*name, *value);
        }
        let role_settings = match role {
            Role::Producer => &settings.producer,
            Role::Consumer => &settings.consumer,
            Role::Admin => &settings.admin,
        };
        for (name, value) in settings.common.iter().chain(role_settings.iter()) {
            config.set(name, value);
        }
        config.set("bootstrap.servers", &settings.brokers);
        config
    }
}

impl fmt::Debug for KafkaClients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let settings = &self.0;
        f.debug_struct("KafkaClients")
            .field("brokers", &settings.brokers)
            .field("common", &settings.common)
            .field("producer", &settings.producer)
            .field("consumer", &settings.consumer)
            .field("admin", &settings.admin)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clients() -> KafkaClients {
        let kafka: KafkaConfig = toml::from_str(
            r#"
            brokers = "b:9093"
            security.protocol = "SASL_SSL"
            sasl.password = "hunter2"
            linger.ms = 7
            [producer]
            linger.ms = 20
            [consumer]
            session.timeout.ms = 6000
            group.id = "not-mine"
            [admin]
            request.timeout.ms = 1234
            "#,
        )
        .unwrap();
        KafkaClients::new(&kafka)
    }

    #[test]
    fn every_role_gets_the_common_properties_and_the_brokers() {
        let clients = clients();
        for config in [
            clients.producer(),
            clients.transactional_producer("t"),
            clients.consumer("g", "i", true),
            clients.reader("r"),
            clients.admin(),
            clients.client(Role::Consumer),
        ] {
            assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));
            assert_eq!(config.get("sasl.password"), Some("hunter2"));
            assert_eq!(config.get("bootstrap.servers"), Some("b:9093"));
        }
    }

    #[test]
    fn role_tables_win_over_common_properties_and_defaults() {
        let clients = clients();
        assert_eq!(clients.producer().get("linger.ms"), Some("20"));
        assert_eq!(
            clients.transactional_producer("t").get("linger.ms"),
            Some("20")
        );
        assert_eq!(
            clients.consumer("g", "i", false).get("linger.ms"),
            Some("7")
        );
        assert_eq!(
            clients.consumer("g", "i", false).get("session.timeout.ms"),
            Some("6000")
        );
        assert_eq!(clients.admin().get("request.timeout.ms"), Some("1234"));
        assert_eq!(clients.producer().get("request.timeout.ms"), None);
    }

    #[test]
    fn the_host_decides_ids() {
        let clients = clients();
        let consumer = clients.consumer("g", "i", false);
        assert_eq!(consumer.get("group.id"), Some("g"));
        assert_eq!(consumer.get("group.instance.id"), Some("g.i"));
        assert_eq!(consumer.get("enable.auto.commit"), Some("false"));
        assert_eq!(
            clients
                .transactional_producer("g.i")
                .get("transactional.id"),
            Some("g.i")
        );
    }

    #[test]
    fn followers_wait_longer_for_data_than_readers_unless_configured() {
        let plain = KafkaClients::plain("b:9092");
        assert_eq!(plain.reader("r").get("fetch.wait.max.ms"), Some("100"));
        assert_eq!(plain.follower("f").get("fetch.wait.max.ms"), Some("500"));
        assert_eq!(plain.follower("f").get("group.id"), Some("f"));
        let kafka: KafkaConfig =
            toml::from_str("brokers = \"b:9092\"\n[consumer]\nfetch.wait.max.ms = 50\n").unwrap();
        let configured = KafkaClients::new(&kafka);
        assert_eq!(
            configured.follower("f").get("fetch.wait.max.ms"),
            Some("50")
        );
    }

    /// The patched polling thread of a `FutureProducer` waits without a timeout: a delivery
    /// report must still wake it (the send's future resolves), and dropping the producer must
    /// wake it too, at once (the drop joins the thread: without the wake-up it waited for
    /// whatever event came next, seconds later with no broker).
    #[tokio::test]
    async fn a_producers_polling_thread_wakes_for_a_report_and_for_its_drop() {
        use rdkafka::producer::FutureRecord;
        // Nothing listens there: the record times out, and its report says so.
        let producer: FutureProducer = KafkaClients::plain("127.0.0.1:1")
            .producer()
            .set("message.timeout.ms", "200")
            .create()
            .unwrap();
        let delivery = producer.send_result(FutureRecord::<str, str>::to("t").payload("p"));
        let report = tokio::time::timeout(Duration::from_secs(30), delivery.unwrap())
            .await
            .expect("the delivery report woke the polling thread");
        assert!(matches!(report, Ok(Err(_))), "{report:?}");
        let (done, dropped) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(producer);
            done.send(()).ok();
        });
        dropped
            .recv_timeout(Duration::from_secs(2))
            .expect("dropping the producer woke and ended its polling thread");
    }

    #[test]
    fn debug_output_hides_secrets() {
        let shown = format!("{:?}", clients());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("SASL_SSL"), "{shown}");
    }
}
