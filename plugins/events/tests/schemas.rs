//! Checks the JSON Schemas in `schemas/`: each is a well-formed, self-contained draft 2020-12
//! schema with the documentation the project asks for, and the event types of this crate
//! produce documents that they accept (and the schemas reject what they should).

use schema_check::{assert_invalid, assert_valid, schema};
use serde_json::{Value, json};
use stage_events::{
    InventoryCommand, InventoryResult, Item, LedgerEntry, LedgerReason, Notification,
    NotificationDelivered, NotificationKind, Order, OrderConfirmed, OrderPending,
    OrderPickedAndPacked, OrderReceived, OrderRefused, OrderStatusDoc, ReleaseCommand, Reservation,
    ReserveCommand, RestockCommand, TimelineEntry, TimelineEvent, TrackedStatus,
};

const ALL: [&str; 12] = [
    "order.schema.json",
    "order-received.schema.json",
    "order-confirmed.schema.json",
    "order-picked-and-packed.schema.json",
    "notification.schema.json",
    "notification-delivered.schema.json",
    "dead-letter.schema.json",
    "kpi.schema.json",
    "inventory-command.schema.json",
    "inventory-result.schema.json",
    "inventory-ledger.schema.json",
    "order-status.schema.json",
];

fn order() -> Order {
    Order {
        order_id: "order-1".into(),
        customer_id: "cust-456".into(),
        items: vec![Item {
            product_id: "prod-789".into(),
            name: Some("Test Product".into()),
            quantity: 2,
            price: 19.99,
        }],
        total: 39.98,
        timestamp: Some("2026-11-25T10:00:00Z".into()),
    }
}

fn to_value<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("serializes")
}

/// Every property schema (under `properties` anywhere in the document, except inside the
/// `if` / `then` / `else` / `not` conditions) must carry a `description`.
fn undocumented_properties(node: &Value, path: &str, out: &mut Vec<String>) {
    let Some(obj) = node.as_object() else { return };
    for (key, child) in obj {
        match key.as_str() {
            "if" | "then" | "else" | "not" => {}
            "properties" => {
                for (prop, schema) in child.as_object().expect("properties is an object") {
                    if schema.get("description").and_then(Value::as_str).is_none() {
                        out.push(format!("{path}/properties/{prop}"));
                    }
                    undocumented_properties(schema, &format!("{path}/properties/{prop}"), out);
                }
            }
            _ => {
                if let Some(items) = child.as_array() {
                    for (i, item) in items.iter().enumerate() {
                        undocumented_properties(item, &format!("{path}/{key}/{i}"), out);
                    }
                } else {
                    undocumented_properties(child, &format!("{path}/{key}"), out);
                }
            }
        }
    }
}

