//! Chaos on a 3-broker cluster: orders posted over HTTP to a host whose every topic has 3
//! replicas and `min.insync.replicas=2`, while the broker leading the most partitions is killed
//! with SIGKILL and brought back, the host is killed with SIGKILL and restarted, and then
//! another broker is killed and brought back (the short run: the host, then one broker). The checks are the chaos test's (see
//! `chaos.rs`): every accepted order has exactly one outcome, no committed id twice on any
//! topic, stock adds up, every notification delivered exactly once. It prints, per fault, how
//! long until every partition had a live leader, until the cluster was whole again (or the host
//! ready), and the longest time clients saw no order accepted.
//!
//! The test starts its own cluster (`scripts/kafka-cluster.sh`, nodes on CLUSTER_KAFKA_PORT,
//! default 19710, +2, +4; data in `.kafka/cluster-<port>`) and resets it at the end, even on
//! failure. Sizes from the environment: CHAOS_CLUSTER_ORDERS (1000), CHAOS_CLUSTER_BROKER_KILLS
//! (1 or 2), CHAOS_CLUSTER_BROKER_DOWN (seconds a killed broker stays down, 5); `make test`
//! runs the defaults, `make chaos` a longer run with both broker kills.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestPipeline;
use common::chaos::{
    Action, CustomFault, Load, check, configure, env_usize, plan, report, run_load_with, stop_all,
    wait_settled,
};
use common::cluster::{Cluster, PartitionState};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use tokio::sync::Mutex;

/// Node 1's broker port unless CLUSTER_KAFKA_PORT says otherwise.
const BASE_PORT: u16 = 19710;

/// What one fault cost.
struct Fault {
    name: String,
    started: Instant,
    /// Until every partition had a live leader (broker faults).
    failover: Option<Duration>,
    /// Until the cluster was whole again (every ISR full) or the host ready.
    recovered: Duration,
}

type Faults = Arc<std::sync::Mutex<Vec<Fault>>>;

fn led_and_whole(partitions: &[PartitionState]) -> bool {
    partitions
        .iter()
        .all(|p| p.leader >= 0 && p.isr.len() == p.replicas.len())
}

/// SIGKILL of the live broker leading the most partitions (never one killed before), `down`
/// without it, then its start again and the wait until every ISR is full.
fn broker_kill(
    cluster: Arc<Cluster>,
    killed: Arc<std::sync::Mutex<Vec<i32>>>,
    down: Duration,
    faults: Faults,
) -> CustomFault {
    Box::new(move || {
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let leaders = cluster.leaders();
                let before = killed.lock().unwrap().clone();
                let (&victim, &led) = leaders
                    .iter()
                    .filter(|(node, _)| **node > 0 && !before.contains(node))
                    .max_by_key(|(_, led)| **led)
                    .unwrap();
                killed.lock().unwrap().push(victim);
                let started = Instant::now();
                cluster.node("kill-node", victim);
                let failover = cluster.wait_for(
                    &format!("a live leader for every partition without node {victim}"),
                    Duration::from_secs(90),
                    |partitions| partitions.iter().all(|p| p.leader >= 0 && p.leader != victim),
                );
                // The fault lasts this long (not a wait for a condition).
                std::thread::sleep(down);
                cluster.node("start-node", victim);
                cluster.wait_for("every ISR full again", Duration::from_secs(180), led_and_whole);
                let recovered = started.elapsed();
                eprintln!(
                    "broker {victim} (leading {led} of {} partitions) killed: every partition led again in {failover:?}, whole again {recovered:?} after the kill ({down:?} down)",
                    leaders.values().sum::<usize>()
                );
                faults.lock().unwrap().push(Fault {
                    name: format!("kill -9 broker {victim} (led {led} partitions)"),
                    started,
                    failover: Some(failover),
                    recovered,
                });
            })
            .await
            .unwrap();
        })
    })
}

/// SIGKILL of the host, then its start again (until ready).
fn host_kill(host: Arc<Mutex<TestPipeline>>, faults: Faults) -> CustomFault {
    Box::new(move || {
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let started = Instant::now();
                let mut host = host.blocking_lock();
                host.stop("KILL");
                host.start();
                let recovered = started.elapsed();
                eprintln!("host killed: ready again in {recovered:?}");
                faults.lock().unwrap().push(Fault {
                    name: "kill -9 host".into(),
                    started,
                    failover: None,
                    recovered,
                });
            })
            .await
            .unwrap();
        })
    })
}

