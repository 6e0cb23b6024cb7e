//! The order-status stage's pure logic: merge the events of an order, arriving from three
//! topics in any order, into one status document kept in state under `order/<order_id>` and
//! published after every input.
//!
//! - `OrderReceived` → entry `received`, status `received`;
//! - `Notification` of kind `order_confirmed` → `confirmed`;
//! - `Notification` `order_rejected` → `rejected`, with `reason` (the message) and
//!   `short_products`;
//! - `Notification` `being_fulfilled` → `picked_and_packed`;
//! - `Notification` `shipped` → `shipped`, with `carrier` and `tracking_number`;
//! - `NotificationDelivered` → entry `notification_delivered` (`detail` = its kind); the
//!   status is unchanged and `notifications_delivered` grows by one.
//!
//! `rejected` and `shipped` are terminal: nothing changes them. Otherwise the status only
//! moves forward on `received < confirmed < picked_and_packed < shipped`, and `rejected`
//! replaces any status that is not terminal. The kind-specific fields are set when their
//! status is taken. An input whose event id is already in the timeline is ignored. A timeline
//! keeps at most [`MAX_TIMELINE_ENTRIES`] entries: an input that would add another is rejected.
#![forbid(unsafe_code)]

use serde::Deserialize;
use stage_events::{
    Notification, NotificationDelivered, NotificationKind, OrderReceived, OrderStatusDoc,
    TimelineEntry, TimelineEvent, TrackedStatus,
};
use stagehost_sdk::{StageFailure, StageInput, StageOutput, State};

/// Event type of the `OrderReceived` input.
pub const EVENT_ORDER_RECEIVED: &str = "OrderReceived";
/// Event type of the `Notification` input.
pub const EVENT_NOTIFICATION: &str = "Notification";
/// Event type of the `NotificationDelivered` input.
pub const EVENT_NOTIFICATION_DELIVERED: &str = "NotificationDelivered";
/// Output name of the status document (topic `OrderStatus`).
pub const OUTPUT_STATUS: &str = "status";
/// The header whose value is a timeline entry's `at`.
pub const TIME_HEADER: &str = "ce_time";
/// Most entries an order's timeline keeps. An order's own flow makes about seven; an input
/// that would add one more is rejected (dead-lettered), so nobody can grow a status document,
/// its state and every record it is published in without bound.
pub const MAX_TIMELINE_ENTRIES: usize = 64;

/// The stage's `config` table. The order-status stage has no settings; any key is rejected
/// so that a misplaced setting is noticed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {}

/// Parses the stage's `config` table (the JSON object from `config::get-all`).
///
/// # Errors
/// [`StageFailure::Reject`] naming the offending key.
pub fn parse_config(json: &str) -> Result<Config, StageFailure> {
    stagehost_sdk::parse_config(json)
}

/// The state key of an order's status document.
#[must_use]
pub fn status_key(order_id: &str) -> String {
    format!("order/{order_id}")
}

/// What one input says about its order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observation {
    order_id: String,
    customer_id: String,
    event: TimelineEvent,
    detail: Option<String>,
    delivered: bool,
    /// The status the input stands for, with its kind-specific fields.
    status: Option<StatusChange>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct StatusChange {
    status: TrackedStatus,
    reason: Option<String>,
    short_products: Option<Vec<String>>,
    carrier: Option<String>,
    tracking_number: Option<String>,
}

impl StatusChange {
    fn plain(status: TrackedStatus) -> Self {
        Self {
            status,
            reason: None,
            short_products: None,
            carrier: None,
            tracking_number: None,
        }
    }
}

