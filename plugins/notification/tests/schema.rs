//! The stage's outputs must validate against the JSON Schemas the host applies to the
//! output topics (and its test inputs against the input topic's schema), so a mismatch
//! between plugin and schema fails here rather than in the pipeline.

use schema_check::{assert_invalid, assert_valid};
use serde_json::{Value, json};

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
