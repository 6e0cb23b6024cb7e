//! Stage `reservation` (event type `InventoryResult`, keyed by order id): join an order's
//! reservation results, then confirm the order or release what was reserved and reject it.
//!
//! State under `order/<order_id>`: the JSON [`Join`] document, deleted once every product
//! has a result. Results may arrive before the `order_pending` event; they wait in state.
//!
//! An `order_refused` result (an order the inventory stage could not split) rejects the
//! order at once, on the same path as an order that is short: the customer is notified.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use stage_events::{
    InventoryCommand, InventoryResult, Notification, NotificationKind, OrderConfirmed,
    OrderReceived, OrderRefused, ReleaseCommand,
};
use stagehost_sdk::{StageFailure, StageInput, StageOutput, State};

use super::{OUTPUT_CONFIRMED, OUTPUT_NOTIFY, OUTPUT_RELEASE, positive_quantity};

/// The state key of an order's join.
#[must_use]
pub fn order_key(order_id: &str) -> String {
    format!("order/{order_id}")
}

/// What the reservation stage knows about an order that is not decided yet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Join {
    /// The order as received, once its `order_pending` event has arrived.
    #[serde(default)]
    pub order: Option<OrderReceived>,
    /// The products that need a result (sorted, distinct); empty until `order_pending`.
    #[serde(default)]
    pub products: Vec<String>,
    /// The results so far, by product id.
    #[serde(default)]
    pub results: BTreeMap<String, ProductResult>,
}

/// The outcome of one product's reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductResult {
    /// Whether the units were taken out of stock.
    pub reserved: bool,
    /// The units asked for (and taken, when reserved).
    pub quantity: i64,
}

fn load(state: &dyn State, key: &str) -> Result<Join, StageFailure> {
    match state.get(key) {
        None => Ok(Join::default()),
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            StageFailure::Reject(format!("state {key} is not a reservation join: {e}"))
        }),
    }
}

/// Records an `order_pending` or `reservation` result. When the order and a result for
/// each of its products are known, deletes the state and outputs:
/// - every product reserved: `confirmed` (the order with `"status": "confirmed"`), then
///   `notify` (kind `order_confirmed`);
/// - otherwise: one `release` command per reserved product (sorted, keyed by the product
///   id), then `notify` (kind `order_rejected`, with the sorted `short_products`).
///
/// Otherwise it saves the join and outputs nothing. A second `order_pending`, or a second
/// result for the same product, is ignored (no output, state unchanged).
///
/// An `order_refused` result deletes the join, if any, and outputs a `release` command for
/// each product it holds as reserved (none is expected: no reserve was sent), then `notify`
/// (kind `order_rejected`, with the refused products as `short_products` and the reason in
/// the message).
///
/// # Errors
/// [`StageFailure::Reject`] if the payload is not an `InventoryResult`, the key is not the
/// order id, a quantity is not positive, a result names a product the order does not have,
/// or the stored join is corrupt. Nothing is saved then.
pub fn handle(event: &StageInput, state: &mut dyn State) -> Result<Vec<StageOutput>, StageFailure> {
    let result: InventoryResult = stagehost_sdk::parse_payload(&event.payload, "InventoryResult")?;
    let order_id = result.order_id().to_owned();
    event.expect_key("order_id", &order_id)?;
    let key = order_key(&order_id);
    let mut join = load(state, &key)?;

    match result {
        InventoryResult::OrderRefused(refused) => {
            let outputs = refuse(&join, refused)?;
            if state.get(&key).is_some() {
                state.delete(&key);
            }
            return Ok(outputs);
        }
        InventoryResult::OrderPending(pending) => {
            if join.order.is_some() {
                return Ok(Vec::new());
            }
            if pending.order.order.order_id != order_id {
                return Err(StageFailure::Reject(format!(
                    "invalid InventoryResult payload: order.order_id \"{}\" is not the \
                     order_id \"{order_id}\"",
                    pending.order.order.order_id
                )));
            }
            let mut products = pending.products;
            products.sort();
            products.dedup();
            if products.is_empty() {
                return Err(StageFailure::Reject(
                    "invalid InventoryResult payload: products must not be empty".to_owned(),
                ));
            }
            let strays: Vec<&str> = join
                .results
                .keys()
                .filter(|p| products.binary_search(p).is_err())
                .map(String::as_str)
                .collect();
            if !strays.is_empty() {
                return Err(StageFailure::Reject(format!(
                    "order {order_id} has reservation results for products it does not have: {}",
                    strays.join(", ")
                )));
            }
            join.order = Some(pending.order);
            join.products = products;
        }
        InventoryResult::Reservation(reservation) => {
            positive_quantity("InventoryResult", "quantity", reservation.quantity)?;
            if join.results.contains_key(&reservation.product_id) {
                return Ok(Vec::new());
            }
            if join.order.is_some()
                && join
                    .products
                    .binary_search(&reservation.product_id)
                    .is_err()
            {
                return Err(StageFailure::Reject(format!(
                    "order {order_id} has no product {}",
                    reservation.product_id
                )));
            }
            join.results.insert(
                reservation.product_id,
                ProductResult {
                    reserved: reservation.reserved,
                    quantity: reservation.quantity,
                },
            );
        }
    }

    let complete =
        join.order.is_some() && join.products.iter().all(|p| join.results.contains_key(p));
    if !complete {
        let bytes = serde_json::to_vec(&join).map_err(|e| {
            StageFailure::Reject(format!("cannot serialize the reservation join: {e}"))
        })?;
        state.set(&key, bytes);
        return Ok(Vec::new());
    }
    let outputs = decide(join)?;
    state.delete(&key);
    Ok(outputs)
}

