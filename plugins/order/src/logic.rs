//! The order stage's pure logic: validate the order posted to the HTTP ingress.
//!
//! Every problem is a `reject`, which the host answers with HTTP 400 and the message. The
//! rules beyond the structure:
//!
//! - **Exact amounts.** `price` and `total` are read from the literal text the client wrote
//!   (never through an `f64`) and must be whole numbers of cents from 0 to 1000000000000.00
//!   ([`stage_events::money`]). A price with a non-zero digit past the second decimal place
//!   is refused, not rounded: a rounded unit price makes whole lines wrong (1,000 units at
//!   0.004 would cost 0.00). A line costs exactly `quantity x price` in integer cents; each
//!   line and their sum must be at most the same maximum, and `total` must equal the sum.
//! - **Quantities** are from 1 to 2^53 - 1 ([`stage_events::MAX_QUANTITY`]) per line, per
//!   product over the order's lines and per order, so no later stage can overflow summing
//!   them.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use stage_events::{
    Item, MAX_CENTS, MAX_QUANTITY, Order, OrderReceived, cents_to_f64, format_cents, parse_cents,
};
use stagehost_sdk::{StageFailure, StageOutput};

/// Output name of an accepted order.
pub const OUTPUT_RECEIVED: &str = "received";

/// The stage's `config` table. The order stage has no settings; any key is rejected so that
/// a misplaced setting is noticed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {}

/// Parses the stage's `config` table (the JSON object from `config::get-all`).
///
/// # Errors
/// [`StageFailure::Reject`] naming the offending key.
pub fn parse_config(json: &str) -> Result<Config, StageFailure> {
    stagehost_sdk::parse_config(json)
}

/// Validates the order in `payload` and emits it as `received` with `"status": "received"`,
/// keyed by the order id.
///
/// # Errors
/// [`StageFailure::Reject`] for malformed JSON or an invalid order; the message names every
/// offending field (several problems are joined with `; `).
pub fn handle(
    payload: &str,
    _event_id: &str,
    _config: &Config,
) -> Result<Vec<StageOutput>, StageFailure> {
    let order = validate(payload).map_err(StageFailure::Reject)?;
    let key = order.order_id.clone();
    Ok(vec![StageOutput::json(
        OUTPUT_RECEIVED,
        &key,
        &OrderReceived::new(order),
    )?])
}

/// One accepted order line with its exact price.
struct Line {
    item: Item,
    price_cents: i64,
}

/// Parses and validates an order, returning every problem found.
///
/// # Errors
/// The problems, joined with `; `.
pub fn validate(payload: &str) -> Result<Order, String> {
    let value: Value = serde_json::from_str(payload).map_err(|e| format!("malformed JSON: {e}"))?;
    let Value::Object(obj) = value else {
        return Err(format!(
            "order must be a JSON object (got {})",
            kind_of(&value)
        ));
    };
    let literals = Literals::read(payload);

    let mut problems = Vec::new();
    let order_id = required_id(&obj, "order_id", "order_id", &mut problems);
    let customer_id = required_id(&obj, "customer_id", "customer_id", &mut problems);
    let lines = lines(&obj, &literals.prices, &mut problems);
    let total = match obj.get("total") {
        None | Some(Value::Null) => {
            problems.push("total is missing".to_owned());
            None
        }
        Some(v) => amount(v, literals.total, "total", &mut problems),
    };
    let timestamp = match obj.get("timestamp") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            problems.push(format!("timestamp must be a string (got {})", short(other)));
            None
        }
    };

    let (Some(order_id), Some(customer_id), Some(lines), Some(total)) =
        (order_id, customer_id, lines, total)
    else {
        return Err(problems.join("; "));
    };
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    let order = Order {
        order_id,
        customer_id,
        items: lines.iter().map(|line| line.item.clone()).collect(),
        total: cents_to_f64(total),
        timestamp,
    };
    order.quantities().map_err(|e| e.to_string())?;
    check_amounts(&lines, total)?;
    Ok(order)
}