fn observe(event: &StageInput) -> Result<Observation, StageFailure> {
    match event.event_type.as_str() {
        EVENT_ORDER_RECEIVED => {
            let order =
                stagehost_sdk::parse_payload::<OrderReceived>(&event.payload, "OrderReceived")?
                    .order;
            Ok(Observation {
                order_id: order.order_id,
                customer_id: order.customer_id,
                event: TimelineEvent::Received,
                detail: None,
                delivered: false,
                status: Some(StatusChange::plain(TrackedStatus::Received)),
            })
        }
        EVENT_NOTIFICATION => {
            let n: Notification = stagehost_sdk::parse_payload(&event.payload, "Notification")?;
            let (timeline, change) = match n.kind {
                NotificationKind::OrderConfirmed => (
                    TimelineEvent::Confirmed,
                    StatusChange::plain(TrackedStatus::Confirmed),
                ),
                NotificationKind::OrderRejected => (
                    TimelineEvent::Rejected,
                    StatusChange {
                        reason: Some(n.message),
                        short_products: n.short_products,
                        ..StatusChange::plain(TrackedStatus::Rejected)
                    },
                ),
                NotificationKind::BeingFulfilled => (
                    TimelineEvent::PickedAndPacked,
                    StatusChange::plain(TrackedStatus::PickedAndPacked),
                ),
                NotificationKind::Shipped => (
                    TimelineEvent::Shipped,
                    StatusChange {
                        carrier: n.carrier,
                        tracking_number: n.tracking_number,
                        ..StatusChange::plain(TrackedStatus::Shipped)
                    },
                ),
            };
            Ok(Observation {
                order_id: n.order_id,
                customer_id: n.customer_id,
                event: timeline,
                detail: None,
                delivered: false,
                status: Some(change),
            })
        }
        EVENT_NOTIFICATION_DELIVERED => {
            let d: NotificationDelivered =
                stagehost_sdk::parse_payload(&event.payload, "NotificationDelivered")?;
            Ok(Observation {
                order_id: d.order_id,
                customer_id: d.customer_id,
                event: TimelineEvent::NotificationDelivered,
                detail: Some(d.kind.as_str().to_owned()),
                delivered: true,
                status: None,
            })
        }
        other => Err(StageFailure::Reject(format!(
            "unsupported event type \"{other}\": the order-status stage handles \
             {EVENT_ORDER_RECEIVED}, {EVENT_NOTIFICATION} and {EVENT_NOTIFICATION_DELIVERED}"
        ))),
    }
}

/// Applies the precedence rules; returns whether the status changed.
fn apply(doc: &mut OrderStatusDoc, change: StatusChange) -> bool {
    let current = doc.status;
    let takes = !current.is_terminal()
        && (change.status == TrackedStatus::Rejected || change.status.rank() > current.rank());
    if takes {
        doc.status = change.status;
        doc.reason = change.reason;
        doc.short_products = change.short_products;
        doc.carrier = change.carrier;
        doc.tracking_number = change.tracking_number;
    }
    takes
}