#[test]
fn every_schema_is_valid_documented_draft_2020_12() {
    for name in ALL {
        let s = schema(name);
        if let Err(e) = jsonschema::meta::validate(&s) {
            panic!("{name} is not a valid schema: {e}");
        }
        assert_eq!(
            s["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{name}"
        );
        assert_eq!(
            s["$id"],
            format!("https://stagehost.dev/schemas/{name}"),
            "{name}"
        );
        assert!(s["title"].is_string(), "{name} has no title");
        assert!(s["description"].is_string(), "{name} has no description");
        let text = s.to_string();
        assert!(
            !text.contains("\"$ref\":\"http") && !text.contains(".schema.json#"),
            "{name} refers to another file"
        );
        let mut missing = Vec::new();
        undocumented_properties(&s, "", &mut missing);
        assert!(
            missing.is_empty(),
            "{name}: properties without description: {missing:?}"
        );
    }
}

#[test]
fn order_schema_is_structural_and_open() {
    let mut body = to_value(&order());
    assert_valid("order.schema.json", &body);
    // Semantic problems are the order stage's job, not the schema's.
    body["items"][0]["quantity"] = json!(0);
    body["order_id"] = json!("");
    body["coupon"] = json!("XMAS");
    assert_valid("order.schema.json", &body);
    // Structural ones are the schema's.
    for (field, bad) in [
        ("items", json!([])),
        ("total", json!("39.98")),
        ("customer_id", json!(7)),
    ] {
        let mut b = to_value(&order());
        b[field] = bad;
        assert_invalid("order.schema.json", &b);
    }
    let mut b = to_value(&order());
    b["items"][0]["quantity"] = json!(1.5);
    assert_invalid("order.schema.json", &b);
    let mut b = to_value(&order());
    b.as_object_mut().expect("object").remove("order_id");
    assert_invalid("order.schema.json", &b);
}

#[test]
fn order_events_match_their_schemas() {
    let received = to_value(&OrderReceived::new(order()));
    let confirmed = to_value(&OrderConfirmed::new(order()));
    let packed = to_value(&OrderPickedAndPacked::new(order(), "wh-1".into(), None));
    let stamped = to_value(&OrderPickedAndPacked::new(
        order(),
        "wh-1".into(),
        Some("v2".into()),
    ));
    assert_valid("order-received.schema.json", &received);
    assert_valid("order-confirmed.schema.json", &confirmed);
    assert_valid("order-picked-and-packed.schema.json", &packed);
    assert_valid("order-picked-and-packed.schema.json", &stamped);

    // The status is pinned per schema.
    assert_invalid("order-received.schema.json", &confirmed);
    assert_invalid("order-confirmed.schema.json", &received);
    // Plugin-produced events are closed.
    let mut extra = received.clone();
    extra["coupon"] = json!("XMAS");
    assert_invalid("order-received.schema.json", &extra);
    let mut no_wh = packed.clone();
    no_wh.as_object_mut().expect("object").remove("warehouse");
    assert_invalid("order-picked-and-packed.schema.json", &no_wh);
    let mut zero = confirmed.clone();
    zero["items"][0]["quantity"] = json!(0);
    assert_invalid("order-confirmed.schema.json", &zero);

    // The order stage's limits: quantities up to 2^53 - 1, amounts up to 1000000000000.00.
    let mut largest = received.clone();
    largest["items"][0]["quantity"] = json!(stage_events::MAX_QUANTITY);
    largest["items"][0]["price"] = json!(1e12);
    largest["total"] = json!(1e12);
    assert_valid("order-received.schema.json", &largest);
    for (pointer, bad) in [
        ("/items/0/quantity", json!(stage_events::MAX_QUANTITY + 1)),
        ("/items/0/quantity", json!(5_000_000_000_000_000_000_i64)),
        ("/items/0/price", json!(1e17)),
        ("/total", json!(1e300)),
    ] {
        let mut b = received.clone();
        *b.pointer_mut(pointer).expect("field") = bad;
        assert_invalid("order-received.schema.json", &b);
    }
}

#[test]
fn notifications_match_their_schemas() {
    let confirmed = Notification::new("o", "c", NotificationKind::OrderConfirmed, "ok");
    let mut shipped = Notification::new("o", "c", NotificationKind::Shipped, "shipped");
    shipped.carrier = Some("UPS".into());
    shipped.tracking_number = Some("UPS-0011223344556677".into());
    let mut rejected = Notification::new("o", "c", NotificationKind::OrderRejected, "short");
    rejected.short_products = Some(vec!["a".into(), "b".into()]);

    for n in [&confirmed, &shipped, &rejected] {
        assert_valid("notification.schema.json", &to_value(n));
        let d = NotificationDelivered::new("evt-1", "log", n.clone());
        assert_valid("notification-delivered.schema.json", &to_value(&d));
        // A notification is not a receipt, nor the other way round.
        assert_invalid("notification-delivered.schema.json", &to_value(n));
        assert_invalid("notification.schema.json", &to_value(&d));
    }

    // Kind-specific fields are required for their kind and only there.
    let mut bad = shipped.clone();
    bad.tracking_number = None;
    assert_invalid("notification.schema.json", &to_value(&bad));
    let mut bad = rejected.clone();
    bad.short_products = None;
    assert_invalid("notification.schema.json", &to_value(&bad));
    let mut bad = confirmed.clone();
    bad.carrier = Some("UPS".into());
    assert_invalid("notification.schema.json", &to_value(&bad));
    let mut bad = to_value(&confirmed);
    bad["kind"] = json!("lost");
    assert_invalid("notification.schema.json", &bad);
}

#[test]
fn host_built_documents_match_their_schemas() {
    let dead = json!({
        "original_event": {"order_id": "order-1"},
        "error": "items[0].quantity must be greater than 0 (got 0)",
        "timestamp": "2026-11-25T10:00:00Z",
        "stage": "order",
        "source_topic": "http",
        "partition": 0,
        "offset": 42,
        "plugin_version": "sha256:abcd",
        "event_id": "evt-1",
        "attempts": 1
    });
    assert_valid("dead-letter.schema.json", &dead);
    let mut text_event = dead.clone();
    text_event["original_event"] = json!("not json {");
    assert_valid("dead-letter.schema.json", &text_event);
    let mut bad = dead.clone();
    bad["timestamp"] = json!("yesterday");
    assert_invalid("dead-letter.schema.json", &bad);
    let mut bad = dead.clone();
    bad.as_object_mut()
        .expect("object")
        .remove("plugin_version");
    assert_invalid("dead-letter.schema.json", &bad);

    let kpi = json!({"kpi_name": "orders_confirmed", "metric": "count", "value": 3.5,
                     "timestamp": 1_795_600_000_000_i64, "stage": "inventory", "window_ms": 60000});
    assert_valid("kpi.schema.json", &kpi);
    let mut bad = kpi.clone();
    bad["timestamp"] = json!("2026-11-25T10:00:00Z");
    assert_invalid("kpi.schema.json", &bad);
    let mut bad = kpi;
    bad.as_object_mut().expect("object").remove("value");
    assert_invalid("kpi.schema.json", &bad);
}

#[test]
fn inventory_commands_match_their_schema() {
    let name = "inventory-command.schema.json";
    let reserve = to_value(&InventoryCommand::Reserve(ReserveCommand {
        order_id: "o".into(),
        customer_id: "c".into(),
        product_id: "p".into(),
        quantity: 2,
    }));
    let release = to_value(&InventoryCommand::Release(ReleaseCommand {
        order_id: "o".into(),
        product_id: "p".into(),
        quantity: 2,
    }));
    let restock = to_value(&InventoryCommand::Restock(RestockCommand {
        restock_id: "r".into(),
        product_id: "p".into(),
        quantity: 5,
    }));
    for command in [&reserve, &release, &restock] {
        assert_valid(name, command);
        let mut zero = command.clone();
        zero["quantity"] = json!(0);
        assert_invalid(name, &zero);
        let mut extra = command.clone();
        extra["note"] = json!("x");
        assert_invalid(name, &extra);
    }
    // Each command has its own fields.
    let mut bad = reserve.clone();
    bad.as_object_mut().expect("object").remove("customer_id");
    assert_invalid(name, &bad);
    let mut bad = restock.clone();
    bad["command"] = json!("release");
    assert_invalid(name, &bad);
    let mut bad = release;
    bad["command"] = json!("steal");
    assert_invalid(name, &bad);
}

#[test]
fn inventory_results_match_their_schema() {
    let name = "inventory-result.schema.json";
    let pending = to_value(&InventoryResult::OrderPending(OrderPending {
        order_id: "order-1".into(),
        order: OrderReceived::new(order()),
        products: vec!["prod-789".into()],
    }));
    let reservation = Reservation {
        order_id: "order-1".into(),
        product_id: "prod-789".into(),
        quantity: 2,
        reserved: true,
        available: 0,
    };
    let reserved = to_value(&InventoryResult::Reservation(reservation.clone()));
    let refused = to_value(&InventoryResult::Reservation(Reservation {
        reserved: false,
        available: 1,
        ..reservation
    }));
    let order_refused = to_value(&InventoryResult::OrderRefused(OrderRefused {
        order_id: "order-1".into(),
        customer_id: "cust-456".into(),
        products: vec!["prod-789".into()],
        reason: "items[1].quantity: too large".into(),
    }));
    for result in [&pending, &reserved, &refused, &order_refused] {
        assert_valid(name, result);
    }
    for (field, bad) in [
        ("products", json!([])),
        ("products", json!(["a", "a"])),
        ("reason", json!("")),
        ("customer_id", json!("")),
    ] {
        let mut b = order_refused.clone();
        b[field] = bad;
        assert_invalid(name, &b);
    }
    let mut b = order_refused.clone();
    b.as_object_mut().expect("object").remove("reason");
    assert_invalid(name, &b);
    // The embedded order is an OrderReceived.
    let mut bad = pending.clone();
    bad["order"]["status"] = json!("confirmed");
    assert_invalid(name, &bad);
    let mut bad = pending.clone();
    bad["products"] = json!([]);
    assert_invalid(name, &bad);
    let mut bad = pending;
    bad["products"] = json!(["a", "a"]);
    assert_invalid(name, &bad);
    let mut bad = reserved.clone();
    bad["available"] = json!(-1);
    assert_invalid(name, &bad);
    let mut bad = reserved;
    bad["kind"] = json!("order_pending");
    assert_invalid(name, &bad);
}

#[test]
fn ledger_entries_match_their_schema() {
    let name = "inventory-ledger.schema.json";
    let entry = |delta: i64, reason: LedgerReason| LedgerEntry {
        product_id: "p".into(),
        delta,
        stock: 3,
        reason,
        order_id: (reason != LedgerReason::Restock).then(|| "o".to_owned()),
        restock_id: (reason == LedgerReason::Restock).then(|| "r".to_owned()),
    };
    let reserve = to_value(&entry(-2, LedgerReason::Reserve));
    let release = to_value(&entry(2, LedgerReason::Release));
    let restock = to_value(&entry(5, LedgerReason::Restock));
    for e in [&reserve, &release, &restock] {
        assert_valid(name, e);
        let mut negative = e.clone();
        negative["stock"] = json!(-1);
        assert_invalid(name, &negative);
    }
    // The sign of the delta follows the reason.
    assert_invalid(name, &to_value(&entry(2, LedgerReason::Reserve)));
    assert_invalid(name, &to_value(&entry(-2, LedgerReason::Release)));
    assert_invalid(name, &to_value(&entry(0, LedgerReason::Restock)));
    // The reference follows the reason.
    let mut bad = restock;
    bad["order_id"] = json!("o");
    assert_invalid(name, &bad);
    let mut bad = reserve;
    bad.as_object_mut().expect("object").remove("order_id");
    assert_invalid(name, &bad);
}

#[test]
fn order_status_documents_match_their_schema() {
    let name = "order-status.schema.json";
    let entry = |event: TimelineEvent, detail: Option<&str>| TimelineEntry {
        event,
        at: "2026-11-25T10:00:00Z".into(),
        event_id: "e".into(),
        detail: detail.map(str::to_owned),
    };
    let mut doc = OrderStatusDoc::new("o", "c");
    doc.timeline.push(entry(TimelineEvent::Received, None));
    doc.timeline.push(TimelineEntry {
        at: String::new(),
        ..entry(
            TimelineEvent::NotificationDelivered,
            Some("order_confirmed"),
        )
    });
    doc.notifications_delivered = 1;
    assert_valid(name, &to_value(&doc));

    let mut rejected = doc.clone();
    rejected.status = TrackedStatus::Rejected;
    rejected.reason = Some("not enough stock for a.".into());
    rejected.short_products = Some(vec!["a".into()]);
    assert_valid(name, &to_value(&rejected));
    let mut shipped = doc.clone();
    shipped.status = TrackedStatus::Shipped;
    shipped.carrier = Some("UPS".into());
    shipped.tracking_number = Some("UPS-1".into());
    assert_valid(name, &to_value(&shipped));

    // Status-specific fields are required for their status and only there.
    let mut bad = rejected.clone();
    bad.reason = None;
    assert_invalid(name, &to_value(&bad));
    let mut bad = shipped.clone();
    bad.status = TrackedStatus::PickedAndPacked;
    assert_invalid(name, &to_value(&bad));
    let mut bad = doc.clone();
    bad.short_products = Some(vec!["a".into()]);
    assert_invalid(name, &to_value(&bad));
    // A delivery entry has its detail, and only it.
    let mut bad = doc.clone();
    bad.timeline[1].detail = None;
    assert_invalid(name, &to_value(&bad));
    let mut bad = doc.clone();
    bad.timeline[0].detail = Some("x".into());
    assert_invalid(name, &to_value(&bad));
    let mut bad = doc;
    bad.timeline.clear();
    assert_invalid(name, &to_value(&bad));
}
