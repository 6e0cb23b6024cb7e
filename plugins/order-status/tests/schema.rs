//! The stage's outputs must validate against the JSON Schemas the host applies to the
//! output topics (and its test inputs against the input topic's schema), so a mismatch
//! between plugin and schema fails here rather than in the pipeline.

use schema_check::{assert_invalid, assert_valid};
use serde_json::{Value, json};

use order_status::logic::{Config, handle};
use stagehost_sdk::{MemoryState, StageInput};

fn event(id: &str, event_type: &str, payload: &Value, at: &str) -> StageInput {
    StageInput::new(id, event_type, Some("order-1"), payload.to_string()).with_header("ce_time", at)
}

fn notification(kind: &str) -> Value {
    let mut n = json!({"order_id": "order-1", "customer_id": "cust-456", "kind": kind,
                       "message": format!("Your order order-1: {kind}.")});
    match kind {
        "shipped" => {
            n["carrier"] = json!("UPS");
            n["tracking_number"] = json!("UPS-0011223344556677");
        }
        "order_rejected" => n["short_products"] = json!(["prod-789"]),
        _ => {}
    }
    n
}

fn delivered(kind: &str) -> Value {
    let mut d = notification(kind);
    d["notification_id"] = json!(format!("n-{kind}"));
    d["channel"] = json!("log");
    d
}

/// Feeds the inputs (each checked against its topic's schema) and checks every output
/// against `order-status.schema.json`; returns the last document.
fn feed(inputs: &[(&str, &str, Value, &str)]) -> Value {
    let mut state = MemoryState::new();
    let mut last = Value::Null;
    for (id, event_type, payload, at) in inputs {
        let schema = match *event_type {
            "OrderReceived" => "order-received.schema.json",
            "Notification" => "notification.schema.json",
            _ => "notification-delivered.schema.json",
        };
        assert_valid(schema, &payload.to_string());
        let outputs = handle(
            &event(id, event_type, payload, at),
            &Config::default(),
            &mut state,
        )
        .expect("handled");
        assert_eq!(outputs.len(), 1);
        assert_eq!(outputs[0].output, "status");
        assert_valid("order-status.schema.json", &outputs[0].payload);
        last = serde_json::from_str(&outputs[0].payload).expect("JSON");
    }
    last
}

fn order_received() -> Value {
    json!({"order_id": "order-1", "customer_id": "cust-456",
           "items": [{"product_id": "prod-789", "quantity": 2, "price": 19.99}],
           "total": 39.98, "timestamp": "2026-11-25T10:00:00Z", "status": "received"})
}

#[test]
fn shipped_order_documents_match_the_schema() {
    let doc = feed(&[
        (
            "e1",
            "OrderReceived",
            order_received(),
            "2026-11-25T10:00:00Z",
        ),
        (
            "e2",
            "Notification",
            notification("order_confirmed"),
            "2026-11-25T10:00:01Z",
        ),
        (
            "e3",
            "NotificationDelivered",
            delivered("order_confirmed"),
            "2026-11-25T10:00:02Z",
        ),
        (
            "e4",
            "Notification",
            notification("being_fulfilled"),
            "2026-11-25T10:00:02Z",
        ),
        (
            "e5",
            "Notification",
            notification("shipped"),
            "2026-11-25T10:00:03Z",
        ),
        ("e6", "NotificationDelivered", delivered("shipped"), ""),
    ]);
    assert_eq!(doc["status"], "shipped");
    assert_eq!(doc["notifications_delivered"], 2);
    let mut broken = doc;
    broken
        .as_object_mut()
        .expect("object")
        .remove("tracking_number");
    assert_invalid("order-status.schema.json", &broken);
}

#[test]
fn rejected_order_documents_match_the_schema() {
    let doc = feed(&[
        (
            "e2",
            "Notification",
            notification("order_rejected"),
            "2026-11-25T10:00:01Z",
        ),
        (
            "e1",
            "OrderReceived",
            order_received(),
            "2026-11-25T10:00:00Z",
        ),
        (
            "e3",
            "NotificationDelivered",
            delivered("order_rejected"),
            "2026-11-25T10:00:02Z",
        ),
    ]);
    assert_eq!(doc["status"], "rejected");
    assert_eq!(doc["short_products"], json!(["prod-789"]));
    let mut broken = doc;
    broken["carrier"] = json!("UPS");
    assert_invalid("order-status.schema.json", &broken);
}

#[test]
fn a_delivery_alone_makes_a_valid_document() {
    let doc = feed(&[(
        "e3",
        "NotificationDelivered",
        delivered("being_fulfilled"),
        "2026-11-25T10:00:02Z",
    )]);
    assert_eq!(doc["status"], "received");
    assert_eq!(doc["timeline"][0]["detail"], "being_fulfilled");
}
