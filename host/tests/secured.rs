//! The order pipeline against a broker whose clients must use SASL_SSL (SCRAM-SHA-512 over TLS,
//! the certificates made by openssl when the broker starts), configured only through
//! `[kafka]` with the password taken from the environment (`${STAGEHOST_TEST_SASL_PASSWORD}`):
//!
//! - a wrong password ends the host's start with one clear error naming authentication;
//! - an order travels through every stage; after a restart the stock stage's keyed state is
//!   restored (a product sold out before the restart stays sold out) and the exactly-once
//!   ingress reloads its answers (a repeated POST gets the first answer and publishes
//!   nothing);
//! - `stagehost tail`, `stagehost dlq list` and `stagehost dlq replay` work with the same
//!   configuration.
//!
//! The test starts its own broker (`scripts/kafka.sh` with `KAFKA_SASL_PORT`, in a folder and on
//! ports of its own: SECURED_KAFKA_PORT, default 19292, for PLAINTEXT, the next for the
//! controller and the one after for SASL_SSL). The test itself reads the topics through the
//! PLAINTEXT listener; the host is given only the SASL_SSL one.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{OwnBroker, Record, TestPipeline, field, read_to_end_at, stage_mut};
use rdkafka::ClientConfig;
use rdkafka::producer::FutureProducer;

const USER: &str = "stagehost-test";
const PASSWORD: &str = "scram-test-password";
/// The environment variable the configuration takes the password from.
const PASSWORD_VAR: &str = "STAGEHOST_TEST_SASL_PASSWORD";
const TIMEOUT: Duration = Duration::from_secs(90);
/// How long a host with a wrong password may take to give up (plugins load first).
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(60);

/// A broker of this test alone with a SASL_SSL listener, stopped (and its data and
/// certificates deleted) when dropped.
struct Broker(OwnBroker);

