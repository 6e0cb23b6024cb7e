//! The order-status document (topic `OrderStatus`, keyed by the order id): where an order
//! is, merged from the events of several topics.

use serde::{Deserialize, Serialize};

/// Where an order is, as tracked by the order-status stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackedStatus {
    /// Accepted by the order stage (`"received"`).
    Received,
    /// Every product reserved (`"confirmed"`).
    Confirmed,
    /// Some product could not be reserved (`"rejected"`); terminal.
    Rejected,
    /// A warehouse is picking and packing it (`"picked_and_packed"`).
    PickedAndPacked,
    /// Handed to a carrier (`"shipped"`); terminal.
    Shipped,
}

impl TrackedStatus {
    /// The JSON spelling of the status.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Confirmed => "confirmed",
            Self::Rejected => "rejected",
            Self::PickedAndPacked => "picked_and_packed",
            Self::Shipped => "shipped",
        }
    }

    /// Whether no later event changes the status (`rejected`, `shipped`).
    #[must_use]
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Rejected | Self::Shipped)
    }

    /// Position on the happy path `received < confirmed < picked_and_packed < shipped`.
    /// `rejected` is off that path (it ranks with `confirmed`); being terminal, it replaces
    /// any status that is not.
    #[must_use]
    pub fn rank(self) -> u8 {
        match self {
            Self::Received => 0,
            Self::Confirmed | Self::Rejected => 1,
            Self::PickedAndPacked => 2,
            Self::Shipped => 3,
        }
    }
}

impl std::fmt::Display for TrackedStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a timeline entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimelineEvent {
    /// An `OrderReceived` event.
    Received,
    /// An `order_confirmed` notification.
    Confirmed,
    /// An `order_rejected` notification.
    Rejected,
    /// A `being_fulfilled` notification.
    PickedAndPacked,
    /// A `shipped` notification.
    Shipped,
    /// A `NotificationDelivered` receipt (its kind in `detail`).
    NotificationDelivered,
}

/// One input that changed the document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// What happened.
    pub event: TimelineEvent,
    /// The input's `ce_time` header, or `""` when it had none.
    pub at: String,
    /// The input's event id (`ce_id`); an input whose id is already here is ignored.
    pub event_id: String,
    /// Extra information: the notification kind of a `notification_delivered` entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The status of one order (output `status` of the order-status stage, and its state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderStatusDoc {
    /// The order.
    pub order_id: String,
    /// The customer who placed it.
    pub customer_id: String,
    /// Where the order is.
    pub status: TrackedStatus,
    /// Why the order was rejected (the rejection message); only when `rejected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Sorted ids of the products that were short; only when `rejected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_products: Option<Vec<String>>,
    /// The carrier; only when `shipped`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<String>,
    /// The carrier's tracking number; only when `shipped`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_number: Option<String>,
    /// How many notifications about the order were delivered.
    pub notifications_delivered: u64,
    /// The inputs seen, sorted by `at`, then in the order they arrived.
    pub timeline: Vec<TimelineEntry>,
}

impl OrderStatusDoc {
    /// A document at status `received` with an empty timeline.
    #[must_use]
    pub fn new(order_id: impl Into<String>, customer_id: impl Into<String>) -> Self {
        Self {
            order_id: order_id.into(),
            customer_id: customer_id.into(),
            status: TrackedStatus::Received,
            reason: None,
            short_products: None,
            carrier: None,
            tracking_number: None,
            notifications_delivered: 0,
            timeline: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn statuses_are_snake_case_and_ranked() {
        for (s, text) in [
            (TrackedStatus::Received, "received"),
            (TrackedStatus::Confirmed, "confirmed"),
            (TrackedStatus::Rejected, "rejected"),
            (TrackedStatus::PickedAndPacked, "picked_and_packed"),
            (TrackedStatus::Shipped, "shipped"),
        ] {
            assert_eq!(serde_json::to_value(s).expect("serializes"), json!(text));
            assert_eq!(s.to_string(), text);
        }
        assert!(TrackedStatus::Received.rank() < TrackedStatus::Confirmed.rank());
        assert!(TrackedStatus::Confirmed.rank() < TrackedStatus::PickedAndPacked.rank());
        assert!(TrackedStatus::PickedAndPacked.rank() < TrackedStatus::Shipped.rank());
        assert!(TrackedStatus::Shipped.is_terminal() && TrackedStatus::Rejected.is_terminal());
        assert!(!TrackedStatus::PickedAndPacked.is_terminal());
    }

    #[test]
    fn new_document_serializes_without_optionals() {
        let mut doc = OrderStatusDoc::new("o", "c");
        doc.timeline.push(TimelineEntry {
            event: TimelineEvent::NotificationDelivered,
            at: String::new(),
            event_id: "e".into(),
            detail: Some("shipped".into()),
        });
        let v = serde_json::to_value(&doc).expect("serializes");
        assert_eq!(
            v,
            json!({"order_id": "o", "customer_id": "c", "status": "received",
                   "notifications_delivered": 0,
                   "timeline": [{"event": "notification_delivered", "at": "", "event_id": "e",
                                 "detail": "shipped"}]})
        );
        assert_eq!(
            serde_json::from_value::<OrderStatusDoc>(v).expect("parses"),
            doc
        );
    }
}