/// Checks that each line (`quantity x price`) and their sum are at most [`MAX_CENTS`] and
/// that the total equals the sum, all in exact integer cents.
fn check_amounts(lines: &[Line], total: i64) -> Result<(), String> {
    let max = i128::from(MAX_CENTS);
    let mut problems = Vec::new();
    let mut sum: i128 = 0;
    for (i, line) in lines.iter().enumerate() {
        let amount = i128::from(line.item.quantity) * i128::from(line.price_cents);
        if amount > max {
            problems.push(format!(
                "items[{i}]: quantity x price {} must be at most {}",
                format_cents(amount),
                format_cents(max)
            ));
        }
        // Any sum past the maximum is refused, so saturating is exact enough.
        sum = sum.saturating_add(amount);
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    if sum > max {
        return Err(format!(
            "total: the sum of the lines {} must be at most {}",
            format_cents(sum),
            format_cents(max)
        ));
    }
    let total = i128::from(total);
    if total == sum {
        Ok(())
    } else {
        Err(format!(
            "total {} does not equal the sum of the lines {}",
            format_cents(total),
            format_cents(sum)
        ))
    }
}

/// The literal text of `total` and of each line's `price`, as the client wrote them (a
/// `serde_json::Value` keeps only an `f64`, which has already rounded `0.30000000000000001`
/// to `0.3`). A field that is absent, or whose container is not the expected shape, has no
/// literal; the structural checks on the `Value` report those.
#[derive(Debug, Default)]
struct Literals<'a> {
    total: Option<&'a str>,
    prices: Vec<Option<&'a str>>,
}

