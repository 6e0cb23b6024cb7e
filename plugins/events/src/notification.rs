//! Customer notifications and their delivery receipts.

use serde::{Deserialize, Serialize};

/// What a notification tells the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// Every line is in stock (`"order_confirmed"`); sent by the inventory stage.
    OrderConfirmed,
    /// Some products are short, or asked for in a quantity the inventory cannot process
    /// (`"order_rejected"`, with `short_products`); sent by the reservation stage.
    OrderRejected,
    /// A warehouse is picking the order (`"being_fulfilled"`); sent by the warehouse stage.
    BeingFulfilled,
    /// Handed to a carrier (`"shipped"`, with `carrier` and `tracking_number`); sent by the
    /// shipper stage.
    Shipped,
}

impl NotificationKind {
    /// The JSON spelling of the kind.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OrderConfirmed => "order_confirmed",
            Self::OrderRejected => "order_rejected",
            Self::BeingFulfilled => "being_fulfilled",
            Self::Shipped => "shipped",
        }
    }
}

impl std::fmt::Display for NotificationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A notification to send to a customer (the `notify` output of several stages).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// The order the notification is about.
    pub order_id: String,
    /// The customer to notify.
    pub customer_id: String,
    /// What happened.
    pub kind: NotificationKind,
    /// Human-readable text for the customer.
    pub message: String,
    /// The carrier, for [`NotificationKind::Shipped`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<String>,
    /// The carrier's tracking number, for [`NotificationKind::Shipped`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_number: Option<String>,
    /// Sorted ids of the products the order cannot get (out of stock, or asked for in a
    /// quantity the inventory cannot process), for [`NotificationKind::OrderRejected`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_products: Option<Vec<String>>,
}

impl Notification {
    /// A notification without the kind-specific optional fields.
    #[must_use]
    pub fn new(
        order_id: impl Into<String>,
        customer_id: impl Into<String>,
        kind: NotificationKind,
        message: impl Into<String>,
    ) -> Self {
        Self {
            order_id: order_id.into(),
            customer_id: customer_id.into(),
            kind,
            message: message.into(),
            carrier: None,
            tracking_number: None,
            short_products: None,
        }
    }
}

/// Receipt that a notification was delivered (the `delivered` output of the notification
/// stage).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationDelivered {
    /// Identity of the delivered notification: the id of the input event that carried it.
    pub notification_id: String,
    /// The order the notification is about.
    pub order_id: String,
    /// The customer who was notified.
    pub customer_id: String,
    /// What the notification said happened.
    pub kind: NotificationKind,
    /// How it was delivered, e.g. `"log"`.
    pub channel: String,
    /// The text that was delivered.
    pub message: String,
    /// Copied from the notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<String>,
    /// Copied from the notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_number: Option<String>,
    /// Copied from the notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_products: Option<Vec<String>>,
}

impl NotificationDelivered {
    /// The receipt for `notification`, delivered through `channel`, whose event id was
    /// `notification_id`.
    #[must_use]
    pub fn new(
        notification_id: impl Into<String>,
        channel: impl Into<String>,
        notification: Notification,
    ) -> Self {
        let Notification {
            order_id,
            customer_id,
            kind,
            message,
            carrier,
            tracking_number,
            short_products,
        } = notification;
        Self {
            notification_id: notification_id.into(),
            order_id,
            customer_id,
            kind,
            channel: channel.into(),
            message,
            carrier,
            tracking_number,
            short_products,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kinds_are_snake_case() {
        for (kind, text) in [
            (NotificationKind::OrderConfirmed, "order_confirmed"),
            (NotificationKind::OrderRejected, "order_rejected"),
            (NotificationKind::BeingFulfilled, "being_fulfilled"),
            (NotificationKind::Shipped, "shipped"),
        ] {
            assert_eq!(serde_json::to_value(kind).expect("serializes"), json!(text));
            assert_eq!(kind.to_string(), text);
            let back: NotificationKind = serde_json::from_value(json!(text)).expect("parses back");
            assert_eq!(back, kind);
        }
        assert!(serde_json::from_value::<NotificationKind>(json!("OrderConfirmed")).is_err());
    }

    #[test]
    fn absent_optionals_are_omitted() {
        let n = Notification::new("o", "c", NotificationKind::OrderConfirmed, "hi");
        assert_eq!(
            serde_json::to_value(&n).expect("serializes"),
            json!({"order_id": "o", "customer_id": "c", "kind": "order_confirmed", "message": "hi"})
        );
    }

    #[test]
    fn delivered_copies_every_field() {
        let mut n = Notification::new("o", "c", NotificationKind::Shipped, "shipped");
        n.carrier = Some("UPS".into());
        n.tracking_number = Some("UPS-0123".into());
        let d = NotificationDelivered::new("evt-1", "log", n);
        assert_eq!(
            serde_json::to_value(&d).expect("serializes"),
            json!({
                "notification_id": "evt-1", "order_id": "o", "customer_id": "c",
                "kind": "shipped", "channel": "log", "message": "shipped",
                "carrier": "UPS", "tracking_number": "UPS-0123"
            })
        );
    }
}
