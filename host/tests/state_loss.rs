//! State that cannot silently reset: a stateful stage whose changelog topic is deleted under
//! load halts, unready with what was lost, instead of making the topic again empty and starting
//! its state from nothing (stock back at the catalog's, scarce products oversold). (The state
//! dir losing its files while the host runs is tested in `storage.rs`, which mounts a tmpfs.)

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::flow::{SETTLE, confirmed_units, post_orders, stocked, wait_for_outcomes};
use common::{TestPipeline, brokers, wait_until};

/// Units of each of the two scarce products.
const SCARCE: u64 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_changelog_halts_its_stage_instead_of_resetting_its_state() {
    let mut host = TestPipeline::new(|config| {
        stocked(config);
        let stock = common::stage_mut(config, "stock");
        let catalog = stock["config"]["catalog"].as_table_mut().unwrap();
        catalog.insert("fp-18".into(), (SCARCE as i64).into());
        catalog.insert("fp-19".into(), (SCARCE as i64).into());
    });
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
    wait_until("readiness naming the lost changelog", SETTLE, || async {
        let (status, body) = host.get("/readyz").await;
        status == 503
            && body["problems"].as_object().is_some_and(|parts| {
                parts.iter().any(|(part, problem)| {
                    part.ends_with("stock")
                        && problem["reason"]
                            .as_str()
                            .is_some_and(|reason| reason.contains(&changelog))
                })
            })
    })
    .await;
    assert!(host.stop("TERM").success(), "{}", host.logs());
    for product in ["fp-18", "fp-19"] {
        let units = confirmed_units(&host, product).await;
        assert!(
            units <= SCARCE,
            "{product}: {units} units confirmed, {SCARCE} supplied: the stock started again"
        );
    }
    let logs = host.logs();
    let created = logs
        .lines()
        .filter(|line| line.contains("created changelog topic") && line.contains(&changelog))
        .count();
    assert_eq!(created, 1, "the changelog was made again empty:\n{logs}");
}
