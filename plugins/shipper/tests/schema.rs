//! The stage's outputs must validate against the JSON Schemas the host applies to the
//! output topics (and its test inputs against the input topic's schema), so a mismatch
//! between plugin and schema fails here rather than in the pipeline.

use schema_check::{assert_invalid, assert_valid};
use serde_json::{Value, json};

use shipper::logic::{Config, handle, parse_config};

fn packed(order_id: &str, stamp: Option<&str>) -> String {
    let mut v = json!({"order_id": order_id, "customer_id": "cust-456",
           "items": [{"product_id": "prod-789", "quantity": 2, "price": 19.99}],
           "total": 39.98, "status": "picked_and_packed", "warehouse": "wh-1"});
    if let Some(s) = stamp {
        v["stamp"] = json!(s);
    }
    v.to_string()
}

#[test]
fn shipped_notification_matches_the_schema() {
    let custom: Config = parse_config(r#"{"carriers": ["Royal Mail", "UPS"]}"#).expect("config");
    for config in [Config::default(), custom] {
        for (i, stamp) in [None, Some("v2")].into_iter().enumerate() {
            let input = packed(&format!("order-{i}"), stamp);
            assert_valid("order-picked-and-packed.schema.json", &input);
            let outputs = handle(&input, "evt-1", &config).expect("ok");
            assert_eq!(outputs.len(), 1);
            assert_eq!(outputs[0].output, "notify");
            assert_valid("notification.schema.json", &outputs[0].payload);

            let mut broken: Value = serde_json::from_str(&outputs[0].payload).expect("JSON");
            broken
                .as_object_mut()
                .expect("object")
                .remove("tracking_number");
            assert_invalid("notification.schema.json", &broken);
        }
    }
}
