//! Chaos acceptance: orders posted over HTTP while host instances are killed with SIGKILL and
//! restarted (and, optionally, the broker is restarted cleanly); once every accepted order has
//! its outcome the instances are stopped cleanly and every topic is read to its end: every
//! accepted order has exactly one outcome (and a confirmation exactly when shipped), no topic
//! holds two committed events with one id, stock adds up and was never oversold (no more units
//! confirmed than supplied, the ledger's deltas never below zero, each ledger entry following
//! the one before), and every notification was delivered exactly once.
//!
//! `make test` runs a short version; `make chaos` the full one. Sizes and faults come from the
//! environment: CHAOS_ORDERS, CHAOS_KILLS, CHAOS_BROKER_RESTART (1 to restart the broker),
//! CHAOS_BROKER_OUTAGE (seconds the broker stays down: more than the transaction timeout),
//! CHAOS_FREEZE (seconds an instance is frozen with SIGSTOP: more than the session timeout);
//! the broker faults need KAFKA_HOME_DIR/KAFKA_PORT of a broker started by scripts/kafka.sh.
//! The two-instance run always freezes its second instance past the session timeout.

#![allow(missing_docs, clippy::unwrap_used)]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::chaos::{
    Faults, check, configure, env_usize, is_outcome, plan, report, run_load, stop_all, wait_settled,
};
use common::{TestPipeline, read_to_end};
use tokio::sync::Mutex;

/// How long the two-instance run freezes its second instance: past the group session
/// timeout (10 s).
const FREEZE: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_instance_killed_repeatedly_loses_and_duplicates_nothing() {
    let plan = plan(env_usize("CHAOS_ORDERS", 600), 1);
    let kills = env_usize("CHAOS_KILLS", 2);
    let mut pipeline = TestPipeline::new(|config| configure(config, &plan.initial));
    pipeline.start();
    let http = pipeline.http.clone();
    let started = Instant::now();
    let host = Arc::new(Mutex::new(pipeline));
    let (accepted, recoveries) = run_load(
        vec![host.clone()],
        vec![http],
        &plan,
        kills,
        Faults::from_env(),
    )
    .await;
    wait_settled(&*host.lock().await, &accepted).await;
    let elapsed = started.elapsed();
    stop_all(std::slice::from_ref(&host)).await;
    let checked = check(&*host.lock().await, &plan, &accepted).await;
    report("one instance", &checked, elapsed, &recoveries);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_one_killed_lose_and_duplicate_nothing() {
    let plan = plan(env_usize("CHAOS_ORDERS", 600) / 2, 2);
    let first = TestPipeline::new(|config| configure(config, &plan.initial));
    let second = first.sibling("host-b");
    let (mut first, mut second) = (first, second);
    first.start();
    second.start();
    let https = vec![first.http.clone(), second.http.clone()];
    let started = Instant::now();
    let a = Arc::new(Mutex::new(first));
    let b = Arc::new(Mutex::new(second));
    // Kills hit the second instance only; the first keeps serving its share. The second is
    // also frozen past the session timeout, so its partitions really move to the first (a
    // killed instance returns within the timeout as the same static member and gets them
    // back), and the faults of the environment hit both.
    let faults = Faults {
        freeze: Some(Faults::from_env().freeze.unwrap_or(FREEZE)),
        ..Faults::from_env()
    };
    let (accepted, recoveries) = run_load(vec![b.clone()], https, &plan, 1, faults).await;
    wait_settled(&*a.lock().await, &accepted).await;
    let elapsed = started.elapsed();
    stop_all(&[a.clone(), b]).await;
    let checked = check(&*a.lock().await, &plan, &accepted).await;
    report("two instances", &checked, elapsed, &recoveries);
}

/// Orders per second through the whole pipeline in each processing mode, from the first POST
/// to the last outcome, with the same plan, clients and broker. Prints figures; asserts only
/// correctness (it is a measurement, not a timing test). Run by `make chaos`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement; `make chaos` runs it"]
async fn throughput_in_both_modes() {
    let count = env_usize("THROUGHPUT_ORDERS", 3000);
    for mode in ["at_least_once", "exactly_once"] {
        let plan = plan(count, 3);
        let mut pipeline = TestPipeline::new(|config| {
            configure(config, &plan.initial);
            for stage in config.get_mut("stages").unwrap().as_array_mut().unwrap() {
                stage
                    .as_table_mut()
                    .unwrap()
                    .insert("mode".into(), mode.into());
            }
        });
        pipeline.start();
        let https = vec![pipeline.http.clone()];
        let host = Arc::new(Mutex::new(pipeline));
        let started_ms = unix_ms();
        let started = Instant::now();
        let (accepted, _) = run_load(vec![host.clone()], https, &plan, 0, Faults::default()).await;
        let posted = started.elapsed();
        wait_settled(&*host.lock().await, &accepted).await;
        stop_all(std::slice::from_ref(&host)).await;
        let pipeline = host.lock().await;
        let checked = check(&pipeline, &plan, &accepted).await;
        let notifications = read_to_end(&pipeline.topic("Notification"), common::SETTLE).await;
        let last = notifications
            .iter()
            .filter(|n| is_outcome(n))
            .map(|n| n.timestamp_ms)
            .max()
            .unwrap();
        let seconds = (last - started_ms) as f64 / 1000.0;
        eprintln!(
            "throughput[{mode}]: {count} orders, all POSTs answered in {:.2}s, last outcome after {seconds:.2}s: {:.0} orders/s end to end",
            posted.as_secs_f64(),
            count as f64 / seconds
        );
        assert_eq!(checked.lost + checked.duplicated_outcomes, 0);
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
