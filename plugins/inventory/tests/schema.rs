//! The stage's outputs must validate against the JSON Schemas the host applies to the
//! output topics (and its test inputs against the input topic's schema), so a mismatch
//! between plugin and schema fails here rather than in the pipeline.

use schema_check::{assert_invalid, assert_valid};
use serde_json::{Value, json};

use inventory::logic::{Config, handle};
use stagehost_sdk::testing::TestHost;
use stagehost_sdk::{MemoryState, StageInput, StageOutput};

/// The schema of each output name's topic (see the outputs table of the three stages).
fn schema_of(output: &str) -> &'static str {
    match output {
        "pending" | "result" => "inventory-result.schema.json",
        "reserve" | "release" => "inventory-command.schema.json",
        "ledger" => "inventory-ledger.schema.json",
        "confirmed" => "order-confirmed.schema.json",
        "notify" => "notification.schema.json",
        other => panic!("unexpected output {other}"),
    }
}

/// The event type of an output name's topic, i.e. how the next stage receives it.
fn event_type_of(output: &str) -> &'static str {
    match output {
        "pending" | "result" => "InventoryResult",
        _ => "InventoryCommand",
    }
}

fn received(items: Value) -> String {
    json!({"order_id": "order-1", "customer_id": "cust-456", "items": items,
           "total": 39.98, "timestamp": "2026-11-25T10:00:00Z", "status": "received"})
    .to_string()
}

/// Runs one order through the three stages (each with its own state and the `config` table
/// given as JSON) as the host would, through the component's `Stage` in a [`TestHost`] (which
/// also checks that every output is declared for its input's event type), checking every
/// input and output against its topic's schema; returns every output in processing order.
fn saga(order: &str, config: &str) -> Vec<StageOutput> {
    assert_valid("order-received.schema.json", order);
    let mut split = TestHost::with_config(config);
    let mut stock = TestHost::with_config(config);
    let mut reservation = TestHost::with_config(config);
    let mut all = Vec::new();
    let mut queue = vec![StageInput::new(
        "evt-0",
        "OrderReceived",
        Some("order-1"),
        order,
    )];
    let mut n = 0;
    while let Some(event) = queue.pop() {
        let host = match event.event_type.as_str() {
            "OrderReceived" => &mut split,
            "InventoryCommand" => &mut stock,
            _ => &mut reservation,
        };
        let outputs = host.handle::<inventory::Stage>(&event).expect("handled");
        for out in outputs {
            assert_valid(schema_of(&out.output), &out.payload);
            if matches!(
                out.output.as_str(),
                "pending" | "result" | "reserve" | "release"
            ) {
                n += 1;
                queue.insert(
                    0,
                    StageInput::new(
                        format!("evt-{n}"),
                        event_type_of(&out.output),
                        out.key.as_deref(),
                        out.payload.clone(),
                    ),
                );
            }
            all.push(out);
        }
    }
    all
}

fn names(outputs: &[StageOutput]) -> Vec<&str> {
    outputs.iter().map(|o| o.output.as_str()).collect()
}

#[test]
fn confirmed_saga_outputs_match_their_schemas() {
    let input = received(json!([{"product_id": "prod-789", "name": "Test Product",
                                 "quantity": 2, "price": 19.99}]));
    let outputs = saga(&input, r#"{"catalog": {"prod-789": 1000000}}"#);
    assert_eq!(
        names(&outputs),
        [
            "pending",
            "reserve",
            "result",
            "ledger",
            "confirmed",
            "notify"
        ]
    );
    // A confirmed order is not a received one: the schemas tell them apart.
    let confirmed: Value = serde_json::from_str(&outputs[4].payload).expect("JSON");
    assert_invalid("order-received.schema.json", &confirmed);
}

#[test]
fn rejected_saga_outputs_match_their_schemas() {
    let input = received(json!([{"product_id": "b", "quantity": 2, "price": 10.0},
                                {"product_id": "a", "quantity": 1, "price": 19.98}]));
    let outputs = saga(&input, r#"{"catalog": {"b": 5}}"#);
    assert_eq!(
        names(&outputs),
        [
            "pending", "reserve", "reserve", "result", "result", "ledger", "release", "notify",
            "ledger"
        ]
    );
    let notify: Value = serde_json::from_str(&outputs[7].payload).expect("JSON");
    assert_eq!(notify["short_products"], json!(["a"]));
    let mut broken = notify;
    broken
        .as_object_mut()
        .expect("object")
        .remove("short_products");
    assert_invalid("notification.schema.json", &broken);
    // The release put b's stock back.
    let last: Value = serde_json::from_str(&outputs[8].payload).expect("JSON");
    assert_eq!(last["stock"], 5);
    assert_eq!(last["reason"], "release");
}

#[test]
fn restock_ledger_matches_the_schema() {
    let command = json!({"command": "restock", "restock_id": "r-1", "product_id": "p",
                         "quantity": 10})
    .to_string();
    assert_valid("inventory-command.schema.json", &command);
    let event = StageInput::new("evt-r", "InventoryCommand", Some("p"), command);
    let outputs = handle(&event, &Config::default(), &mut MemoryState::new()).expect("restocked");
    assert_eq!(names(&outputs), ["ledger"]);
    assert_valid("inventory-ledger.schema.json", &outputs[0].payload);
    let mut broken: Value = serde_json::from_str(&outputs[0].payload).expect("JSON");
    broken["order_id"] = json!("o");
    assert_invalid("inventory-ledger.schema.json", &broken);
}

#[test]
fn refused_reservation_matches_the_schema() {
    let command = json!({"command": "reserve", "order_id": "o", "customer_id": "c",
                         "product_id": "p", "quantity": 3})
    .to_string();
    assert_valid("inventory-command.schema.json", &command);
    let event = StageInput::new("evt-c", "InventoryCommand", Some("p"), command);
    let outputs = handle(&event, &Config::default(), &mut MemoryState::new()).expect("ok");
    assert_eq!(names(&outputs), ["result"]);
    assert_valid("inventory-result.schema.json", &outputs[0].payload);
    let mut broken: Value = serde_json::from_str(&outputs[0].payload).expect("JSON");
    broken.as_object_mut().expect("object").remove("available");
    assert_invalid("inventory-result.schema.json", &broken);
}

#[test]
fn refused_saga_rejects_the_order_with_a_notification() {
    // Issue 11: each line is a valid OrderReceived line, their sum is not; the order reaches
    // a rejection and a notification instead of the dead-letter queue.
    let input = received(json!([
        {"product_id": "prod-789", "quantity": 5_000_000_000_000_000_i64, "price": 0.0},
        {"product_id": "prod-789", "quantity": 5_000_000_000_000_000_i64, "price": 0.0}
    ]));
    let outputs = saga(&input, r#"{"catalog": {"prod-789": 1000000}}"#);
    assert_eq!(names(&outputs), ["pending", "notify"]);
    let notify: Value = serde_json::from_str(&outputs[1].payload).expect("JSON");
    assert_eq!(notify["kind"], "order_rejected");
    assert_eq!(notify["short_products"], json!(["prod-789"]));
    assert_eq!(
        notify["message"],
        "Your order order-1 was rejected: items[1].quantity: the quantity of product prod-789 \
         over the order's lines must be at most 9007199254740991."
    );
}
