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

use notification::logic::{Config, handle};

#[test]
fn delivered_receipts_match_the_schema_for_every_kind() {
    let inputs = [
        json!({"order_id": "o", "customer_id": "c", "kind": "order_confirmed",
               "message": "Your order o is confirmed."}),
        json!({"order_id": "o", "customer_id": "c", "kind": "order_rejected",
               "message": "Your order o was rejected: not enough stock for a.",
               "short_products": ["a"]}),
        json!({"order_id": "o", "customer_id": "c", "kind": "being_fulfilled",
               "message": "Your order o is being fulfilled."}),
        json!({"order_id": "o", "customer_id": "c", "kind": "shipped",
               "message": "Your order o has shipped with UPS, tracking UPS-0011223344556677.",
               "carrier": "UPS", "tracking_number": "UPS-0011223344556677"}),
    ];
    for input in inputs {
        let input = input.to_string();
        assert_valid("notification.schema.json", &input);
        let outputs = handle(&input, "evt-9", &Config::default(), &mut |_| {}).expect("delivered");
        assert_eq!(outputs.len(), 1);
        assert_eq!(outputs[0].output, "delivered");
        assert_valid("notification-delivered.schema.json", &outputs[0].payload);

        let mut broken: Value = serde_json::from_str(&outputs[0].payload).expect("JSON");
        broken
            .as_object_mut()
            .expect("object")
            .remove("notification_id");
        assert_invalid("notification-delivered.schema.json", &broken);
    }
}
