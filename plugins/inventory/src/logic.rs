//! The inventory stage's pure logic: confirm an order when every line is in stock.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use serde::Deserialize;
use stage_events::{
    Notification, NotificationKind, OrderConfirmed, OrderReceived, StageFailure, StageOutput,
};

/// Output name of a confirmed order.
pub const OUTPUT_CONFIRMED: &str = "confirmed";
/// Output name of the customer notification (confirmed or rejected).
pub const OUTPUT_NOTIFY: &str = "notify";

/// The stage's `config` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Stock per product id. A product that is not listed has no stock.
    #[serde(default)]
    pub catalog: BTreeMap<String, u64>,
}

/// Parses the stage's `config` table (the JSON object from `config::get-all`).
///
/// # Errors
/// [`StageFailure::Reject`] naming the offending key, e.g. a negative stock under
/// `catalog.<product>`.
pub fn parse_config(json: &str) -> Result<Config, StageFailure> {
    stage_events::parse_config(json)
}

/// Checks the received order against the catalog.
///
/// When every product has enough stock (quantities of repeated product lines are added up)
/// the outputs are `confirmed` (the order with `"status": "confirmed"`) and `notify` (kind
/// `order_confirmed`). Otherwise the only output is `notify` with kind `order_rejected` and
/// the sorted `short_products`. Stock is not decremented. Every output is keyed by the
/// order id.
///
/// # Errors
/// [`StageFailure::Reject`] if the payload is not an `OrderReceived` or a quantity is not
/// positive.
pub fn handle(
    payload: &str,
    _event_id: &str,
    config: &Config,
) -> Result<Vec<StageOutput>, StageFailure> {
    let order = stage_events::parse_payload::<OrderReceived>(payload, "OrderReceived")?.order;

    let mut wanted: BTreeMap<&str, u128> = BTreeMap::new();
    for (i, item) in order.items.iter().enumerate() {
        let quantity = u128::try_from(item.quantity)
            .ok()
            .filter(|q| *q > 0)
            .ok_or_else(|| {
                StageFailure::Reject(format!(
                    "invalid OrderReceived payload: items[{i}].quantity must be greater than 0 (got {})",
                    item.quantity
                ))
            })?;
        *wanted.entry(item.product_id.as_str()).or_default() += quantity;
    }
    // BTreeMap iteration is sorted, so `short` is sorted and free of duplicates.
    let short: Vec<String> = wanted
        .iter()
        .filter(|(product, quantity)| {
            let stock = config.catalog.get(**product).copied().unwrap_or(0);
            **quantity > u128::from(stock)
        })
        .map(|(product, _)| (*product).to_owned())
        .collect();

    let key = order.order_id.clone();
    if short.is_empty() {
        let notification = Notification::new(
            &order.order_id,
            &order.customer_id,
            NotificationKind::OrderConfirmed,
            format!("Your order {} is confirmed.", order.order_id),
        );
        Ok(vec![
            StageOutput::json(OUTPUT_CONFIRMED, &key, &OrderConfirmed::new(order))?,
            StageOutput::json(OUTPUT_NOTIFY, &key, &notification)?,
        ])
    } else {
        let mut notification = Notification::new(
            &order.order_id,
            &order.customer_id,
            NotificationKind::OrderRejected,
            format!(
                "Your order {} was rejected: not enough stock for {}.",
                order.order_id,
                short.join(", ")
            ),
        );
        notification.short_products = Some(short);
        Ok(vec![StageOutput::json(OUTPUT_NOTIFY, &key, &notification)?])
    }
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

    fn seed() -> String {
        received(json!([{"product_id": "prod-789", "name": "Test Product",
                         "quantity": 2, "price": 19.99}]))
    }

    fn config(stock: &[(&str, u64)]) -> Config {
        Config {
            catalog: stock.iter().map(|(p, n)| ((*p).to_owned(), *n)).collect(),
        }
    }

    fn json_of(out: &StageOutput) -> Value {
        serde_json::from_str(&out.payload).expect("payload is JSON")
    }

    #[test]
    fn in_stock_order_is_confirmed_and_notified() {
        let outputs = handle(&seed(), "evt-1", &config(&[("prod-789", 1_000_000)])).expect("ok");
        assert_eq!(outputs.len(), 2);
        assert_eq!(outputs[0].output, "confirmed");
        assert_eq!(outputs[1].output, "notify");
        for out in &outputs {
            assert_eq!(out.key.as_deref(), Some("order-1"));
        }
        let mut expected: Value = serde_json::from_str(&seed()).expect("JSON");
        expected["status"] = json!("confirmed");
        assert_eq!(json_of(&outputs[0]), expected);
        assert_eq!(
            json_of(&outputs[1]),
            json!({"order_id": "order-1", "customer_id": "cust-456", "kind": "order_confirmed",
                   "message": "Your order order-1 is confirmed."})
        );
    }

    #[test]
    fn exact_stock_is_enough() {
        let outputs = handle(&seed(), "evt-1", &config(&[("prod-789", 2)])).expect("ok");
        assert_eq!(outputs[0].output, "confirmed");
    }

    #[test]
    fn short_order_is_only_notified_as_rejected() {
        let outputs = handle(&seed(), "evt-1", &config(&[("prod-789", 1)])).expect("ok");
        assert_eq!(outputs.len(), 1);
        assert_eq!(outputs[0].output, "notify");
        assert_eq!(outputs[0].key.as_deref(), Some("order-1"));
        assert_eq!(
            json_of(&outputs[0]),
            json!({"order_id": "order-1", "customer_id": "cust-456", "kind": "order_rejected",
                   "message": "Your order order-1 was rejected: not enough stock for prod-789.",
                   "short_products": ["prod-789"]})
        );
    }

    #[test]
    fn unknown_product_has_no_stock() {
        let outputs = handle(&seed(), "evt-1", &Config::default()).expect("ok");
        assert_eq!(json_of(&outputs[0])["short_products"], json!(["prod-789"]));
    }

    #[test]
    fn repeated_product_lines_are_summed() {
        let payload = received(json!([
            {"product_id": "p", "quantity": 2, "price": 1.0},
            {"product_id": "q", "quantity": 1, "price": 1.0},
            {"product_id": "p", "quantity": 2, "price": 1.0}
        ]));
        // 4 of p wanted: 3 in stock is short although each line alone would fit.
        let short = handle(&payload, "e", &config(&[("p", 3), ("q", 5)])).expect("ok");
        assert_eq!(short.len(), 1);
        assert_eq!(json_of(&short[0])["short_products"], json!(["p"]));
        let ok = handle(&payload, "e", &config(&[("p", 4), ("q", 5)])).expect("ok");
        assert_eq!(ok[0].output, "confirmed");
    }

    #[test]
    fn short_products_are_sorted_and_unique() {
        let payload = received(json!([
            {"product_id": "zeta", "quantity": 1, "price": 1.0},
            {"product_id": "alpha", "quantity": 1, "price": 1.0},
            {"product_id": "zeta", "quantity": 1, "price": 1.0},
            {"product_id": "mid", "quantity": 1, "price": 1.0}
        ]));
        let outputs = handle(&payload, "e", &config(&[("mid", 1)])).expect("ok");
        let n = json_of(&outputs[0]);
        assert_eq!(n["short_products"], json!(["alpha", "zeta"]));
        assert_eq!(
            n["message"],
            "Your order order-1 was rejected: not enough stock for alpha, zeta."
        );
    }

    #[test]
    fn handling_is_deterministic() {
        let cfg = config(&[("prod-789", 1)]);
        assert_eq!(handle(&seed(), "a", &cfg), handle(&seed(), "a", &cfg));
    }

    #[test]
    fn wrong_or_malformed_input_is_rejected() {
        let cfg = Config::default();
        let err = handle("not json", "e", &cfg).expect_err("malformed");
        assert!(matches!(err, StageFailure::Reject(_)));
        assert!(
            err.message().starts_with("invalid OrderReceived payload: "),
            "{err}"
        );

        let confirmed = seed().replace("\"received\"", "\"confirmed\"");
        let err = handle(&confirmed, "e", &cfg).expect_err("wrong status");
        assert!(
            err.message().starts_with(
                "invalid OrderReceived payload: status must be \"received\" (got \"confirmed\")"
            ),
            "{err}"
        );

        let no_status = json!({"order_id": "o", "customer_id": "c", "items": [], "total": 0});
        let err = handle(&no_status.to_string(), "e", &cfg).expect_err("no status");
        assert!(err.message().contains("missing field `status`"), "{err}");

        let bad_qty = received(json!([{"product_id": "p", "quantity": 0, "price": 1.0}]));
        let err = handle(&bad_qty, "e", &cfg).expect_err("zero quantity");
        assert_eq!(
            err.message(),
            "invalid OrderReceived payload: items[0].quantity must be greater than 0 (got 0)"
        );

        let string_qty = received(json!([{"product_id": "p", "quantity": "2", "price": 1.0}]));
        let err = handle(&string_qty, "e", &cfg).expect_err("string quantity");
        assert!(
            err.message()
                .starts_with("invalid OrderReceived payload: items[0].quantity: invalid type"),
            "{err}"
        );
    }

    #[test]
    fn config_is_parsed_with_defaults_and_named_errors() {
        assert_eq!(parse_config("{}").expect("empty"), Config::default());
        assert_eq!(
            parse_config(r#"{"catalog": {"prod-789": 1000000}}"#).expect("catalog"),
            config(&[("prod-789", 1_000_000)])
        );
        let err = parse_config(r#"{"catalog": {"prod-789": -1}}"#).expect_err("negative");
        assert!(
            err.message()
                .starts_with("invalid stage config: catalog.prod-789: "),
            "{err}"
        );
        let err = parse_config(r#"{"catalog": {"prod-789": "many"}}"#).expect_err("string");
        assert!(err.message().contains("catalog.prod-789"), "{err}");
        let err = parse_config(r#"{"catalogue": {}}"#).expect_err("typo");
        assert!(err.message().contains("unknown field `catalogue`"), "{err}");
    }
}