/// The outputs for a complete join.
fn decide(join: Join) -> Result<Vec<StageOutput>, StageFailure> {
    let Join {
        order,
        products,
        results,
    } = join;
    let Some(OrderReceived { order, .. }) = order else {
        return Err(StageFailure::Reject(
            "the reservation join has no order".to_owned(),
        ));
    };
    let key = order.order_id.clone();
    let outcome = |p: &String| results.get(p).copied();
    let short: Vec<String> = products
        .iter()
        .filter(|p| !outcome(p).is_some_and(|r| r.reserved))
        .cloned()
        .collect();

    if short.is_empty() {
        let notification = Notification::new(
            &order.order_id,
            &order.customer_id,
            NotificationKind::OrderConfirmed,
            format!("Your order {} is confirmed.", order.order_id),
        );
        return Ok(vec![
            StageOutput::json(OUTPUT_CONFIRMED, &key, &OrderConfirmed::new(order))?,
            StageOutput::json(OUTPUT_NOTIFY, &key, &notification)?,
        ]);
    }

    let mut outputs = releases(&order.order_id, &results)?;
    let message = format!(
        "Your order {} was rejected: not enough stock for {}.",
        order.order_id,
        short.join(", ")
    );
    outputs.push(rejection(
        &order.order_id,
        &order.customer_id,
        message,
        short,
    )?);
    Ok(outputs)
}

/// The outputs for an `order_refused` result: releases for whatever `join` holds as
/// reserved, then the rejection.
fn refuse(join: &Join, refused: OrderRefused) -> Result<Vec<StageOutput>, StageFailure> {
    let OrderRefused {
        order_id,
        customer_id,
        mut products,
        reason,
    } = refused;
    products.sort();
    products.dedup();
    if products.is_empty() {
        return Err(StageFailure::Reject(
            "invalid InventoryResult payload: products must not be empty".to_owned(),
        ));
    }
    let mut outputs = releases(&order_id, &join.results)?;
    let message = format!("Your order {order_id} was rejected: {reason}.");
    outputs.push(rejection(&order_id, &customer_id, message, products)?);
    Ok(outputs)
}

