//! Kafka hiccups under load, against a broker of this test's own (it is stopped, restarted and
//! kept down): a 3–5 s broker restart, the broker down longer than the transaction timeout, a
//! host frozen (SIGSTOP) past the group session timeout while a backlog lands, with one host
//! instance and with two; and the same order posted to two instances. Afterwards every
//! accepted order has exactly one outcome (0 lost, 0 duplicated), the hosts serve again
//! without a restart, and `/readyz` was unready during the fault.
//!
//! Each test starts its own broker (`scripts/kafka.sh` with a folder and ports of its own:
//! FAULTS_KAFKA_PORT, default 19392, and the port after it for the controller) and the tests
//! run one at a time. Outcomes are counted by reading the topics `read_committed` up to the
//! end offsets taken after the hosts stopped.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use common::flow::{
    ReadyWatch, SETTLE, assert_exactly_once, outcomes, post_orders, stocked, wait_for_outcomes,
};
use common::{OwnBroker, TestPipeline, read_to_end_at, wait_until};
use rdkafka::ClientConfig;
use rdkafka::producer::FutureProducer;

/// The group session timeout the hosts use (`session.timeout.ms` of pipeline.toml's defaults).
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Only one test at a time: each owns the broker it stops and starts.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A broker of this test alone, stopped (and its data deleted) when dropped.
struct Broker(OwnBroker);

impl Broker {
    fn start() -> Self {
        Broker(OwnBroker::start(
            "faults",
            "FAULTS_KAFKA_PORT",
            19392,
            Vec::new(),
        ))
    }

    /// The bootstrap address.
    fn address(&self) -> String {
        self.0.address()
    }

    /// Runs `scripts/kafka.sh <command>` for this broker; whether it succeeded.
    fn script(&self, command: &str) -> bool {
        self.0.script(command)
    }

    /// Stops the broker, keeps it down for `down`, starts it again (data kept).
    async fn outage(&self, down: Duration) {
        let started = Instant::now();
        tokio::task::block_in_place(|| assert!(self.script("stop"), "broker stop failed"));
        // The fault itself lasts this long (not a wait for a condition).
        tokio::time::sleep(down).await;
        tokio::task::block_in_place(|| assert!(self.script("start"), "broker start failed"));
        eprintln!(
            "faults: broker down for {:.1}s in all",
            started.elapsed().as_secs_f64()
        );
    }
}

/// One producer for writing records straight into topics of `broker`.
fn producer(broker: &Broker) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("linger.ms", "5")
        .create()
        .unwrap()
}

/// The shipped pipeline on this test's broker, every stage in its default (exactly-once) mode,
/// with a short request timeout and transaction timeout so faults outlast them.
fn pipeline(broker: &Broker) -> TestPipeline {
    let brokers = broker.address();
    TestPipeline::new(move |config| {
        let kafka = config["kafka"].as_table_mut().unwrap();
        kafka.insert("brokers".into(), brokers.into());
        kafka.insert("transaction_timeout".into(), "10s".into());
        let http = config["http"].as_table_mut().unwrap();
        http.insert("request_timeout".into(), "3s".into());
        // Enough stock that most orders ship; a few products run short so some are rejected.
        stocked(config);
    })
}

