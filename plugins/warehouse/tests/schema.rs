//! The stage's outputs must validate against the JSON Schemas the host applies to the
//! output topics (and its test inputs against the input topic's schema), so a mismatch
//! between plugin and schema fails here rather than in the pipeline.

use schema_check::{assert_invalid, assert_valid};
use serde_json::{Value, json};

use warehouse::logic::{Config, handle, parse_config};

fn confirmed() -> String {
    json!({"order_id": "order-1", "customer_id": "cust-456",
           "items": [{"product_id": "prod-789", "name": "Test Product",
                      "quantity": 2, "price": 19.99}],
           "total": 39.98, "timestamp": "2026-11-25T10:00:00Z", "status": "confirmed"})
    .to_string()
}

#[test]
fn outputs_match_their_schemas_with_and_without_stamp() {
    assert_valid("order-confirmed.schema.json", &confirmed());
    let stamped: Config =
        parse_config(r#"{"warehouse_id": "wh-2", "stamp": "v2"}"#).expect("config");
    for config in [Config::default(), stamped] {
        let outputs = handle(&confirmed(), "evt-1", &config).expect("ok");
        assert_eq!(outputs.len(), 2);
        assert_eq!(outputs[0].output, "packed");
        assert_valid("order-picked-and-packed.schema.json", &outputs[0].payload);
        assert_eq!(outputs[1].output, "notify");
        assert_valid("notification.schema.json", &outputs[1].payload);

        let mut broken: Value = serde_json::from_str(&outputs[0].payload).expect("JSON");
        broken.as_object_mut().expect("object").remove("warehouse");
        assert_invalid("order-picked-and-packed.schema.json", &broken);
    }
}
