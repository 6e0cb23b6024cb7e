//! One answer per idempotency key across host instances (exactly-once ingress): the same
//! `order_id` posted with two different bodies to two instances, at the same moment, one
//! right after the other, and again after an instance restarts. Exactly one body wins: every
//! request with it gets the same `202`, every request with the other body gets `409`, on every
//! instance, every time; and `OrderReceived` holds exactly one event per order, the winner's.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::{SETTLE, TestPipeline, field, keep_stages, post_until_answered, read_to_end};
use std::collections::BTreeMap;

/// Orders posted with both bodies at the same moment, and one right after the other.
const RACED: usize = 30;
const SEQUENTIAL: usize = 20;

/// Body number `variant` (1 or 2) of `order`: they differ in the quantity.
fn body(order: &str, variant: u32) -> String {
    common::order(order, "prod-1", variant)
}

/// What one request got: its body variant, the instance, the status and the event ids.
#[derive(Debug)]
struct Answer {
    variant: u32,
    #[allow(dead_code)] // shown in failure messages
    instance: &'static str,
    status: u16,
    event_ids: serde_json::Value,
}

async fn post(http: &str, order: &str, variant: u32, instance: &'static str) -> Answer {
    let (status, answer) =
        post_until_answered(http, "/orders", &body(order, variant), SETTLE).await;
    Answer {
        variant,
        instance,
        status,
        event_ids: answer["event_ids"].clone(),
    }
}

/// Checks every answer of `order`: one variant only got `202` (all with the same event ids),
/// the other only `409`. Returns the winning variant.
fn winner(order: &str, answers: &[Answer]) -> u32 {
    let accepted: Vec<&Answer> = answers.iter().filter(|a| a.status == 202).collect();
    assert!(
        !accepted.is_empty(),
        "{order}: no body accepted: {answers:?}"
    );
    let won = accepted[0].variant;
    for answer in answers {
        if answer.variant == won {
            assert_eq!(
                answer.status, 202,
                "{order}: the winning body refused: {answers:?}"
            );
            assert_eq!(
                answer.event_ids, accepted[0].event_ids,
                "{order}: the winning body answered with other event ids: {answers:?}"
            );
        } else {
            assert_eq!(
                answer.status, 409,
                "{order}: the losing body was not refused: {answers:?}"
            );
        }
    }
    won
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_body_wins_per_order_on_every_instance_every_time() {
    let mut first = TestPipeline::new(|config| keep_stages(config, &["order"]));
    let mut second = first.sibling("second");
    first.start();
    second.start();
    let (one, two) = (first.http.clone(), second.http.clone());
    let mut answers: BTreeMap<String, Vec<Answer>> = BTreeMap::new();

    // At the same moment: body 1 to the first instance, body 2 to the second.
    let raced: Vec<String> = (0..RACED).map(|n| format!("raced-{n}")).collect();
    let races = raced.iter().map(|order| {
        let (one, two) = (one.clone(), two.clone());
        async move {
            let (a, b) = tokio::join!(
                post(&one, order, 1, "first"),
                post(&two, order, 2, "second")
            );
            (order.clone(), [a, b])
        }
    });
    for (order, pair) in futures::future::join_all(races).await {
        answers.entry(order).or_default().extend(pair);
    }

    // One right after the other, on different instances.
    let sequential: Vec<String> = (0..SEQUENTIAL).map(|n| format!("sequential-{n}")).collect();
    for (n, order) in sequential.iter().enumerate() {
        let (early, late) = if n % 2 == 0 {
            (&one, &two)
        } else {
            (&two, &one)
        };
        let a = post(early, order, 1, "early").await;
        assert_eq!(
            a.status, 202,
            "{order}: the first request was refused: {a:?}"
        );
        let b = post(late, order, 2, "late").await;
        answers.entry(order.clone()).or_default().extend([a, b]);
    }

    // Both bodies again on both instances, before and after the first one restarts.
    let all: Vec<String> = raced.iter().chain(&sequential).cloned().collect();
    for round in 0..2 {
        if round == 1 {
            assert!(first.stop("TERM").success(), "{}", first.logs());
            first.start();
        }
        for order in &all {
            for (http, instance) in [(&one, "first"), (&two, "second")] {
                for variant in [1, 2] {
                    let answer = post(http, order, variant, instance).await;
                    answers.get_mut(order).unwrap().push(answer);
                }
            }
        }
    }

    let winners: BTreeMap<&String, u32> = answers
        .iter()
        .map(|(order, answers)| (order, winner(order, answers)))
        .collect();
    let raced_wins = raced.iter().filter(|o| winners[o] == 1).count();
    println!(
        "idempotency: {RACED} raced orders (body 1 won {raced_wins}, body 2 won {}), {SEQUENTIAL} sequential, {} requests in all",
        RACED - raced_wins,
        answers.values().map(Vec::len).sum::<usize>()
    );

    // Exactly one OrderReceived per order, with the winner's quantity.
    let received = read_to_end(&first.topic("OrderReceived"), SETTLE).await;
    let mut by_order: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for record in &received {
        by_order
            .entry(field(record, "order_id"))
            .or_default()
            .push(record.value["items"][0]["quantity"].as_u64().unwrap());
    }
    for (order, won) in &winners {
        assert_eq!(
            by_order.get(*order),
            Some(&vec![u64::from(*won)]),
            "{order}: OrderReceived does not hold exactly the winner's event"
        );
    }
    assert_eq!(
        by_order.len(),
        winners.len(),
        "unexpected orders: {by_order:?}"
    );
    assert!(second.stop("TERM").success(), "{}", second.logs());
    assert!(first.stop("TERM").success(), "{}", first.logs());
}