impl Broker {
    fn start() -> Self {
        let port: u16 = std::env::var("SECURED_KAFKA_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(19292);
        let sasl = [
            ("KAFKA_SASL_PORT", (port + 2).to_string()),
            ("KAFKA_SASL_USER", USER.to_string()),
            ("KAFKA_SASL_PASSWORD", PASSWORD.to_string()),
        ];
        Broker(OwnBroker::start(
            "secured",
            "SECURED_KAFKA_PORT",
            port,
            sasl.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        ))
    }

    /// The PLAINTEXT listener, for the test's own reads and writes.
    fn plain(&self) -> String {
        self.0.address()
    }

    /// The SASL_SSL listener, the only one the host is told about.
    fn secured(&self) -> String {
        format!("127.0.0.1:{}", self.0.port + 2)
    }

    /// The CA that signed the broker's certificate.
    fn ca(&self) -> PathBuf {
        self.0.home.join("tls/ca.pem")
    }
}

/// The shipped pipeline on the SASL_SSL listener, with `password` in the environment. The
/// security settings are written both ways TOML allows: a quoted dotted name and nested
/// tables (`sasl.mechanism = …` in `[kafka]` is the table `sasl`).
fn pipeline(broker: &Broker, password: &str) -> TestPipeline {
    let (brokers, ca) = (broker.secured(), broker.ca().display().to_string());
    let mut pipeline = TestPipeline::new(move |config| {
        let kafka = config["kafka"].as_table_mut().unwrap();
        kafka.insert("brokers".into(), brokers.into());
        kafka.insert("security.protocol".into(), "SASL_SSL".into());
        let mut sasl = toml::Table::new();
        sasl.insert("mechanism".into(), "SCRAM-SHA-512".into());
        sasl.insert("username".into(), USER.into());
        sasl.insert("password".into(), format!("${{{PASSWORD_VAR}}}").into());
        kafka.insert("sasl".into(), sasl.into());
        kafka.insert("ssl.ca.location".into(), ca.into());
        stage_mut(config, "stock")["config"]["catalog"]
            .as_table_mut()
            .unwrap()
            .insert("scarce-1".into(), 2.into());
    });
    pipeline.env = vec![(PASSWORD_VAR.into(), password.into())];
    pipeline
}

/// Runs the `stagehost` binary with the password in its environment; whether it succeeded,
/// stdout and stderr.
fn stagehost(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_stagehost"))
        .args(args)
        .env_remove("KAFKA_BROKERS")
        .env_remove("STAGEHOST_CONFIG")
        .env(PASSWORD_VAR, PASSWORD)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Reads `topic` through the PLAINTEXT listener until `done` holds; returns the records.
async fn wait_for(
    broker: &Broker,
    topic: &str,
    what: &str,
    done: impl Fn(&[Record]) -> bool,
) -> Vec<Record> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let records = read_to_end_at(&broker.plain(), topic, common::SETTLE).await;
        if done(&records) {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {TIMEOUT:?} waiting for {what} in {topic} ({} records there)",
            records.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn of_order<'a>(records: &'a [Record], order: &str) -> Vec<&'a Record> {
    records
        .iter()
        .filter(|r| field(r, "order_id") == order)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_pipeline_runs_over_sasl_ssl() {
    let broker = Broker::start();

    // A wrong password: the host gives up at start with one error that names authentication.
    let refused = pipeline(&broker, "not-the-password");
    let started = Instant::now();
    let log = refused.dir.path().join("refused.log");
    let mut host = Command::new(env!("CARGO_BIN_EXE_stagehost"))
        .args(["run", "--config"])
        .arg(&refused.config_path)
        .env_remove("KAFKA_BROKERS")
        .env(PASSWORD_VAR, "not-the-password")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = host.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > REFUSAL_TIMEOUT {
            host.kill().ok();
            panic!(
                "a host with a wrong password still runs after {REFUSAL_TIMEOUT:?}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert!(
        errors[0].contains("refused the credentials (SASL authentication failed)")
            && errors[0].contains(&broker.secured())
            && !errors[0].contains("not-the-password"),
        "{stderr}"
    );
    eprintln!(
        "secured: a wrong password ended the start after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The right one: an order travels through every stage.
    let mut pipeline = pipeline(&broker, PASSWORD);
    pipeline.start();
    let delivered_topic = pipeline.topic("NotificationDelivered");
    let ingress_topic = pipeline.topic("OrderReceived");
    let first_body = common::order("sasl-1", "scarce-1", 2);
    let first = pipeline.post_order(&first_body).await;
    assert_eq!(first.0, 202, "{}", first.1);
    wait_for(
        &broker,
        &delivered_topic,
        "the three deliveries of sasl-1",
        |r| of_order(r, "sasl-1").len() >= 3,
    )
    .await;

    // A restart: the stock stage restores its keyed state from its changelog (scarce-1 is
    // sold out, so the next order of it is rejected; the catalog alone would confirm it), and
    // the ingress reloads its answers (the repeat gets the first answer).
    let status = pipeline.stop("TERM");
    assert!(status.success(), "the host stopped cleanly: {status}");
    pipeline.start();
    let repeat = pipeline.post_order(&first_body).await;
    assert_eq!(
        repeat, first,
        "a repeat after the restart gets the first answer"
    );
    let second = pipeline
        .post_order(&common::order("sasl-2", "scarce-1", 1))
        .await;
    assert_eq!(second.0, 202, "{}", second.1);
    let delivered = wait_for(&broker, &delivered_topic, "the outcome of sasl-2", |r| {
        !of_order(r, "sasl-2").is_empty()
    })
    .await;
    let outcome = of_order(&delivered, "sasl-2");
    assert_eq!(
        outcome[0].value["kind"], "order_rejected",
        "scarce-1 was sold out before the restart: {outcome:#?}"
    );
    let received = read_to_end_at(&broker.plain(), &ingress_topic, common::SETTLE).await;
    assert_eq!(
        of_order(&received, "sasl-1").len(),
        1,
        "the repeat published nothing: {received:#?}"
    );

    // `stagehost tail` with the pipeline's configuration.
    let config = pipeline.config_path.display().to_string();
    let (ok, out, err) = tokio::task::block_in_place(|| {
        stagehost(&[
            "tail",
            "--config",
            &config,
            &ingress_topic,
            "--from-beginning",
            "--max",
            "2",
            "--idle-timeout",
            "30s",
        ])
    });
    assert!(ok, "{err}");
    assert!(
        out.contains("sasl-1") && out.contains("sasl-2") && out.lines().count() == 2,
        "{out}"
    );

    // A record the warehouse cannot read becomes a dead letter; list it and replay it.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.plain())
        .create()
        .unwrap();
    common::send(
        &producer,
        &pipeline.topic("OrderConfirmed"),
        "broken-1",
        b"not json",
        &[("ce_id", "broken-1"), ("ce_type", "OrderConfirmed")],
    )
    .await;
    let dead_topic = pipeline.topic("DeadLetterQueue");
    let dead = wait_for(&broker, &dead_topic, "the dead letter of broken-1", |r| {
        !r.is_empty()
    })
    .await;
    let letter = dead[0].ce_id().to_string();
    let (ok, out, err) = tokio::task::block_in_place(|| {
        stagehost(&["dlq", "list", "--config", &config, "--stage", "warehouse"])
    });
    assert!(ok, "{err}");
    assert!(out.contains("1 dead letter(s)"), "{out}");
    let replay = || {
        tokio::task::block_in_place(|| {
            stagehost(&[
                "dlq",
                "replay",
                "--config",
                &config,
                "--stage",
                "warehouse",
                "--id",
                &letter,
            ])
        })
    };
    let (ok, out, err) = replay();
    assert!(ok, "{err}");
    assert!(out.contains("1 replayed, 0 already replayed"), "{out}");
    let (ok, out, err) = replay();
    assert!(ok, "{err}");
    assert!(out.contains("0 replayed, 1 already replayed"), "{out}");

    let status = pipeline.stop("TERM");
    assert!(status.success(), "the host stopped cleanly: {status}");
    let delivered = read_to_end_at(&broker.plain(), &delivered_topic, common::SETTLE).await;
    let per_order: BTreeMap<String, usize> = common::count_by(&delivered, |r| field(r, "order_id"));
    assert_eq!(per_order.get("sasl-1"), Some(&3), "{delivered:#?}");
    assert_eq!(per_order.get("sasl-2"), Some(&1), "{delivered:#?}");
}
