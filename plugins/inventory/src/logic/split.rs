//! Stage `inventory` (event type `OrderReceived`, no state): split an order into the
//! reservation of each of its products, or refuse an order whose quantities cannot be
//! processed.

use stage_events::{
    InventoryCommand, InventoryResult, Order, OrderPending, OrderReceived, OrderRefused,
    QuantityError, QuantityProblem, ReserveCommand,
};
use stagehost_sdk::{StageFailure, StageOutput};

use super::{OUTPUT_PENDING, OUTPUT_RESERVE};

/// Outputs first `pending` (an `order_pending` result keyed by the order id, carrying the
/// order as received and its sorted distinct product ids), then one `reserve` command per
/// product, sorted by product id and keyed by it, for the sum of the product's lines.
///
/// An order whose quantities cannot be processed ([`Order::quantities`]: a quantity that is
/// not positive, or a line, a product's sum or the order's sum above
/// [`stage_events::MAX_QUANTITY`]) gets one `pending` output instead: an `order_refused`
/// result, which the reservation stage turns into a rejection and a customer notification.
/// The order stage refuses such orders, so only an event written by something else (or
/// before the limits) gets here; it must still reach a final outcome, not a dead letter.
///
/// # Errors
/// [`StageFailure::Reject`] if the payload is not an `OrderReceived`.
pub fn handle(payload: &str) -> Result<Vec<StageOutput>, StageFailure> {
    let order: OrderReceived = stagehost_sdk::parse_payload(payload, "OrderReceived")?;
    let wanted = match order.order.quantities() {
        Ok(wanted) => wanted,
        Err(error) => return refuse(&order.order, &error),
    };
    let order_id = order.order.order_id.clone();
    let customer_id = order.order.customer_id.clone();

    let reserves: Vec<StageOutput> = wanted
        .iter()
        .map(|(product_id, quantity)| {
            let command = InventoryCommand::Reserve(ReserveCommand {
                order_id: order_id.clone(),
                customer_id: customer_id.clone(),
                product_id: (*product_id).to_owned(),
                quantity: *quantity,
            });
            StageOutput::json(OUTPUT_RESERVE, product_id, &command)
        })
        .collect::<Result<_, _>>()?;
    let products = wanted.keys().map(|p| (*p).to_owned()).collect();

    let pending = InventoryResult::OrderPending(OrderPending {
        order_id: order_id.clone(),
        order,
        products,
    });
    let mut outputs = vec![StageOutput::json(OUTPUT_PENDING, &order_id, &pending)?];
    outputs.extend(reserves);
    Ok(outputs)
}

