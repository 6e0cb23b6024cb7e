//! State that cannot silently reset: a stateful stage whose changelog topic is deleted under
//! load halts, unready with what was lost, instead of making the topic again empty and starting
//! its state from nothing (stock back at the catalog's, scarce products oversold); partitions
//! added to a stateful stage's input are refused, loud and unready, instead of being read with
//! the moved keys' state missing. (The state dir losing its files while the host runs is tested
//! in `storage.rs`, which mounts a tmpfs; two hosts' state dirs swapped under load here.)

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::flow::{
    SETTLE, assert_exactly_once, confirmed_units, outcomes, post_orders, stocked, wait_for_outcomes,
};
use common::{TestPipeline, brokers, wait_until};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
use rdkafka::client::DefaultClientContext;

/// Units of each of the two scarce products.
const SCARCE: u64 = 10;

/// The shipped pipeline with two scarce products of [`SCARCE`] units each.
fn scarce_pipeline() -> TestPipeline {
    TestPipeline::new(|config| {
        stocked(config);
        let stock = common::stage_mut(config, "stock");
        let catalog = stock["config"]["catalog"].as_table_mut().unwrap();
        catalog.insert("fp-18".into(), (SCARCE as i64).into());
        catalog.insert("fp-19".into(), (SCARCE as i64).into());
    })
}

/// Waits until `/readyz` names a part ending in `part` with a reason containing `words`.
async fn unready_with(host: &TestPipeline, part: &str, words: &str) {
    wait_until(
        &format!("readiness naming {part}: {words}"),
        SETTLE,
        || async {
            let (status, body) = host.get("/readyz").await;
            status == 503
                && body["problems"].as_object().is_some_and(|parts| {
                    parts.iter().any(|(name, problem)| {
                        name.ends_with(part)
                            && problem["reason"]
                                .as_str()
                                .is_some_and(|reason| reason.contains(words))
                    })
                })
        },
    )
    .await;
}

