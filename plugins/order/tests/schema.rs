//! The stage's outputs must validate against the JSON Schemas the host applies to the
//! output topics (and its test inputs against the input topic's schema), so a mismatch
//! between plugin and schema fails here rather than in the pipeline.

use schema_check::{assert_invalid, assert_valid};
use serde_json::{Value, json};

use order::logic::{Config, handle};

const SEED: &str = r#"{"order_id":"order-1","customer_id":"cust-456","items":[{"product_id":"prod-789","name":"Test Product","quantity":2,"price":19.99}],"total":39.98,"timestamp":"2026-11-25T10:00:00Z"}"#;

#[test]
fn received_output_matches_order_received_schema() {
    let minimal = json!({"order_id": "o", "customer_id": "c",
        "items": [{"product_id": "a", "quantity": 3, "price": 19.99},
                  {"product_id": "b", "quantity": 1, "price": 0}],
        "total": 59.97, "extra": true})
    .to_string();
    for input in [SEED, minimal.as_str()] {
        assert_valid("order.schema.json", input);
        let outputs = handle(input, "evt-1", &Config::default()).expect("valid order");
        assert_eq!(outputs.len(), 1);
        assert_eq!(outputs[0].output, "received");
        assert_valid("order-received.schema.json", &outputs[0].payload);

        let mut broken: Value = serde_json::from_str(&outputs[0].payload).expect("JSON");
        broken.as_object_mut().expect("object").remove("status");
        assert_invalid("order-received.schema.json", &broken);
    }
}

#[test]
fn structurally_valid_but_wrong_orders_are_rejected_by_the_stage() {
    // The ingress schema is structural; the stage catches the rest.
    let mut zero: Value = serde_json::from_str(SEED).expect("JSON");
    zero["items"][0]["quantity"] = json!(0);
    let zero = zero.to_string();
    assert_valid("order.schema.json", &zero);
    assert!(handle(&zero, "evt-1", &Config::default()).is_err());
}

#[test]
fn issue_11_amounts_and_quantities_pass_the_schema_but_not_the_stage() {
    // The ingress schema is structural: the stage refuses these (HTTP 400 naming the field).
    for body in [
        r#"{"order_id":"o","customer_id":"c","items":[{"product_id":"a","quantity":1,"price":1e17}],"total":1e300}"#,
        r#"{"order_id":"o","customer_id":"c","items":[{"product_id":"a","quantity":1000,"price":0.004}],"total":0}"#,
        r#"{"order_id":"o","customer_id":"c","items":[{"product_id":"a","quantity":5000000000000000000,"price":1},{"product_id":"a","quantity":5000000000000000000,"price":1}],"total":100000000000000000}"#,
    ] {
        assert_valid("order.schema.json", body);
        assert!(handle(body, "evt-1", &Config::default()).is_err(), "{body}");
    }
    // The largest accepted order is a valid OrderReceived.
    let largest = json!({"order_id": "o", "customer_id": "c",
        "items": [{"product_id": "a", "quantity": 9_007_199_254_740_990_i64, "price": 0},
                  {"product_id": "b", "quantity": 1, "price": 1e12}],
        "total": 1e12})
    .to_string();
    let outputs = handle(&largest, "evt-1", &Config::default()).expect("largest order");
    assert_valid("order-received.schema.json", &outputs[0].payload);
}