impl<'a> Literals<'a> {
    fn read(payload: &'a str) -> Self {
        // Duplicate keys: the last one wins, as in `serde_json::Value`.
        type Object<'a> = BTreeMap<String, &'a RawValue>;
        let Ok(top) = serde_json::from_str::<Object<'a>>(payload) else {
            return Self::default();
        };
        let prices = top
            .get("items")
            .and_then(|items| serde_json::from_str::<Vec<&'a RawValue>>(items.get()).ok())
            .map(|items| {
                items
                    .iter()
                    .map(|item| {
                        serde_json::from_str::<Object<'a>>(item.get())
                            .ok()
                            .and_then(|fields| fields.get("price").map(|p| p.get()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            total: top.get("total").map(|t| t.get()),
            prices,
        }
    }
}

/// An amount field: a JSON number whose literal is a whole number of cents in range.
fn amount(
    value: &Value,
    literal: Option<&str>,
    at: &str,
    problems: &mut Vec<String>,
) -> Option<i64> {
    if !value.is_number() {
        problems.push(format!("{at} must be a number (got {})", short(value)));
        return None;
    }
    let printed;
    let literal = match literal {
        Some(literal) => literal,
        None => {
            printed = value.to_string();
            &printed
        }
    };
    match parse_cents(literal) {
        Ok(cents) => Some(cents),
        Err(error) => {
            problems.push(format!("{at} {error} (got {})", clip(literal.trim())));
            None
        }
    }
}

fn lines(
    obj: &Map<String, Value>,
    prices: &[Option<&str>],
    problems: &mut Vec<String>,
) -> Option<Vec<Line>> {
    let list = match obj.get("items") {
        None | Some(Value::Null) => {
            problems.push("items is missing".to_owned());
            return None;
        }
        Some(Value::Array(list)) => list,
        Some(other) => {
            problems.push(format!("items must be an array (got {})", short(other)));
            return None;
        }
    };
    if list.is_empty() {
        problems.push("items must contain at least one item".to_owned());
        return None;
    }
    let before = problems.len();
    let parsed: Vec<Option<Line>> = list
        .iter()
        .enumerate()
        .map(|(i, v)| line(i, v, prices.get(i).copied().flatten(), problems))
        .collect();
    if problems.len() > before {
        return None;
    }
    parsed.into_iter().collect()
}

fn line(
    index: usize,
    value: &Value,
    price_literal: Option<&str>,
    problems: &mut Vec<String>,
) -> Option<Line> {
    let at = format!("items[{index}]");
    let Value::Object(obj) = value else {
        problems.push(format!("{at} must be an object (got {})", short(value)));
        return None;
    };
    let product_id = required_id(obj, "product_id", &format!("{at}.product_id"), problems);
    let name = match obj.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            problems.push(format!("{at}.name must be a string (got {})", short(other)));
            None
        }
    };
    let quantity = match obj.get("quantity") {
        None | Some(Value::Null) => {
            problems.push(format!("{at}.quantity is missing"));
            None
        }
        Some(v) => match v.as_i64() {
            Some(q) if q < 1 => {
                problems.push(format!("{at}.quantity must be greater than 0 (got {q})"));
                None
            }
            Some(q) if q > MAX_QUANTITY => {
                problems.push(format!(
                    "{at}.quantity must be at most {MAX_QUANTITY} (got {q})"
                ));
                None
            }
            Some(q) => Some(q),
            None if v.is_u64() => {
                problems.push(format!(
                    "{at}.quantity must be at most {MAX_QUANTITY} (got {v})"
                ));
                None
            }
            None => {
                problems.push(format!(
                    "{at}.quantity must be an integer (got {})",
                    short(v)
                ));
                None
            }
        },
    };
    let price = match obj.get("price") {
        None | Some(Value::Null) => {
            problems.push(format!("{at}.price is missing"));
            None
        }
        Some(v) => amount(v, price_literal, &format!("{at}.price"), problems),
    };
    let price_cents = price?;
    Some(Line {
        item: Item {
            product_id: product_id?,
            name,
            quantity: quantity?,
            price: cents_to_f64(price_cents),
        },
        price_cents,
    })
}

/// A required, non-empty (after trimming) string field.
fn required_id(
    obj: &Map<String, Value>,
    key: &str,
    at: &str,
    problems: &mut Vec<String>,
) -> Option<String> {
    match obj.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        None | Some(Value::Null) => {
            problems.push(format!("{at} is missing or empty"));
            None
        }
        Some(Value::String(_)) => {
            problems.push(format!("{at} is missing or empty"));
            None
        }
        Some(other) => {
            problems.push(format!("{at} must be a string (got {})", short(other)));
            None
        }
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A value for an error message: scalars as JSON, containers by kind.
fn short(value: &Value) -> String {
    match value {
        Value::Array(_) | Value::Object(_) => kind_of(value).to_owned(),
        Value::String(s) if s.chars().count() > 40 => {
            let cut: String = s.chars().take(40).collect();
            format!("\"{cut}...\"")
        }
        other => other.to_string(),
    }
}

/// A literal for an error message, cut after 40 characters.
fn clip(text: &str) -> String {
    if text.chars().count() > 40 {
        let cut: String = text.chars().take(40).collect();
        format!("{cut}...")
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SEED: &str = r#"{"order_id":"order-1","customer_id":"cust-456","items":[{"product_id":"prod-789","name":"Test Product","quantity":2,"price":19.99}],"total":39.98,"timestamp":"2026-11-25T10:00:00Z"}"#;

    fn seed() -> Value {
        serde_json::from_str(SEED).expect("seed is JSON")
    }

    fn run(payload: &Value) -> Result<Vec<StageOutput>, StageFailure> {
        handle(&payload.to_string(), "evt-1", &Config::default())
    }

    fn reject_message(payload: &Value) -> String {
        match run(payload) {
            Err(StageFailure::Reject(msg)) => msg,
            other => panic!("expected a reject for {payload}, got {other:?}"),
        }
    }

    #[test]
    fn valid_seed_order_is_received_with_status() {
        let outputs = handle(SEED, "evt-1", &Config::default()).expect("valid order");
        assert_eq!(outputs.len(), 1);
        let out = &outputs[0];
        assert_eq!(out.output, "received");
        assert_eq!(out.key.as_deref(), Some("order-1"));
        let mut expected = seed();
        expected["status"] = json!("received");
        let got: Value = serde_json::from_str(&out.payload).expect("payload is JSON");
        assert_eq!(got, expected);
    }

    #[test]
    fn handling_is_deterministic() {
        let a = handle(SEED, "evt-1", &Config::default());
        let b = handle(SEED, "evt-1", &Config::default());
        assert_eq!(a, b);
    }

    #[test]
    fn optional_fields_may_be_absent_and_unknown_fields_are_dropped() {
        let payload = json!({
            "order_id": "o", "customer_id": "c", "coupon": "XMAS",
            "items": [{"product_id": "p", "quantity": 1, "price": 0}],
            "total": 0
        });
        let out = run(&payload).expect("valid");
        let got: Value = serde_json::from_str(&out[0].payload).expect("JSON");
        assert_eq!(
            got,
            json!({"order_id": "o", "customer_id": "c",
                   "items": [{"product_id": "p", "quantity": 1, "price": 0.0}],
                   "total": 0.0, "status": "received"})
        );
    }

    #[test]
    fn amounts_are_exact_cents() {
        let mut p = seed();
        p["items"][0]["quantity"] = json!(3);
        p["total"] = json!(59.97);
        run(&p).expect("3 x 19.99 = 59.97");

        // Several lines whose float sum drifts still match exactly.
        let p = json!({"order_id": "o", "customer_id": "c",
            "items": [{"product_id": "a", "quantity": 1, "price": 0.1},
                      {"product_id": "b", "quantity": 1, "price": 0.2}],
            "total": 0.3});
        run(&p).expect("0.1 + 0.2 = 0.30");

        // 1,000 units at 0.04 cost 40.00, not 1,000 x a rounded unit price.
        let p = json!({"order_id": "o", "customer_id": "c",
            "items": [{"product_id": "a", "quantity": 1000, "price": 0.04}],
            "total": 40});
        run(&p).expect("1000 x 0.04 = 40.00");
    }

    #[test]
    fn amounts_are_read_from_the_literal_the_client_wrote() {
        let order = |price: &str, total: &str| {
            format!(
                r#"{{"order_id":"o","customer_id":"c","items":[{{"product_id":"a","quantity":2,"price":{price}}}],"total":{total}}}"#
            )
        };
        let reject = |body: &str| match handle(body, "evt-1", &Config::default()) {
            Err(StageFailure::Reject(msg)) => msg,
            other => panic!("expected a reject for {body}, got {other:?}"),
        };
        // Same value, other spellings: accepted and written in their shortest form.
        for (price, total) in [
            ("19.990", "39.98"),
            ("1.999e1", "3.998E+1"),
            ("1999e-2", "39.980"),
        ] {
            let outputs = handle(&order(price, total), "evt-1", &Config::default())
                .unwrap_or_else(|e| panic!("{price} / {total}: {e}"));
            let got: Value = serde_json::from_str(&outputs[0].payload).expect("JSON");
            assert_eq!(got["items"][0]["price"], json!(19.99));
            assert_eq!(got["total"], json!(39.98));
            assert!(
                outputs[0]
                    .payload
                    .contains(r#""price":19.99}],"total":39.98,"#),
                "{}",
                outputs[0].payload
            );
        }
        // An f64 would round these to 19.99 and 39.98; the literal is not whole cents.
        assert_eq!(
            reject(&order("19.990000000000000001", "39.98")),
            "items[0].price must be a whole number of cents, with at most 2 decimal places \
             (got 19.990000000000000001)"
        );
        assert_eq!(
            reject(&order("19.99", "39.980000000000000001")),
            "total must be a whole number of cents, with at most 2 decimal places \
             (got 39.980000000000000001)"
        );
        // With duplicate keys the last one counts, for the value and for its literal alike.
        let body = r#"{"order_id":"o","customer_id":"c","total":1e300,"items":[{"product_id":"a","quantity":2,"price":0.004,"price":19.99}],"total":39.98}"#;
        handle(body, "evt-1", &Config::default()).expect("the last keys are valid");
        // Long literals are cut in the message.
        let long = format!("1.{}1", "0".repeat(60));
        assert_eq!(
            reject(&order(&long, "2.00")),
            format!(
                "items[0].price must be a whole number of cents, with at most 2 decimal places \
                 (got 1.{}...)",
                "0".repeat(38)
            )
        );
    }

    #[test]
    fn huge_price_and_total_are_refused_not_saturated() {
        // Issue 11: both used to saturate to the same number of cents and were accepted.
        let body = r#"{"order_id":"o","customer_id":"c","items":[{"product_id":"a","quantity":1,"price":1e17}],"total":1e300}"#;
        let err = handle(body, "evt-1", &Config::default()).expect_err("out of range");
        assert_eq!(
            err,
            StageFailure::Reject(
                "items[0].price must be at most 1000000000000.00 (got 1e17); \
                 total must be at most 1000000000000.00 (got 1e300)"
                    .to_owned()
            )
        );
        let p = json!({"order_id": "o", "customer_id": "c",
            "items": [{"product_id": "a", "quantity": i64::MAX, "price": 1e300}],
            "total": 1.0});
        assert_eq!(
            reject_message(&p),
            "items[0].quantity must be at most 9007199254740991 (got 9223372036854775807); \
             items[0].price must be at most 1000000000000.00 (got 1e+300)"
        );
        // The largest amount is fine.
        let p = json!({"order_id": "o", "customer_id": "c",
            "items": [{"product_id": "a", "quantity": 1, "price": 1e12}],
            "total": 1_000_000_000_000_u64});
        run(&p).expect("1000000000000.00 is the largest amount");
    }

    #[test]
    fn fractions_of_a_cent_are_refused_not_rounded_per_unit() {
        // Issue 11: 1,000 units at 0.004 cost 0.00 after rounding the unit price.
        for total in [json!(0), json!(4)] {
            let p = json!({"order_id": "o", "customer_id": "c",
                "items": [{"product_id": "a", "quantity": 1000, "price": 0.004}],
                "total": total});
            assert_eq!(
                reject_message(&p),
                "items[0].price must be a whole number of cents, with at most 2 decimal places \
                 (got 0.004)"
            );
        }
        let p = json!({"order_id": "o", "customer_id": "c",
            "items": [{"product_id": "a", "quantity": 3, "price": 0.333}],
            "total": 0.99});
        assert_eq!(
            reject_message(&p),
            "items[0].price must be a whole number of cents, with at most 2 decimal places \
             (got 0.333)"
        );
        let mut p = seed();
        p["total"] = json!(39.981);
        assert_eq!(
            reject_message(&p),
            "total must be a whole number of cents, with at most 2 decimal places (got 39.981)"
        );
    }

    #[test]
    fn lines_and_their_sum_must_be_in_range() {
        let p = json!({"order_id": "o", "customer_id": "c",
            "items": [{"product_id": "a", "quantity": 2, "price": 1e12},
                      {"product_id": "b", "quantity": 3, "price": 1e12}],
            "total": 0});
        assert_eq!(
            reject_message(&p),
            "items[0]: quantity x price 2000000000000.00 must be at most 1000000000000.00; \
             items[1]: quantity x price 3000000000000.00 must be at most 1000000000000.00"
        );
        let p = json!({"order_id": "o", "customer_id": "c",
            "items": [{"product_id": "a", "quantity": 1, "price": 6e11},
                      {"product_id": "b", "quantity": 1, "price": 6e11}],
            "total": 1e12});
        assert_eq!(
            reject_message(&p),
            "total: the sum of the lines 1200000000000.00 must be at most 1000000000000.00"
        );
        // A huge quantity at price 0 is a valid amount (and a valid quantity, just).
        let p = json!({"order_id": "o", "customer_id": "c",
            "items": [{"product_id": "a", "quantity": MAX_QUANTITY, "price": 0}],
            "total": 0});
        run(&p).expect("free units");
    }

    #[test]
    fn quantities_whose_sums_overflow_are_refused() {
        // Issue 11: two lines of 5e18 units were accepted, then overflowed in `inventory`.
        let p = json!({"order_id": "o", "customer_id": "c",
            "items": [{"product_id": "a", "quantity": 5_000_000_000_000_000_000_i64, "price": 0},
                      {"product_id": "a", "quantity": 5_000_000_000_000_000_000_i64, "price": 0}],
            "total": 0});
        assert_eq!(
            reject_message(&p),
            "items[0].quantity must be at most 9007199254740991 (got 5000000000000000000); \
             items[1].quantity must be at most 9007199254740991 (got 5000000000000000000)"
        );
        // Each line in range, the product's sum not.
        let p = json!({"order_id": "o", "customer_id": "c",
            "items": [{"product_id": "a", "quantity": 5_000_000_000_000_000_i64, "price": 0},
                      {"product_id": "a", "quantity": 5_000_000_000_000_000_i64, "price": 0}],
            "total": 0});
        assert_eq!(
            reject_message(&p),
            "items[1].quantity: the quantity of product a over the order's lines must be at \
             most 9007199254740991"
        );
        // Each product in range, the order's sum not.
        let p = json!({"order_id": "o", "customer_id": "c",
            "items": [{"product_id": "a", "quantity": 5_000_000_000_000_000_i64, "price": 0},
                      {"product_id": "b", "quantity": 5_000_000_000_000_000_i64, "price": 0}],
            "total": 0});
        assert_eq!(
            reject_message(&p),
            "items[1].quantity: the quantity of the whole order must be at most \
             9007199254740991"
        );
        // Beyond i64 (an integer literal serde_json keeps as u64).
        let mut p = seed();
        p["items"][0]["quantity"] = json!(10_000_000_000_000_000_000_u64);
        assert_eq!(
            reject_message(&p),
            "items[0].quantity must be at most 9007199254740991 (got 10000000000000000000)"
        );
    }

    #[test]
    fn wrong_total_is_rejected_with_both_amounts() {
        let mut p = seed();
        p["total"] = json!(40.0);
        assert_eq!(
            reject_message(&p),
            "total 40.00 does not equal the sum of the lines 39.98"
        );
        p["total"] = json!(39.97);
        assert_eq!(
            reject_message(&p),
            "total 39.97 does not equal the sum of the lines 39.98"
        );
    }

    #[test]
    fn missing_or_empty_ids_are_rejected_by_name() {
        for field in ["order_id", "customer_id"] {
            for bad in [json!(""), json!("   "), Value::Null] {
                let mut p = seed();
                p[field] = bad;
                assert_eq!(reject_message(&p), format!("{field} is missing or empty"));
            }
            let mut p = seed();
            p.as_object_mut().expect("object").remove(field);
            assert_eq!(reject_message(&p), format!("{field} is missing or empty"));
            let mut p = seed();
            p[field] = json!(42);
            assert_eq!(
                reject_message(&p),
                format!("{field} must be a string (got 42)")
            );
        }
    }

    #[test]
    fn items_must_be_a_non_empty_array() {
        let mut p = seed();
        p["items"] = json!([]);
        assert_eq!(reject_message(&p), "items must contain at least one item");
        p["items"] = json!({"product_id": "x"});
        assert_eq!(reject_message(&p), "items must be an array (got an object)");
        p.as_object_mut().expect("object").remove("items");
        assert_eq!(reject_message(&p), "items is missing");
        p["items"] = json!(["prod-1"]);
        assert_eq!(
            reject_message(&p),
            "items[0] must be an object (got \"prod-1\")"
        );
    }

    #[test]
    fn line_fields_are_rejected_by_index_and_name() {
        let two_lines = || {
            json!({"order_id": "o", "customer_id": "c",
                "items": [{"product_id": "a", "quantity": 1, "price": 1.0},
                          {"product_id": "b", "quantity": 1, "price": 1.0}],
                "total": 2.0})
        };
        let cases = [
            (
                "quantity",
                json!(0),
                "items[1].quantity must be greater than 0 (got 0)",
            ),
            (
                "quantity",
                json!(-2),
                "items[1].quantity must be greater than 0 (got -2)",
            ),
            (
                "quantity",
                json!(1.5),
                "items[1].quantity must be an integer (got 1.5)",
            ),
            (
                "quantity",
                json!("2"),
                "items[1].quantity must be an integer (got \"2\")",
            ),
            ("quantity", Value::Null, "items[1].quantity is missing"),
            (
                "price",
                json!(-0.01),
                "items[1].price must not be negative (got -0.01)",
            ),
            (
                "price",
                json!("1.00"),
                "items[1].price must be a number (got \"1.00\")",
            ),
            ("price", Value::Null, "items[1].price is missing"),
            (
                "product_id",
                json!(""),
                "items[1].product_id is missing or empty",
            ),
            (
                "product_id",
                Value::Null,
                "items[1].product_id is missing or empty",
            ),
            (
                "product_id",
                json!(7),
                "items[1].product_id must be a string (got 7)",
            ),
            ("name", json!(7), "items[1].name must be a string (got 7)"),
        ];
        for (field, bad, expected) in cases {
            let mut p = two_lines();
            p["items"][1][field] = bad;
            assert_eq!(reject_message(&p), expected, "{field}");
        }
        // Absent keys behave like null.
        let mut p = two_lines();
        p["items"][1]
            .as_object_mut()
            .expect("object")
            .remove("quantity");
        assert_eq!(reject_message(&p), "items[1].quantity is missing");
    }

    #[test]
    fn every_problem_is_reported() {
        let p = json!({"customer_id": "",
            "items": [{"product_id": "a", "quantity": 0, "price": -1}],
            "total": "x", "timestamp": 5});
        assert_eq!(
            reject_message(&p),
            "order_id is missing or empty; customer_id is missing or empty; \
             items[0].quantity must be greater than 0 (got 0); \
             items[0].price must not be negative (got -1); \
             total must be a number (got \"x\"); timestamp must be a string (got 5)"
        );
    }

    #[test]
    fn total_must_be_present() {
        let mut p = seed();
        p.as_object_mut().expect("object").remove("total");
        assert_eq!(reject_message(&p), "total is missing");
    }

    #[test]
    fn malformed_json_is_rejected_naming_the_error() {
        let err = handle("{\"order_id\": ", "evt-1", &Config::default()).expect_err("bad JSON");
        assert!(matches!(err, StageFailure::Reject(_)));
        assert!(
            err.message()
                .starts_with("malformed JSON: EOF while parsing"),
            "{err}"
        );
        let err = handle("[1,2]", "evt-1", &Config::default()).expect_err("not an object");
        assert_eq!(err.message(), "order must be a JSON object (got an array)");
    }

    #[test]
    fn config_rejects_unknown_keys() {
        let err = parse_config(r#"{"strict": true}"#).expect_err("unknown key");
        assert!(err.message().contains("unknown field `strict`"), "{err}");
        assert_eq!(parse_config("{}").expect("empty"), Config {});
    }
}