/// Merges the input into its order's status document and outputs `status`: the whole
/// document, keyed by the order id. The record key must be the order id. A document is
/// created (at status `received`) by whichever input of the order comes first.
///
/// An input whose event id is already in the timeline gives no output and changes nothing.
///
/// # Errors
/// [`StageFailure::Reject`] for an unknown event type, a payload that does not parse, an
/// empty event id, a key that is not the order id, or a corrupt stored document.
pub fn handle(
    event: &StageInput,
    _config: &Config,
    state: &mut dyn State,
) -> Result<Vec<StageOutput>, StageFailure> {
    let observation = observe(event)?;
    if event.id.is_empty() {
        return Err(StageFailure::Reject(
            "the input event has an empty id, which identifies its timeline entry".to_owned(),
        ));
    }
    let order_id = observation.order_id.clone();
    event.expect_key("order_id", &order_id)?;
    let key = status_key(&order_id);
    let mut doc = match state.get(&key) {
        None => OrderStatusDoc::new(&order_id, &observation.customer_id),
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            StageFailure::Reject(format!("state {key} is not an order status document: {e}"))
        })?,
    };
    if doc.timeline.iter().any(|entry| entry.event_id == event.id) {
        return Ok(Vec::new());
    }
    if doc.timeline.len() >= MAX_TIMELINE_ENTRIES {
        return Err(StageFailure::Reject(format!(
            "the timeline of order {order_id} holds {} entries, the most it keeps ({MAX_TIMELINE_ENTRIES}); event {} is not recorded",
            doc.timeline.len(),
            event.id
        )));
    }

    if let Some(change) = observation.status {
        apply(&mut doc, change);
    }
    if observation.delivered {
        doc.notifications_delivered = doc.notifications_delivered.saturating_add(1);
    }
    let at = event.header(TIME_HEADER).unwrap_or_default().to_owned();
    // Sorted by `at`, then in arrival order: insert after every entry with `at` <= this one.
    let position = doc.timeline.partition_point(|entry| entry.at <= at);
    doc.timeline.insert(
        position,
        TimelineEntry {
            event: observation.event,
            at,
            event_id: event.id.clone(),
            detail: observation.detail,
        },
    );

    let output = StageOutput::json(OUTPUT_STATUS, &order_id, &doc)?;
    state.set(&key, output.payload.clone().into_bytes());
    Ok(vec![output])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use stagehost_sdk::MemoryState;

    const T0: &str = "2026-11-25T10:00:00Z";
    const T1: &str = "2026-11-25T10:00:01Z";
    const T2: &str = "2026-11-25T10:00:02Z";
    const T3: &str = "2026-11-25T10:00:03Z";
    const T4: &str = "2026-11-25T10:00:04Z";

    fn input(id: &str, event_type: &str, payload: &Value, at: Option<&str>) -> StageInput {
        let event = StageInput::new(id, event_type, Some("order-1"), payload.to_string());
        match at {
            Some(at) => event.with_header(TIME_HEADER, at),
            None => event,
        }
    }

    fn received(id: &str, at: &str) -> StageInput {
        let payload = json!({"order_id": "order-1", "customer_id": "cust-456",
            "items": [{"product_id": "prod-789", "quantity": 2, "price": 19.99}],
            "total": 39.98, "status": "received"});
        input(id, EVENT_ORDER_RECEIVED, &payload, Some(at))
    }

    fn notification(kind: &str) -> Value {
        let mut n = json!({"order_id": "order-1", "customer_id": "cust-456", "kind": kind,
                           "message": format!("about {kind}")});
        match kind {
            "shipped" => {
                n["carrier"] = json!("UPS");
                n["tracking_number"] = json!("UPS-0011223344556677");
            }
            "order_rejected" => n["short_products"] = json!(["a", "b"]),
            _ => {}
        }
        n
    }

    fn notify(id: &str, kind: &str, at: &str) -> StageInput {
        input(id, EVENT_NOTIFICATION, &notification(kind), Some(at))
    }

    fn delivered(id: &str, kind: &str, at: &str) -> StageInput {
        let mut d = notification(kind);
        d["notification_id"] = json!(format!("n-{id}"));
        d["channel"] = json!("log");
        input(id, EVENT_NOTIFICATION_DELIVERED, &d, Some(at))
    }

    /// Runs the inputs in order; returns the last document output (and checks that each
    /// output equals the stored state).
    fn run_all(events: &[StageInput], state: &mut MemoryState) -> Value {
        let mut last = Value::Null;
        for event in events {
            let outputs = handle(event, &Config::default(), state).expect("handled");
            assert_eq!(outputs.len(), 1, "one output for {}", event.id);
            let out = &outputs[0];
            assert_eq!(out.output, "status");
            assert_eq!(out.key.as_deref(), Some("order-1"));
            assert_eq!(state.get_str("order/order-1"), Some(out.payload.as_str()));
            last = serde_json::from_str(&out.payload).expect("JSON");
        }
        last
    }

    fn run(events: &[StageInput]) -> Value {
        run_all(events, &mut MemoryState::new())
    }

    fn timeline_events(doc: &Value) -> Vec<&str> {
        doc["timeline"]
            .as_array()
            .expect("timeline")
            .iter()
            .map(|e| e["event"].as_str().expect("event"))
            .collect()
    }

    #[test]
    fn received_creates_the_document() {
        let doc = run(&[received("e1", T0)]);
        assert_eq!(
            doc,
            json!({"order_id": "order-1", "customer_id": "cust-456", "status": "received",
                   "notifications_delivered": 0,
                   "timeline": [{"event": "received", "at": T0, "event_id": "e1"}]})
        );
    }

    #[test]
    fn every_input_maps_to_its_status_and_entry() {
        let doc = run(&[
            received("e1", T0),
            notify("e2", "order_confirmed", T1),
            delivered("e3", "order_confirmed", T2),
            notify("e4", "being_fulfilled", T2),
            notify("e5", "shipped", T3),
            delivered("e6", "shipped", T4),
        ]);
        assert_eq!(
            doc,
            json!({"order_id": "order-1", "customer_id": "cust-456", "status": "shipped",
            "carrier": "UPS", "tracking_number": "UPS-0011223344556677",
            "notifications_delivered": 2,
            "timeline": [
                {"event": "received", "at": T0, "event_id": "e1"},
                {"event": "confirmed", "at": T1, "event_id": "e2"},
                {"event": "notification_delivered", "at": T2, "event_id": "e3",
                 "detail": "order_confirmed"},
                {"event": "picked_and_packed", "at": T2, "event_id": "e4"},
                {"event": "shipped", "at": T3, "event_id": "e5"},
                {"event": "notification_delivered", "at": T4, "event_id": "e6",
                 "detail": "shipped"}
            ]})
        );
    }

    #[test]
    fn rejection_records_reason_and_short_products() {
        let doc = run(&[received("e1", T0), notify("e2", "order_rejected", T1)]);
        assert_eq!(doc["status"], "rejected");
        assert_eq!(doc["reason"], "about order_rejected");
        assert_eq!(doc["short_products"], json!(["a", "b"]));
        assert_eq!(timeline_events(&doc), ["received", "rejected"]);
    }

    #[test]
    fn status_only_moves_forward() {
        // Out of order across topics: the highest status wins.
        let doc = run(&[
            notify("e4", "being_fulfilled", T2),
            notify("e2", "order_confirmed", T1),
            received("e1", T0),
        ]);
        assert_eq!(doc["status"], "picked_and_packed");
        assert_eq!(
            timeline_events(&doc),
            ["received", "confirmed", "picked_and_packed"]
        );

        let doc = run(&[notify("e2", "order_confirmed", T1), received("e1", T0)]);
        assert_eq!(doc["status"], "confirmed");
    }

    #[test]
    fn rejected_and_shipped_are_terminal() {
        let doc = run(&[
            notify("e5", "shipped", T3),
            received("e1", T0),
            notify("e2", "order_confirmed", T1),
            notify("e4", "being_fulfilled", T2),
            notify("e9", "order_rejected", T4),
        ]);
        assert_eq!(doc["status"], "shipped");
        assert_eq!(doc["carrier"], "UPS");
        assert!(doc.get("reason").is_none() && doc.get("short_products").is_none());
        assert_eq!(doc["timeline"].as_array().expect("timeline").len(), 5);

        let doc = run(&[
            notify("e2", "order_rejected", T1),
            received("e1", T0),
            notify("e3", "order_confirmed", T2),
            notify("e4", "being_fulfilled", T3),
            notify("e5", "shipped", T4),
        ]);
        assert_eq!(doc["status"], "rejected");
        assert_eq!(doc["reason"], "about order_rejected");
        assert!(doc.get("carrier").is_none() && doc.get("tracking_number").is_none());

        // A rejection replaces any status that is not terminal.
        let doc = run(&[
            received("e1", T0),
            notify("e2", "order_confirmed", T1),
            notify("e3", "order_rejected", T2),
        ]);
        assert_eq!(doc["status"], "rejected");
    }

    #[test]
    fn deliveries_only_count_and_record() {
        let doc = run(&[delivered("d1", "order_confirmed", T1)]);
        assert_eq!(doc["status"], "received");
        assert_eq!(doc["notifications_delivered"], 1);
        assert_eq!(doc["customer_id"], "cust-456");
        let doc = run(&[
            notify("e5", "shipped", T3),
            delivered("d1", "shipped", T4),
            delivered("d2", "being_fulfilled", T3),
        ]);
        assert_eq!(doc["status"], "shipped");
        assert_eq!(doc["notifications_delivered"], 2);
        let details: Vec<&Value> = doc["timeline"]
            .as_array()
            .expect("timeline")
            .iter()
            .map(|e| &e["detail"])
            .collect();
        assert_eq!(
            details,
            [&Value::Null, &json!("being_fulfilled"), &json!("shipped")]
        );
    }

    #[test]
    fn duplicate_event_ids_are_ignored() {
        let mut state = MemoryState::new();
        run_all(
            &[received("e1", T0), delivered("d1", "order_confirmed", T1)],
            &mut state,
        );
        let before = state.clone();
        for again in [
            received("e1", T0),
            delivered("d1", "order_confirmed", T1),
            // Same id, other content: still the same event.
            notify("e1", "shipped", T2),
        ] {
            let outputs = handle(&again, &Config::default(), &mut state).expect("ok");
            assert!(outputs.is_empty(), "{outputs:?}");
        }
        assert_eq!(state, before);
    }

    #[test]
    fn a_full_timeline_rejects_another_entry() {
        let mut state = MemoryState::new();
        let config = Config::default();
        for n in 0..MAX_TIMELINE_ENTRIES {
            let input = delivered(&format!("d{n}"), "shipped", T0);
            handle(&input, &config, &mut state).expect("room for it");
        }
        let refused = handle(&delivered("one-more", "shipped", T0), &config, &mut state);
        assert!(
            matches!(&refused, Err(StageFailure::Reject(m)) if m.contains("holds 64 entries")),
            "{refused:?}"
        );
    }

    #[test]
    fn timeline_is_sorted_by_time_then_arrival() {
        let mut no_time = notify("x", "order_confirmed", T0);
        no_time.headers.clear();
        let doc = run(&[
            notify("c", "being_fulfilled", T2),
            received("a", T1),
            delivered("b", "order_confirmed", T1),
            no_time,
        ]);
        let order: Vec<(&str, &str)> = doc["timeline"]
            .as_array()
            .expect("timeline")
            .iter()
            .map(|e| {
                (
                    e["event_id"].as_str().expect("id"),
                    e["at"].as_str().expect("at"),
                )
            })
            .collect();
        assert_eq!(order, [("x", ""), ("a", T1), ("b", T1), ("c", T2)]);
    }

    #[test]
    fn handling_is_deterministic() {
        let events = [received("e1", T0), notify("e2", "order_rejected", T1)];
        assert_eq!(run(&events), run(&events));
    }

    #[test]
    fn bad_inputs_are_rejected_without_saving() {
        let mut state = MemoryState::new();
        let cfg = Config::default();
        let err = handle(
            &input("e", "OrderConfirmed", &json!({}), None),
            &cfg,
            &mut state,
        )
        .expect_err("unknown type");
        assert!(
            err.message()
                .starts_with("unsupported event type \"OrderConfirmed\""),
            "{err}"
        );
        let err = handle(
            &input(
                "e",
                EVENT_NOTIFICATION,
                &json!({"order_id": "order-1"}),
                None,
            ),
            &cfg,
            &mut state,
        )
        .expect_err("bad payload");
        assert!(
            err.message().starts_with("invalid Notification payload: "),
            "{err}"
        );
        let mut keyless = received("e", T0);
        keyless.key = None;
        let err = handle(&keyless, &cfg, &mut state).expect_err("no key");
        assert!(err.message().contains("order_id \"order-1\""), "{err}");
        let err = handle(&received("", T0), &cfg, &mut state).expect_err("empty id");
        assert!(err.message().contains("empty id"), "{err}");
        assert!(state.is_empty());

        state.set("order/order-1", b"[]".to_vec());
        let err = handle(&received("e", T0), &cfg, &mut state).expect_err("corrupt");
        assert!(
            err.message()
                .starts_with("state order/order-1 is not an order status document: "),
            "{err}"
        );
    }

    #[test]
    fn config_rejects_unknown_keys() {
        assert_eq!(parse_config("{}").expect("empty"), Config {});
        let err = parse_config(r#"{"x": 1}"#).expect_err("unknown");
        assert!(err.message().contains("unknown field `x`"), "{err}");
    }
}
