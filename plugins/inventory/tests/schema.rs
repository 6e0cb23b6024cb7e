//! The stage's outputs must validate against the JSON Schemas the host applies to the
//! output topics (and its test inputs against the input topic's schema), so a mismatch
//! between plugin and schema fails here rather than in the pipeline.

use std::path::PathBuf;

use serde_json::{Value, json};

/// Compiles `schemas/<name>` as a draft 2020-12 schema (formats checked).
fn validator(name: &str) -> jsonschema::Validator {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../schemas")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let schema: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"));
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{name} does not compile: {e}"))
}

/// Asserts that the JSON text `payload` is valid against `schemas/<name>`.
fn assert_valid(name: &str, payload: &str) {
    let instance: Value = serde_json::from_str(payload).expect("payload is JSON");
    let v = validator(name);
    let errors: Vec<String> = v
        .iter_errors(&instance)
        .map(|e| format!("{e} (at {})", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{name} rejects {payload}: {errors:#?}");
}

/// Asserts that `instance` is invalid against `schemas/<name>` (the check has teeth).
fn assert_invalid(name: &str, instance: &Value) {
    assert!(
        !validator(name).is_valid(instance),
        "{name} accepts {instance} but should not"
    );
}

use inventory::logic::{Config, handle, parse_config};

fn received(items: Value) -> String {
    json!({"order_id": "order-1", "customer_id": "cust-456", "items": items,
           "total": 39.98, "timestamp": "2026-11-25T10:00:00Z", "status": "received"})
    .to_string()
}

#[test]
fn confirmed_outputs_match_their_schemas() {
    let input = received(json!([{"product_id": "prod-789", "name": "Test Product",
                                 "quantity": 2, "price": 19.99}]));
    assert_valid("order-received.schema.json", &input);
    let config: Config = parse_config(r#"{"catalog": {"prod-789": 1000000}}"#).expect("config");
    let outputs = handle(&input, "evt-1", &config).expect("ok");
    assert_eq!(outputs.len(), 2);
    assert_eq!(outputs[0].output, "confirmed");
    assert_valid("order-confirmed.schema.json", &outputs[0].payload);
    assert_eq!(outputs[1].output, "notify");
    assert_valid("notification.schema.json", &outputs[1].payload);

    // A confirmed order is not a received one: the schemas tell them apart.
    let confirmed: Value = serde_json::from_str(&outputs[0].payload).expect("JSON");
    assert_invalid("order-received.schema.json", &confirmed);
}

#[test]
fn rejected_notification_matches_the_schema() {
    let input = received(json!([{"product_id": "b", "quantity": 2, "price": 10.0},
                                {"product_id": "a", "quantity": 1, "price": 19.98}]));
    assert_valid("order-received.schema.json", &input);
    let outputs = handle(&input, "evt-1", &Config::default()).expect("ok");
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0].output, "notify");
    assert_valid("notification.schema.json", &outputs[0].payload);

    let mut broken: Value = serde_json::from_str(&outputs[0].payload).expect("JSON");
    broken
        .as_object_mut()
        .expect("object")
        .remove("short_products");
    assert_invalid("notification.schema.json", &broken);
}