async fn assert_not_oversold(host: &TestPipeline) {
    for product in ["fp-18", "fp-19"] {
        let units = confirmed_units(host, product).await;
        assert!(
            units <= SCARCE,
            "{product}: {units} units confirmed, {SCARCE} supplied: the stock started again"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_added_to_a_stateful_input_are_refused_loudly_and_nothing_is_oversold() {
    let mut host = scarce_pipeline();
    host.start();
    let before = post_orders("grow-before".into(), 200, 40.0, vec![host.http.clone()]).await;
    wait_for_outcomes(&brokers(), &[&host], &before.accepted).await;

    let commands = host.topic("InventoryCommands");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let grown = admin
        .create_partitions(&[NewPartitions::new(&commands, 6)], &AdminOptions::new())
        .await
        .unwrap();
    assert!(grown.iter().all(Result::is_ok), "{grown:?}");
    let added = Instant::now();
    let after = post_orders("grow-after".into(), 200, 40.0, vec![host.http.clone()]).await;
    assert_eq!(after.accepted.len(), 200);
    unready_with(&host, "unassigned:stock", "keyed state").await;
    eprintln!(
        "stateful partitions added: readiness named the refusal within {:.1}s",
        added.elapsed().as_secs_f64()
    );
    assert!(host.stop("TERM").success(), "{}", host.logs());
    assert_not_oversold(&host).await;

    // Started again, the host refuses the stage with what happened and what to do.
    host.launch();
    let deadline = Instant::now() + SETTLE;
    while host.is_running() {
        assert!(
            Instant::now() < deadline,
            "the host ran on:\n{}",
            host.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let logs = host.logs();
    assert!(
        logs.contains("keeps keyed state per input partition")
            && logs.contains("has 6 partitions while its changelog"),
        "no clear refusal:\n{logs}"
    );
    assert_not_oversold(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_changelog_halts_its_stage_until_it_is_republished_from_the_local_copy() {
    let mut host = scarce_pipeline();
    host.start();
    // 20 orders of one unit for each scarce product: 10 confirmed, 10 rejected, stock 0.
    let before = post_orders("cl-before".into(), 400, 40.0, vec![host.http.clone()]).await;
    wait_for_outcomes(&brokers(), &[&host], &before.accepted).await;
    for product in ["fp-18", "fp-19"] {
        assert_eq!(confirmed_units(&host, product).await, SCARCE);
    }

    let changelog = format!("{}stock-changelog", host.prefix);
    common::delete_topic(&changelog).await;

    // More orders: the stock stage must not take them with its stock starting again from the
    // catalog's.
    let after = post_orders("cl-after".into(), 200, 40.0, vec![host.http.clone()]).await;
    assert_eq!(after.accepted.len(), 200);
    unready_with(&host, "stock", &changelog).await;
    assert!(host.stop("TERM").success(), "{}", host.logs());
    assert_not_oversold(&host).await;

    // The documented recovery: the stock copy in the local store written back into the
    // changelog, said first, done with --yes.
    let config = host.config_path.display().to_string();
    let args = [
        "state",
        "republish",
        "--config",
        &config,
        "--stage",
        "stock",
    ];
    let (ok, said, errors) = common::stagehost(&args);
    assert!(
        ok && said.contains("keys from the local copy"),
        "{said}{errors}"
    );
    let (ok, done, errors) = common::stagehost(&[&args[..], &["--yes"]].concat());
    assert!(ok && done.contains("keys written"), "{done}{errors}");
    eprintln!("state republish:\n{said}{done}");
    // The stage goes on from its stock as it was: every order posted meanwhile gets its one
    // outcome, and the scarce products stay sold out.
    host.start();
    wait_for_outcomes(&brokers(), &[&host], &after.accepted).await;
    assert!(host.stop("TERM").success(), "{}", host.logs());
    for product in ["fp-18", "fp-19"] {
        assert_eq!(confirmed_units(&host, product).await, SCARCE, "{product}");
    }
    let logs = host.logs();
    let created = logs
        .lines()
        .filter(|line| line.contains("created changelog topic") && line.contains(&changelog))
        .count();
    assert_eq!(created, 1, "the changelog was made again empty:\n{logs}");
}

/// The `state.dir` of `host`'s configuration.
fn state_dir(host: &TestPipeline) -> std::path::PathBuf {
    let config: toml::Table = std::fs::read_to_string(&host.config_path)
        .unwrap()
        .parse()
        .unwrap();
    config["state"]["dir"].as_str().unwrap().into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hosts_whose_state_dirs_are_swapped_under_load_repeat_and_lose_nothing() {
    let mut first = scarce_pipeline();
    let mut second = first.sibling("second");
    first.start();
    second.start();
    let targets = vec![first.http.clone(), second.http.clone()];
    let load = tokio::spawn(post_orders("swap".into(), 600, 25.0, targets.clone()));
    tokio::time::sleep(Duration::from_secs(8)).await;
    // One killed, the other stopped; each comes back with the other's state dir.
    first.stop("KILL");
    second.stop("TERM");
    let (one, two) = (state_dir(&first), state_dir(&second));
    let aside = one.with_extension("aside");
    std::fs::rename(&one, &aside).unwrap();
    std::fs::rename(&two, &one).unwrap();
    std::fs::rename(&aside, &two).unwrap();
    first.start();
    second.start();
    let load = load.await.unwrap();
    let heal = wait_for_outcomes(&brokers(), &[&first, &second], &load.accepted).await;
    // Orders posted again get their first answers (`post_orders` fails on a `409`) and flow no
    // second time (their outcomes would be counted twice below).
    let again = post_orders("swap".into(), 100, 50.0, targets).await;
    assert_eq!(again.accepted.len(), 100);
    wait_for_outcomes(&brokers(), &[&first, &second], &load.accepted).await;
    assert!(second.stop("TERM").success(), "{}", second.logs());
    assert!(first.stop("TERM").success(), "{}", first.logs());
    let outcomes = outcomes(&brokers(), &first).await;
    assert_exactly_once("state-dirs-swapped", &load.accepted, &outcomes, heal);
    assert_not_oversold(&first).await;
}