/// The `order_refused` result for `order`: the products are the offending line's product,
/// or every product of the order when the order as a whole is too large.
fn refuse(order: &Order, error: &QuantityError) -> Result<Vec<StageOutput>, StageFailure> {
    let mut products: Vec<String> = match error.problem {
        QuantityProblem::OrderTooLarge => order
            .items
            .iter()
            .map(|item| item.product_id.clone())
            .collect(),
        QuantityProblem::NotPositive(_)
        | QuantityProblem::LineTooLarge(_)
        | QuantityProblem::ProductTooLarge => vec![error.product_id.clone()],
    };
    products.sort();
    products.dedup();
    let refused = InventoryResult::OrderRefused(OrderRefused {
        order_id: order.order_id.clone(),
        customer_id: order.customer_id.clone(),
        products,
        reason: error.to_string(),
    });
    Ok(vec![StageOutput::json(
        OUTPUT_PENDING,
        &order.order_id,
        &refused,
    )?])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn received(items: Value) -> String {
        json!({"order_id": "order-1", "customer_id": "cust-456", "items": items,
               "total": 0.0, "timestamp": "2026-11-25T10:00:00Z", "status": "received"})
        .to_string()
    }

    fn json_of(out: &StageOutput) -> Value {
        serde_json::from_str(&out.payload).expect("payload is JSON")
    }

    #[test]
    fn seed_order_is_pending_then_reserved() {
        let input = received(json!([{"product_id": "prod-789", "name": "Test Product",
                                     "quantity": 2, "price": 19.99}]));
        let outputs = handle(&input).expect("ok");
        assert_eq!(outputs.len(), 2);
        assert_eq!(outputs[0].output, "pending");
        assert_eq!(outputs[0].key.as_deref(), Some("order-1"));
        let order: Value = serde_json::from_str(&input).expect("JSON");
        assert_eq!(
            json_of(&outputs[0]),
            json!({"kind": "order_pending", "order_id": "order-1", "order": order,
                   "products": ["prod-789"]})
        );
        assert_eq!(outputs[1].output, "reserve");
        assert_eq!(outputs[1].key.as_deref(), Some("prod-789"));
        assert_eq!(
            json_of(&outputs[1]),
            json!({"command": "reserve", "order_id": "order-1", "customer_id": "cust-456",
                   "product_id": "prod-789", "quantity": 2})
        );
    }

    #[test]
    fn repeated_products_are_summed_and_sorted() {
        let input = received(json!([
            {"product_id": "zeta", "quantity": 2, "price": 1.0},
            {"product_id": "alpha", "quantity": 1, "price": 1.0},
            {"product_id": "zeta", "quantity": 3, "price": 1.0},
            {"product_id": "mid", "quantity": 4, "price": 1.0}
        ]));
        let outputs = handle(&input).expect("ok");
        let outputs_and_keys: Vec<(&str, Option<&str>)> = outputs
            .iter()
            .map(|o| (o.output.as_str(), o.key.as_deref()))
            .collect();
        assert_eq!(
            outputs_and_keys,
            [
                ("pending", Some("order-1")),
                ("reserve", Some("alpha")),
                ("reserve", Some("mid")),
                ("reserve", Some("zeta")),
            ]
        );
        assert_eq!(
            json_of(&outputs[0])["products"],
            json!(["alpha", "mid", "zeta"])
        );
        let quantities: Vec<Value> = outputs[1..]
            .iter()
            .map(|o| json_of(o)["quantity"].clone())
            .collect();
        assert_eq!(quantities, [json!(1), json!(4), json!(5)]);
        // The pending result carries the order lines untouched (not summed).
        assert_eq!(
            json_of(&outputs[0])["order"]["items"]
                .as_array()
                .expect("items")
                .len(),
            4
        );
    }

    #[test]
    fn handling_is_deterministic() {
        let input = received(json!([{"product_id": "b", "quantity": 1, "price": 1.0},
                                    {"product_id": "a", "quantity": 1, "price": 1.0}]));
        assert_eq!(handle(&input), handle(&input));
    }

    #[test]
    fn wrong_or_malformed_input_is_rejected() {
        let err = handle("not json").expect_err("malformed");
        assert!(matches!(err, StageFailure::Reject(_)));
        assert!(
            err.message().starts_with("invalid OrderReceived payload: "),
            "{err}"
        );

        let confirmed = received(json!([{"product_id": "p", "quantity": 1, "price": 1.0}]))
            .replace("\"received\"", "\"confirmed\"");
        let err = handle(&confirmed).expect_err("wrong status");
        assert!(
            err.message().starts_with(
                "invalid OrderReceived payload: status must be \"received\" (got \"confirmed\")"
            ),
            "{err}"
        );
    }

    #[test]
    fn unprocessable_quantities_are_refused_not_dead_lettered() {
        // Issue 11: two lines of 5e18 units overflowed here into the dead-letter queue.
        let cases = [
            (
                json!([{"product_id": "p", "quantity": 5_000_000_000_000_000_000_i64, "price": 0.0},
                       {"product_id": "p", "quantity": 5_000_000_000_000_000_000_i64, "price": 0.0}]),
                json!(["p"]),
                "items[0].quantity must be at most 9007199254740991 (got 5000000000000000000)",
            ),
            (
                json!([{"product_id": "p", "quantity": 5_000_000_000_000_000_i64, "price": 0.0},
                       {"product_id": "q", "quantity": 1, "price": 0.0},
                       {"product_id": "p", "quantity": 5_000_000_000_000_000_i64, "price": 0.0}]),
                json!(["p"]),
                "items[2].quantity: the quantity of product p over the order's lines must be \
                 at most 9007199254740991",
            ),
            (
                json!([{"product_id": "z", "quantity": 5_000_000_000_000_000_i64, "price": 0.0},
                       {"product_id": "a", "quantity": 1, "price": 0.0},
                       {"product_id": "m", "quantity": 5_000_000_000_000_000_i64, "price": 0.0}]),
                json!(["a", "m", "z"]),
                "items[2].quantity: the quantity of the whole order must be at most \
                 9007199254740991",
            ),
            (
                json!([{"product_id": "p", "quantity": 1, "price": 1.0},
                       {"product_id": "q", "quantity": 0, "price": 1.0}]),
                json!(["q"]),
                "items[1].quantity must be greater than 0 (got 0)",
            ),
            (
                json!([{"product_id": "p", "quantity": i64::MAX, "price": 0.0},
                       {"product_id": "p", "quantity": 1, "price": 0.0}]),
                json!(["p"]),
                "items[0].quantity must be at most 9007199254740991 (got 9223372036854775807)",
            ),
        ];
        for (items, products, reason) in cases {
            let outputs = handle(&received(items)).expect("refused, not an error");
            assert_eq!(outputs.len(), 1, "no reserve command: {outputs:?}");
            assert_eq!(outputs[0].output, "pending");
            assert_eq!(outputs[0].key.as_deref(), Some("order-1"));
            assert_eq!(
                json_of(&outputs[0]),
                json!({"kind": "order_refused", "order_id": "order-1",
                       "customer_id": "cust-456", "products": products, "reason": reason})
            );
        }
    }
}
