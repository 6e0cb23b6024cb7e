//! Loading the built stage plugins into the real engine and calling them, without Kafka:
//! every output must fit its topic's schema, and business errors come back typed.

#![allow(missing_docs, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use stagehost::config::LimitsConfig;
use stagehost::plugin::{CallError, InputEvent, InstanceSettings, PluginEngine, StageInstance};
use stagehost::state::KeyedState;
use stagehost::store::{LocalStore, Scope, Table};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn instance(engine: &PluginEngine, stage: &str, config: serde_json::Value) -> StageInstance {
    let path = root().join(format!("plugins/target/wasm32-wasip2/release/{stage}.wasm"));
    let plugin = engine
        .load(&path)
        .unwrap_or_else(|error| panic!("{error} (build the plugins first: make plugins)"));
    let settings = InstanceSettings {
        stage: Arc::from(stage),
        config: Arc::new(config.as_object().unwrap().clone()),
        limits: LimitsConfig::default(),
        capabilities: Default::default(),
    };
    StageInstance::new(engine, plugin, settings).unwrap()
}

fn event(event_type: &str, payload: serde_json::Value) -> InputEvent {
    InputEvent {
        id: "event-1".into(),
        event_type: event_type.into(),
        key: Some("order-1".into()),
        payload: payload.to_string(),
        headers: Vec::new(),
        topic: event_type.into(),
    }
}

fn order(status: Option<&str>) -> serde_json::Value {
    let mut order = serde_json::json!({
        "order_id": "order-1",
        "customer_id": "cust-456",
        "items": [{"product_id": "prod-789", "name": "Test Product", "quantity": 2, "price": 19.99}],
        "total": 39.98,
        "timestamp": "2026-11-25T10:00:00Z"
    });
    if let Some(status) = status {
        order["status"] = status.into();
    }
    order
}

fn assert_fits(schema: &str, payload: &str) {
    let validator =
        stagehost::event::schema::compile(&root().join("schemas").join(schema)).unwrap();
    let value: serde_json::Value = serde_json::from_str(payload).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "{payload} does not fit {schema}: {errors:?}"
    );
}

#[test]
fn the_plugins_produce_schema_valid_outputs_stage_by_stage() {
    let engine = PluginEngine::new(None, false).unwrap();
    let catalog = serde_json::json!({"catalog": {"prod-789": 10}});

    let received = instance(&engine, "order", serde_json::json!({}))
        .handle(&event("Order", order(None)))
        .unwrap();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].output, "received");
    assert_fits("order-received.schema.json", &received[0].payload);

    // Inventory is one component in three roles; stock and reservation keep state.
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let state = Arc::new(Mutex::new(KeyedState::new(Table::new(
        &store,
        "state:test",
        Scope::Partition,
    ))));
    state.lock().unwrap().restored(0);
    let mut inventory = instance(&engine, "inventory", catalog.clone());
    let split = inventory
        .handle(&event("OrderReceived", order(Some("received"))))
        .unwrap();
    let outputs: Vec<&str> = split.iter().map(|o| o.output.as_str()).collect();
    assert_eq!(outputs, ["pending", "reserve"]);
    assert_fits("inventory-result.schema.json", &split[0].payload);
    assert_fits("inventory-command.schema.json", &split[1].payload);

    let mut reserve = event(
        "InventoryCommand",
        serde_json::from_str(&split[1].payload).unwrap(),
    );
    reserve.key = Some("prod-789".into());
    let (reserved, writes) = inventory
        .handle_with_state(&reserve, Some((state.clone(), 0)))
        .unwrap();
    let outputs: Vec<&str> = reserved.iter().map(|o| o.output.as_str()).collect();
    assert_eq!(outputs, ["result", "ledger"]);
    assert_fits("inventory-ledger.schema.json", &reserved[1].payload);
    assert_eq!(
        writes.get("stock/prod-789"),
        Some(&Some(b"8".to_vec())),
        "10 in stock, 2 reserved"
    );
    state.lock().unwrap().stage(0, writes);
    state.lock().unwrap().commit().unwrap();

    let mut decided = Vec::new();
    for payload in [&split[0].payload, &reserved[0].payload] {
        let (outputs, writes) = inventory
            .handle_with_state(
                &event("InventoryResult", serde_json::from_str(payload).unwrap()),
                Some((state.clone(), 0)),
            )
            .unwrap();
        state.lock().unwrap().stage(0, writes);
        state.lock().unwrap().commit().unwrap();
        decided = outputs;
    }
    let outputs: Vec<&str> = decided.iter().map(|o| o.output.as_str()).collect();
    assert_eq!(outputs, ["confirmed", "notify"]);
    assert_fits("order-confirmed.schema.json", &decided[0].payload);
    assert_fits("notification.schema.json", &decided[1].payload);

    let packed = instance(&engine, "warehouse", serde_json::json!({}))
        .handle(&event("OrderConfirmed", order(Some("confirmed"))))
        .unwrap();
    assert_eq!(packed.len(), 2);
    assert_fits("order-picked-and-packed.schema.json", &packed[0].payload);
    assert_fits("notification.schema.json", &packed[1].payload);

    let shipped = instance(&engine, "shipper", serde_json::json!({}))
        .handle(&event(
            "OrderPickedAndPacked",
            serde_json::from_str(&packed[0].payload).unwrap(),
        ))
        .unwrap();
    assert_eq!(shipped.len(), 1);
    assert_fits("notification.schema.json", &shipped[0].payload);
    let notification: serde_json::Value = serde_json::from_str(&shipped[0].payload).unwrap();
    assert_eq!(notification["kind"], "shipped");

    let delivered = instance(&engine, "notification", serde_json::json!({}))
        .handle(&event("Notification", notification))
        .unwrap();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].output, "delivered");
    assert_fits("notification-delivered.schema.json", &delivered[0].payload);
    let record: serde_json::Value = serde_json::from_str(&delivered[0].payload).unwrap();
    assert_eq!(record["notification_id"], "event-1");
}

#[test]
fn an_invalid_order_is_a_typed_reject_naming_the_field() {
    let engine = PluginEngine::new(None, false).unwrap();
    let mut bad = order(None);
    bad["items"][0]["quantity"] = 0.into();
    let error = instance(&engine, "order", serde_json::json!({}))
        .handle(&event("Order", bad))
        .unwrap_err();
    match error {
        CallError::Reject(message) => assert!(message.contains("quantity"), "{message}"),
        other => panic!("expected a reject, got {other:?}"),
    }
}

#[test]
fn an_instance_keeps_working_after_a_business_error() {
    let engine = PluginEngine::new(None, false).unwrap();
    let mut stage = instance(&engine, "order", serde_json::json!({}));
    assert!(
        stage
            .handle(&event("Order", serde_json::json!({"order_id": ""})))
            .is_err()
    );
    assert!(stage.handle(&event("Order", order(None))).is_ok());
}

#[test]
fn a_file_that_is_not_a_component_is_refused_with_a_clear_message() {
    let engine = PluginEngine::new(None, false).unwrap();
    let error = engine
        .load_bytes(Path::new("broken.wasm"), b"\0asm not really")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("broken.wasm") && error.contains("not a valid WebAssembly component"),
        "{error}"
    );
}