/// Every topic of the pipeline (declared or made by the host) has 3 replicas and
/// `min.insync.replicas=2`.
async fn assert_replicated(cluster: &Cluster, prefix: &str) {
    let partitions = cluster.partitions().unwrap();
    let mut topics: Vec<&str> = partitions
        .iter()
        .filter(|p| p.topic.starts_with(prefix))
        .map(|p| p.topic.as_str())
        .collect();
    topics.dedup();
    assert!(topics.len() > 11, "the pipeline's topics: {topics:?}");
    for p in partitions.iter().filter(|p| p.topic.starts_with(prefix)) {
        assert_eq!(p.replicas.len(), 3, "{}/{} replicas", p.topic, p.partition);
    }
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", cluster.brokers())
        .create()
        .unwrap();
    let specifiers: Vec<ResourceSpecifier> =
        topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let described = admin
        .describe_configs(&specifiers, &AdminOptions::new())
        .await
        .unwrap();
    for (topic, config) in topics.iter().zip(described) {
        let config = config.unwrap();
        let entry = config.get("min.insync.replicas").unwrap();
        assert_eq!(entry.value.as_deref(), Some("2"), "{topic}");
        assert!(
            !entry.is_default,
            "{topic}: min.insync.replicas set on the topic"
        );
    }
    eprintln!(
        "{} topics of the pipeline, each with 3 replicas and min.insync.replicas=2",
        topics.len()
    );
}

fn print_figures(load: &Load, faults: &[Fault]) {
    eprintln!(
        "cluster chaos: {} orders accepted; longest any order took (first try to 202): {:?}",
        load.accepted.len(),
        load.longest_request()
    );
    for fault in faults {
        let stall = load.longest_gap(fault.started, fault.started + fault.recovered);
        eprintln!(
            "fault {}: every partition led again {}, recovered (whole / ready) {:?} after it; longest time clients saw no order accepted meanwhile {stall:?}",
            fault.name,
            fault
                .failover
                .map_or("(n/a)".to_string(), |d| format!("{d:?}")),
            fault.recovered,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn brokers_and_a_host_killed_under_load_lose_and_duplicate_nothing() {
    let orders = env_usize("CHAOS_CLUSTER_ORDERS", 1000);
    let broker_kills = env_usize("CHAOS_CLUSTER_BROKER_KILLS", 1).min(2);
    let down = Duration::from_secs(env_usize("CHAOS_CLUSTER_BROKER_DOWN", 5) as u64);
    let cluster = tokio::task::spawn_blocking(|| Cluster::start("CLUSTER_KAFKA_PORT", BASE_PORT))
        .await
        .unwrap();
    let cluster = Arc::new(cluster);
    let plan = plan(orders, 11);
    let mut pipeline = TestPipeline::on_cluster(&cluster.brokers(), |config| {
        configure(config, &plan.initial);
        let kafka = config["kafka"].as_table_mut().unwrap();
        kafka.insert("replication_factor".into(), 3.into());
        kafka.insert("min_insync_replicas".into(), 2.into());
    });
    pipeline.start();
    assert_replicated(&cluster, &pipeline.prefix).await;
    let https = vec![pipeline.http.clone()];
    let host = Arc::new(Mutex::new(pipeline));
    let faults: Faults = Arc::default();
    let killed = Arc::default();
    let total = plan.orders.len();
    // The host kill sits between the broker kills; with one broker kill it comes first, so
    // that both fall inside the short run's load.
    let first_broker = broker_kill(cluster.clone(), Arc::clone(&killed), down, faults.clone());
    let host_fault = host_kill(host.clone(), faults.clone());
    let actions = if broker_kills == 2 {
        let second = broker_kill(cluster.clone(), killed, down, faults.clone());
        vec![
            (total / 5, Action::Custom(first_broker)),
            (total * 2 / 5, Action::Custom(host_fault)),
            (total * 3 / 5, Action::Custom(second)),
        ]
    } else {
        vec![
            (total / 10, Action::Custom(host_fault)),
            (total / 4, Action::Custom(first_broker)),
        ]
    };
    let started = Instant::now();
    let load = run_load_with(vec![host.clone()], https, &plan, actions).await;
    let last_answer = load.answers.iter().map(|(at, _)| *at).max().unwrap();
    wait_settled(&*host.lock().await, &load.accepted).await;
    let elapsed = started.elapsed();
    stop_all(std::slice::from_ref(&host)).await;
    let checked = check(&*host.lock().await, &plan, &load.accepted).await;
    let faults = std::mem::take(&mut *faults.lock().unwrap());
    print_figures(&load, &faults);
    assert_eq!(faults.len(), broker_kills + 1, "every fault happened");
    assert!(
        faults.iter().all(|f| f.started < last_answer),
        "every fault began under load"
    );
    let recoveries: Vec<Duration> = faults.iter().map(|f| f.recovered).collect();
    report("3-broker cluster", &checked, elapsed, &recoveries);
}
