//! The order stage's pure logic: validate the order posted to the HTTP ingress.
#![forbid(unsafe_code)]

use serde::Deserialize;
use serde_json::{Map, Value};
use stage_events::{Item, Order, OrderReceived, StageFailure, StageOutput, format_cents, to_cents};

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
    stage_events::parse_config(json)
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

    let mut problems = Vec::new();
    let order_id = required_id(&obj, "order_id", "order_id", &mut problems);
    let customer_id = required_id(&obj, "customer_id", "customer_id", &mut problems);
    let items = items(&obj, &mut problems);
    let total = match obj.get("total") {
        None | Some(Value::Null) => {
            problems.push("total is missing".to_owned());
            None
        }
        Some(v) => number(v, "total", &mut problems),
    };
    let timestamp = match obj.get("timestamp") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            problems.push(format!("timestamp must be a string (got {})", short(other)));
            None
        }
    };

    match (order_id, customer_id, items, total) {
        (Some(order_id), Some(customer_id), Some(items), Some(total)) if problems.is_empty() => {
            let order = Order {
                order_id,
                customer_id,
                items,
                total,
                timestamp,
            };
            check_total(&order)?;
            Ok(order)
        }
        _ => Err(problems.join("; ")),
    }
}

/// Checks that the total equals the sum of the lines, in integer cents.
fn check_total(order: &Order) -> Result<(), String> {
    let lines = order
        .lines_cents()
        .ok_or_else(|| "the sum of the lines is too large".to_owned())?;
    let total = i128::from(to_cents(order.total));
    if total == lines {
        Ok(())
    } else {
        Err(format!(
            "total {} does not equal the sum of the lines {}",
            format_cents(total),
            format_cents(lines)
        ))
    }
}

fn items(obj: &Map<String, Value>, problems: &mut Vec<String>) -> Option<Vec<Item>> {
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
    let parsed: Vec<Option<Item>> = list
        .iter()
        .enumerate()
        .map(|(i, v)| item(i, v, problems))
        .collect();
    if problems.len() > before {
        return None;
    }
    parsed.into_iter().collect()
}

fn item(index: usize, value: &Value, problems: &mut Vec<String>) -> Option<Item> {
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
            Some(q) if q > 0 => Some(q),
            Some(q) => {
                problems.push(format!("{at}.quantity must be greater than 0 (got {q})"));
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
        Some(v) => match number(v, &format!("{at}.price"), problems) {
            Some(p) if p < 0.0 => {
                problems.push(format!("{at}.price must not be negative (got {p})"));
                None
            }
            other => other,
        },
    };
    Some(Item {
        product_id: product_id?,
        name,
        quantity: quantity?,
        price: price?,
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

fn number(value: &Value, at: &str, problems: &mut Vec<String>) -> Option<f64> {
    if let Some(n) = value.as_f64() {
        Some(n)
    } else {
        problems.push(format!("{at} must be a number (got {})", short(value)));
        None
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
    fn cents_rounding_three_times_19_99_is_59_97() {
        let mut p = seed();
        p["items"][0]["quantity"] = json!(3);
        p["total"] = json!(59.97);
        run(&p).expect("3 x 19.99 = 59.97");

        // Several lines whose float sum drifts still match to the cent.
        let p = json!({"order_id": "o", "customer_id": "c",
            "items": [{"product_id": "a", "quantity": 1, "price": 0.1},
                      {"product_id": "b", "quantity": 1, "price": 0.2}],
            "total": 0.3});
        run(&p).expect("0.1 + 0.2 = 0.30");

        // Each price is rounded to cents before multiplying: 3 x 0.333 -> 3 x 0.33.
        let p = json!({"order_id": "o", "customer_id": "c",
            "items": [{"product_id": "a", "quantity": 3, "price": 0.333}],
            "total": 0.99});
        run(&p).expect("prices are rounded per unit");
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
    fn huge_amounts_do_not_overflow() {
        let p = json!({"order_id": "o", "customer_id": "c",
            "items": [{"product_id": "a", "quantity": i64::MAX, "price": 1e300}],
            "total": 1.0});
        let msg = reject_message(&p);
        assert!(
            msg.starts_with("total 1.00 does not equal the sum of the lines "),
            "{msg}"
        );
    }

    #[test]
    fn config_rejects_unknown_keys() {
        let err = parse_config(r#"{"strict": true}"#).expect_err("unknown key");
        assert!(err.message().contains("unknown field `strict`"), "{err}");
        assert_eq!(parse_config("{}").expect("empty"), Config {});
    }
}