/// One host under 50 orders/s; `fault` runs a few seconds into the load.
async fn one_host_under(broker: &Broker, name: &str, down: Duration) {
    let mut host = pipeline(broker);
    host.start();
    let watch = ReadyWatch::start(&host.http);
    let load = tokio::spawn(post_orders(
        name.to_string(),
        1_000,
        50.0,
        vec![host.http.clone()],
    ));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let fault_started = Instant::now();
    broker.outage(down).await;
    let load = load.await.unwrap();
    let heal = wait_for_outcomes(&broker.address(), &[&host], &load.accepted).await;
    let (unready, problems) = watch.finish();
    // Serving again without a restart: a new order after the fault completes.
    let after = format!("{name}-after");
    let (status, _) = host.post_order(&common::order(&after, "fp-1", 1)).await;
    assert_eq!(
        status, 202,
        "the host does not accept orders after the fault"
    );
    let mut accepted = load.accepted.clone();
    accepted.insert(after);
    wait_for_outcomes(&broker.address(), &[&host], &accepted).await;
    let stopped = host.stop("TERM");
    assert!(
        stopped.success(),
        "the host did not stop cleanly: {stopped}\n{}",
        host.logs()
    );
    eprintln!(
        "faults[{name}]: /readyz unready {unready} times (parts {problems:?}); 503 answers {} ({} with Retry-After); \
         slowest answer {:.1}s; fault + settle {:.1}s",
        load.unavailable,
        load.unavailable_with_retry_after,
        load.slowest_answer.as_secs_f64(),
        fault_started.elapsed().as_secs_f64()
    );
    assert!(
        unready > 0,
        "{name}: /readyz never said unready during the fault"
    );
    assert_eq!(
        load.unavailable, load.unavailable_with_retry_after,
        "{name}: a 503 without Retry-After"
    );
    let outcomes = outcomes(&broker.address(), &host).await;
    assert_exactly_once(name, &accepted, &outcomes, heal);
    assert!(
        !host.logs().contains("panicked"),
        "{name}: the host panicked:\n{}",
        host.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_restart_of_a_few_seconds_under_load_loses_and_repeats_nothing() {
    let _serial = SERIAL.lock().await;
    let broker = Broker::start();
    one_host_under(&broker, "restart", Duration::from_secs(4)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_broker_down_longer_than_the_transaction_timeout_loses_and_repeats_nothing() {
    let _serial = SERIAL.lock().await;
    let broker = Broker::start();
    // The pipeline's transaction timeout is 10 s and its request timeout 3 s.
    one_host_under(&broker, "outage", Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_host_frozen_past_the_session_timeout_while_a_backlog_lands_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let broker = Broker::start();
    let mut host = pipeline(&broker);
    host.start();
    let pid = host.pid().unwrap();
    signal(pid, "STOP");
    // While the host is frozen a backlog lands on OrderReceived, written straight to it.
    let backlog = 1_500;
    let mut accepted = BTreeSet::new();
    let topic = host.topic("OrderReceived");
    let producer = producer(&broker);
    for i in 0..backlog {
        let id = format!("frozen-{i}");
        let mut order: serde_json::Value =
            serde_json::from_str(&common::order(&id, &format!("fp-{}", i % 20), 1)).unwrap();
        order["status"] = "received".into();
        let ce_id = uuid::Uuid::new_v4().to_string();
        common::send(
            &producer,
            &topic,
            &id,
            order.to_string().as_bytes(),
            &[
                ("ce_id", ce_id.as_str()),
                ("ce_type", "OrderReceived"),
                ("ce_source", "/test/backlog"),
            ],
        )
        .await;
        accepted.insert(id);
    }
    // Frozen past the session timeout: the group drops the member.
    tokio::time::sleep(SESSION_TIMEOUT + Duration::from_secs(5)).await;
    let watch = ReadyWatch::start(&host.http);
    signal(pid, "CONT");
    let heal = wait_for_outcomes(&broker.address(), &[&host], &accepted).await;
    let (unready, problems) = watch.finish();
    eprintln!(
        "faults[freeze]: /readyz unready {unready} times after the thaw (parts {problems:?})"
    );
    let stopped = host.stop("TERM");
    assert!(
        stopped.success(),
        "the host did not stop cleanly: {stopped}\n{}",
        host.logs()
    );
    let outcomes = outcomes(&broker.address(), &host).await;
    assert_exactly_once("freeze", &accepted, &outcomes, heal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_survive_a_broker_restart_and_one_frozen_past_the_session_timeout() {
    let _serial = SERIAL.lock().await;
    let broker = Broker::start();
    let (mut first, mut second) = two_instances(&broker);
    let watch = ReadyWatch::start(&first.http);
    let targets = vec![first.http.clone(), second.http.clone()];
    let load = tokio::spawn(post_orders("two".into(), 1_500, 50.0, targets));
    tokio::time::sleep(Duration::from_secs(4)).await;
    broker.outage(Duration::from_secs(4)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // The second instance freezes past the session timeout: its partitions move to the first;
    // when it thaws it is a zombie that must not commit, and must rejoin by itself.
    let frozen = second.pid().unwrap();
    signal(frozen, "STOP");
    tokio::time::sleep(SESSION_TIMEOUT + Duration::from_secs(5)).await;
    signal(frozen, "CONT");
    let load = load.await.unwrap();
    let heal = wait_for_outcomes(&broker.address(), &[&first, &second], &load.accepted).await;
    let (unready, problems) = watch.finish();
    eprintln!("faults[two]: /readyz of the first unready {unready} times (parts {problems:?})");
    assert!(
        unready > 0,
        "/readyz never said unready during the broker restart"
    );
    // Both serve again without a restart.
    for (n, host) in [&first, &second].into_iter().enumerate() {
        let id = format!("two-after-{n}");
        let status = host
            .post_order_until_answered(&common::order(&id, "fp-2", 1), Duration::from_secs(60))
            .await;
        assert_eq!(
            status, 202,
            "instance {n} does not accept orders after the faults"
        );
    }
    let mut accepted = load.accepted.clone();
    accepted.extend(["two-after-0".to_string(), "two-after-1".to_string()]);
    wait_for_outcomes(&broker.address(), &[&first, &second], &accepted).await;
    assert!(second.stop("TERM").success(), "{}", second.logs());
    assert!(first.stop("TERM").success(), "{}", first.logs());
    let outcomes = outcomes(&broker.address(), &first).await;
    assert_exactly_once("two", &accepted, &outcomes, heal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_order_posted_to_two_instances_flows_once() {
    let _serial = SERIAL.lock().await;
    let broker = Broker::start();
    let (mut first, mut second) = two_instances(&broker);
    let mut accepted = BTreeSet::new();
    for i in 0..20 {
        let id = format!("twice-{i}");
        let body = serde_json::json!({
            "order_id": id,
            "customer_id": "cust-twice",
            "items": [
                {"product_id": "fp-1", "quantity": 1, "price": 2.5},
                {"product_id": "fp-2", "quantity": 2, "price": 2.5}
            ],
            "total": 7.5
        })
        .to_string();
        // Concurrently, as a client failing over would.
        let (a, b) = tokio::join!(first.post_order(&body), second.post_order(&body));
        assert_eq!(a.0, 202, "{:?}", a.1);
        assert_eq!(b.0, 202, "{:?}", b.1);
        assert_eq!(
            a.1["event_ids"], b.1["event_ids"],
            "the two instances gave the order different ids"
        );
        accepted.insert(id);
    }
    let heal = wait_for_outcomes(&broker.address(), &[&first, &second], &accepted).await;
    assert!(second.stop("TERM").success(), "{}", second.logs());
    assert!(first.stop("TERM").success(), "{}", first.logs());
    let outcomes = outcomes(&broker.address(), &first).await;
    assert_exactly_once("twice", &accepted, &outcomes, heal);
    let confirmed = read_to_end_at(
        &broker.address(),
        &first.topic("OrderConfirmed"),
        Duration::from_secs(60),
    )
    .await;
    let mut per_order: HashMap<&str, usize> = HashMap::new();
    for record in &confirmed {
        *per_order
            .entry(record.value["order_id"].as_str().unwrap())
            .or_default() += 1;
    }
    assert!(
        per_order.values().all(|n| *n == 1),
        "orders confirmed more than once: {per_order:?}"
    );
}

/// Two running instances of the shipped pipeline on `broker`.
fn two_instances(broker: &Broker) -> (TestPipeline, TestPipeline) {
    let mut first = pipeline(broker);
    let mut second = first.sibling("host-1");
    first.start();
    second.start();
    (first, second)
}

fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_event_keeps_its_attempt_count_when_its_partition_moves_to_another_instance() {
    let _serial = SERIAL.lock().await;
    let broker = Broker::start();
    let brokers = broker.address();
    let mut input = String::new();
    let mut first = TestPipeline::new(|config| {
        config["kafka"]
            .as_table_mut()
            .unwrap()
            .insert("brokers".into(), brokers.into());
        common::keep_stages(config, &[]);
        input = common::add_topic(config, "Retried", 1);
        let output = common::add_topic(config, "RetriedOut", 1);
        let mut stage = toml::Table::new();
        stage.insert("name".into(), "retrier".into());
        stage.insert(
            "plugin".into(),
            common::component("faulty").display().to_string().into(),
        );
        stage.insert("input".into(), input.clone().into());
        let mut outputs = toml::Table::new();
        outputs.insert("out".into(), output.into());
        stage.insert("outputs".into(), outputs.into());
        let mut retry = toml::Table::new();
        retry.insert("max_attempts".into(), 4.into());
        retry.insert("initial_delay".into(), "2s".into());
        retry.insert("max_delay".into(), "2s".into());
        stage.insert("retry".into(), retry.into());
        common::add_stage(config, stage);
    });
    let mut second = first.sibling("host-1");
    first.start();
    // The second instance is a standby (one partition): ready, but without work.
    second.start();
    common::send(
        &producer(&broker),
        &input,
        "k",
        br#"{"fault":"retry"}"#,
        &[("ce_id", "retried-1")],
    )
    .await;
    let asked = |logs: String| logs.matches("plugin asked for a retry").count();
    wait_until("two attempts by the first instance", SETTLE, || {
        let made = asked(first.logs());
        async move { made >= 2 }
    })
    .await;
    // The first instance goes away; after the session timeout the partition moves to the
    // second, which must go on counting from the committed attempt count.
    assert!(first.stop("TERM").success(), "{}", first.logs());
    let dead_letters = first.topic("DeadLetterQueue");
    wait_until("the dead letter of the retried event", SETTLE, || {
        let (topic, at) = (dead_letters.clone(), broker.address());
        async move {
            !read_to_end_at(&at, &topic, Duration::from_secs(30))
                .await
                .is_empty()
        }
    })
    .await;
    assert!(second.stop("TERM").success(), "{}", second.logs());
    let letters = read_to_end_at(&broker.address(), &dead_letters, Duration::from_secs(30)).await;
    assert_eq!(letters.len(), 1, "one dead letter: {letters:?}");
    assert_eq!(letters[0].value["attempts"], 4, "{}", letters[0].value);
    let (by_first, by_second) = (asked(first.logs()), asked(second.logs()));
    eprintln!(
        "faults[retry]: retries asked on the first instance {by_first}, on the second {by_second}"
    );
    assert_eq!(
        by_first + by_second,
        3,
        "4 attempts in all: 3 retries, then the dead letter"
    );
    assert!(
        by_second >= 1,
        "the partition never moved to the second instance"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dlq_replay_during_a_broker_restart_is_processed_exactly_once() {
    let _serial = SERIAL.lock().await;
    let broker = Broker::start();
    let brokers = broker.address();
    let mut pipeline = TestPipeline::new(|config| {
        config["kafka"]
            .as_table_mut()
            .unwrap()
            .insert("brokers".into(), brokers.into());
        common::keep_stages(config, &["warehouse"]);
        common::stage_mut(config, "warehouse").insert(
            "plugin".into(),
            common::component("always_trap")
                .display()
                .to_string()
                .into(),
        );
    });
    pipeline.start();
    let input = pipeline.topic("OrderConfirmed");
    let producer = producer(&broker);
    let orders: Vec<String> = (0..300).map(|i| format!("replayed-{i}")).collect();
    for order in &orders {
        common::send(
            &producer,
            &input,
            order,
            common::confirmed(order).as_bytes(),
            &[
                ("ce_id", &format!("c-{order}")),
                ("ce_type", "OrderConfirmed"),
            ],
        )
        .await;
    }
    let (dead_topic, packed_topic) = (
        pipeline.topic("DeadLetterQueue"),
        pipeline.topic("OrderPickedAndPacked"),
    );
    let count = |topic: &String| {
        let (topic, at) = (topic.clone(), broker.address());
        async move {
            read_to_end_at(&at, &topic, Duration::from_secs(30))
                .await
                .len()
        }
    };
    wait_until("a dead letter per order", SETTLE, || async {
        count(&dead_topic).await >= orders.len()
    })
    .await;
    // The plugin is fixed; the letters are replayed, and the broker restarts at once: the
    // stage's transactions over the replayed letters race with the broker going down (which
    // of them commits before it is not forced; every interleaving must give one result each).
    let green = common::component("warehouse_green").display().to_string();
    let (ok, _, err) = pipeline.admin_cli(&["plugin", "swap", "warehouse", &green]);
    assert!(ok, "{err}");
    let config = pipeline.config_path.display().to_string();
    let (ok, out, err) =
        common::stagehost(&["dlq", "replay", "--config", &config, "--stage", "warehouse"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains(&format!("{} replayed", orders.len())), "{out}");
    broker.outage(Duration::from_secs(4)).await;
    wait_until("every replayed order packed", SETTLE, || async {
        count(&packed_topic).await >= orders.len()
    })
    .await;
    assert!(pipeline.stop("TERM").success(), "{}", pipeline.logs());
    let packed = read_to_end_at(&broker.address(), &packed_topic, Duration::from_secs(30)).await;
    let per_order = common::count_by(&packed, |r| common::field(r, "order_id"));
    eprintln!(
        "faults[replay]: {} letters replayed, {} packed records, {} orders",
        orders.len(),
        packed.len(),
        per_order.len()
    );
    assert_eq!(packed.len(), orders.len(), "{per_order:?}");
    assert!(per_order.values().all(|n| *n == 1), "{per_order:?}");
    let dead = read_to_end_at(&broker.address(), &dead_topic, Duration::from_secs(30)).await;
    assert_eq!(dead.len(), orders.len(), "no new dead letters");
}