/// One `release` command per reserved product, sorted and keyed by product id.
fn releases(
    order_id: &str,
    results: &BTreeMap<String, ProductResult>,
) -> Result<Vec<StageOutput>, StageFailure> {
    results
        .iter()
        .filter(|(_, result)| result.reserved)
        .map(|(product_id, result)| {
            let release = InventoryCommand::Release(ReleaseCommand {
                order_id: order_id.to_owned(),
                product_id: product_id.clone(),
                quantity: result.quantity,
            });
            StageOutput::json(OUTPUT_RELEASE, product_id, &release)
        })
        .collect()
}

/// The `notify` output of a rejected order.
fn rejection(
    order_id: &str,
    customer_id: &str,
    message: String,
    short_products: Vec<String>,
) -> Result<StageOutput, StageFailure> {
    let mut notification = Notification::new(
        order_id,
        customer_id,
        NotificationKind::OrderRejected,
        message,
    );
    notification.short_products = Some(short_products);
    StageOutput::json(OUTPUT_NOTIFY, order_id, &notification)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use stagehost_sdk::MemoryState;

    fn order(products: &[(&str, i64)]) -> Value {
        let items: Vec<Value> = products
            .iter()
            .map(|(p, q)| json!({"product_id": p, "quantity": q, "price": 1.0}))
            .collect();
        json!({"order_id": "order-1", "customer_id": "cust-456", "items": items,
               "total": 0.0, "timestamp": "2026-11-25T10:00:00Z", "status": "received"})
    }

    fn pending(products: &[(&str, i64)]) -> StageInput {
        let mut ids: Vec<&str> = products.iter().map(|(p, _)| *p).collect();
        ids.sort_unstable();
        ids.dedup();
        let payload = json!({"kind": "order_pending", "order_id": "order-1",
                             "order": order(products), "products": ids});
        StageInput::new(
            "evt-p",
            "InventoryResult",
            Some("order-1"),
            payload.to_string(),
        )
    }

    fn result(product_id: &str, quantity: i64, reserved: bool) -> StageInput {
        let payload = json!({"kind": "reservation", "order_id": "order-1",
                             "product_id": product_id, "quantity": quantity,
                             "reserved": reserved, "available": 0});
        StageInput::new(
            format!("evt-{product_id}"),
            "InventoryResult",
            Some("order-1"),
            payload.to_string(),
        )
    }

    fn run(event: &StageInput, state: &mut MemoryState) -> Vec<(String, String, Value)> {
        handle(event, state)
            .expect("handled")
            .into_iter()
            .map(|o| {
                let v = serde_json::from_str(&o.payload).expect("JSON");
                (o.output, o.key.expect("keyed"), v)
            })
            .collect()
    }

    fn names(outputs: &[(String, String, Value)]) -> Vec<(&str, &str)> {
        outputs
            .iter()
            .map(|(o, k, _)| (o.as_str(), k.as_str()))
            .collect()
    }

    #[test]
    fn all_reserved_confirms_like_the_old_inventory() {
        let lines = [("prod-789", 2)];
        let mut state = MemoryState::new();
        assert!(run(&pending(&lines), &mut state).is_empty());
        assert_eq!(state.keys().collect::<Vec<_>>(), ["order/order-1"]);
        let outputs = run(&result("prod-789", 2, true), &mut state);
        assert_eq!(
            names(&outputs),
            [("confirmed", "order-1"), ("notify", "order-1")]
        );
        let mut confirmed = order(&lines);
        confirmed["status"] = json!("confirmed");
        assert_eq!(outputs[0].2, confirmed);
        assert_eq!(
            outputs[1].2,
            json!({"order_id": "order-1", "customer_id": "cust-456", "kind": "order_confirmed",
                   "message": "Your order order-1 is confirmed."})
        );
        assert!(state.is_empty(), "the join is deleted: {state:?}");
    }

    #[test]
    fn partial_reservation_releases_only_the_reserved_products() {
        let lines = [("c", 1), ("a", 3), ("b", 2), ("d", 4), ("a", 1)];
        let mut state = MemoryState::new();
        run(&pending(&lines), &mut state);
        assert!(run(&result("d", 4, true), &mut state).is_empty());
        assert!(run(&result("b", 2, false), &mut state).is_empty());
        assert!(run(&result("a", 4, true), &mut state).is_empty());
        let outputs = run(&result("c", 1, false), &mut state);
        assert_eq!(
            names(&outputs),
            [("release", "a"), ("release", "d"), ("notify", "order-1")]
        );
        assert_eq!(
            outputs[0].2,
            json!({"command": "release", "order_id": "order-1", "product_id": "a", "quantity": 4})
        );
        assert_eq!(outputs[1].2["quantity"], 4);
        assert_eq!(
            outputs[2].2,
            json!({"order_id": "order-1", "customer_id": "cust-456", "kind": "order_rejected",
                   "message": "Your order order-1 was rejected: not enough stock for b, c.",
                   "short_products": ["b", "c"]})
        );
        assert!(state.is_empty());
    }

    #[test]
    fn nothing_reserved_releases_nothing() {
        let mut state = MemoryState::new();
        run(&pending(&[("p", 1)]), &mut state);
        let outputs = run(&result("p", 1, false), &mut state);
        assert_eq!(names(&outputs), [("notify", "order-1")]);
        assert_eq!(outputs[0].2["short_products"], json!(["p"]));
        assert_eq!(
            outputs[0].2["message"],
            "Your order order-1 was rejected: not enough stock for p."
        );
    }

    #[test]
    fn results_before_pending_wait_in_state() {
        let lines = [("a", 1), ("b", 1)];
        let mut state = MemoryState::new();
        assert!(run(&result("b", 1, true), &mut state).is_empty());
        assert!(run(&result("a", 1, true), &mut state).is_empty());
        let stored: Value =
            serde_json::from_str(state.get_str("order/order-1").expect("stored")).expect("JSON");
        assert_eq!(
            stored,
            json!({"order": null, "products": [],
                   "results": {"a": {"reserved": true, "quantity": 1},
                               "b": {"reserved": true, "quantity": 1}}})
        );
        let outputs = run(&pending(&lines), &mut state);
        assert_eq!(
            names(&outputs),
            [("confirmed", "order-1"), ("notify", "order-1")]
        );
        assert!(state.is_empty());

        // Mixed: one result before, one after the pending event.
        run(&result("a", 1, false), &mut state);
        assert!(run(&pending(&lines), &mut state).is_empty());
        let stored: Value =
            serde_json::from_str(state.get_str("order/order-1").expect("stored")).expect("JSON");
        assert_eq!(stored["products"], json!(["a", "b"]));
        assert_eq!(stored["order"], order(&lines));
        let outputs = run(&result("b", 1, true), &mut state);
        assert_eq!(names(&outputs), [("release", "b"), ("notify", "order-1")]);
    }

    #[test]
    fn duplicates_are_ignored() {
        let mut state = MemoryState::new();
        run(&pending(&[("a", 1), ("b", 1)]), &mut state);
        run(&result("a", 1, true), &mut state);
        let before = state.clone();
        // A second result for `a` (even a different one) changes nothing.
        assert!(run(&result("a", 1, false), &mut state).is_empty());
        assert!(run(&pending(&[("a", 1), ("b", 1)]), &mut state).is_empty());
        assert_eq!(state, before);
        let outputs = run(&result("b", 1, true), &mut state);
        assert_eq!(outputs[0].0, "confirmed");

        // Before the pending event too.
        let mut state = MemoryState::new();
        run(&result("a", 1, true), &mut state);
        assert!(run(&result("a", 1, false), &mut state).is_empty());
        let outputs = run(&pending(&[("a", 1)]), &mut state);
        assert_eq!(outputs[0].0, "confirmed");
    }

    fn refused(products: &[&str], reason: &str) -> StageInput {
        let payload = json!({"kind": "order_refused", "order_id": "order-1",
                             "customer_id": "cust-456", "products": products,
                             "reason": reason});
        StageInput::new(
            "evt-r",
            "InventoryResult",
            Some("order-1"),
            payload.to_string(),
        )
    }

    #[test]
    fn a_refused_order_is_rejected_with_a_notification() {
        let reason = "items[1].quantity: the quantity of product p over the order's lines \
                      must be at most 9007199254740991";
        let mut state = MemoryState::new();
        let outputs = run(&refused(&["p"], reason), &mut state);
        assert_eq!(names(&outputs), [("notify", "order-1")]);
        assert_eq!(
            outputs[0].2,
            json!({"order_id": "order-1", "customer_id": "cust-456", "kind": "order_rejected",
                   "message": format!("Your order order-1 was rejected: {reason}."),
                   "short_products": ["p"]})
        );
        assert!(state.is_empty(), "nothing kept: {state:?}");
    }

    #[test]
    fn a_refusal_releases_what_a_join_holds_and_forgets_it() {
        let mut state = MemoryState::new();
        run(&result("a", 2, true), &mut state);
        run(&result("b", 1, false), &mut state);
        let outputs = run(&refused(&["c", "a", "c"], "too much"), &mut state);
        assert_eq!(names(&outputs), [("release", "a"), ("notify", "order-1")]);
        assert_eq!(
            outputs[0].2,
            json!({"command": "release", "order_id": "order-1", "product_id": "a", "quantity": 2})
        );
        assert_eq!(outputs[1].2["short_products"], json!(["a", "c"]));
        assert!(state.is_empty(), "the join is deleted: {state:?}");

        let err = handle(&refused(&[], "why"), &mut MemoryState::new()).expect_err("empty");
        assert_eq!(
            err.message(),
            "invalid InventoryResult payload: products must not be empty"
        );
    }

    #[test]
    fn handling_is_deterministic() {
        let mut a = MemoryState::new();
        let mut b = MemoryState::new();
        for event in [
            pending(&[("x", 1), ("y", 2)]),
            result("y", 2, true),
            result("x", 1, false),
        ] {
            assert_eq!(handle(&event, &mut a), handle(&event, &mut b));
            assert_eq!(a, b);
        }
    }

    #[test]
    fn inconsistent_results_are_rejected_without_saving() {
        let mut state = MemoryState::new();
        run(&pending(&[("a", 1)]), &mut state);
        let before = state.clone();
        let err = handle(&result("z", 1, true), &mut state).expect_err("stray");
        assert_eq!(err.message(), "order order-1 has no product z");
        let err = handle(&result("a", 0, true), &mut state).expect_err("zero");
        assert_eq!(
            err.message(),
            "invalid InventoryResult payload: quantity must be greater than 0 (got 0)"
        );
        assert_eq!(state, before);

        let mut state = MemoryState::new();
        run(&result("z", 1, true), &mut state);
        let err = handle(&pending(&[("a", 1)]), &mut state).expect_err("stray before");
        assert_eq!(
            err.message(),
            "order order-1 has reservation results for products it does not have: z"
        );

        let mut wrong_key = result("a", 1, true);
        wrong_key.key = Some("a".into());
        let err = handle(&wrong_key, &mut MemoryState::new()).expect_err("key");
        assert_eq!(
            err.message(),
            "the record key must be the order_id \"order-1\" (got \"a\")"
        );

        let mut state = MemoryState::new();
        state.set("order/order-1", b"{".to_vec());
        let err = handle(&result("a", 1, true), &mut state).expect_err("corrupt");
        assert!(
            err.message()
                .starts_with("state order/order-1 is not a reservation join: "),
            "{err}"
        );

        let err = handle(
            &StageInput::new("e", "InventoryResult", Some("o"), r#"{"kind":"lost"}"#),
            &mut MemoryState::new(),
        )
        .expect_err("unknown kind");
        assert!(
            err.message()
                .starts_with("invalid InventoryResult payload: "),
            "{err}"
        );
    }
}
