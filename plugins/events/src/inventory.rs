//! The inventory saga's internal events: commands to the stock stage, results for the
//! reservation stage, and the stock ledger.
//!
//! ```text
//! OrderReceived ─► inventory ─► InventoryResults (order_pending, key order_id)
//!                            └► InventoryCommands (reserve, key product_id) ─► stock
//! stock ─► InventoryResults (reservation, key order_id) ─► reservation
//!       └► InventoryLedger (key product_id)
//! reservation ─► OrderConfirmed + Notification, or InventoryCommands (release) + Notification
//! ```
//!
//! An order whose quantities the inventory stage cannot process (see
//! [`crate::Order::quantities`]) is not split: it becomes one `order_refused` result instead,
//! and the reservation stage rejects it with a notification like an order that is short.

use serde::{Deserialize, Serialize};

use crate::order::OrderReceived;

/// A command to the stock stage (topic `InventoryCommands`, keyed by the product id),
/// tagged by `"command"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum InventoryCommand {
    /// Take units out of stock for an order, if there are enough (`"reserve"`).
    Reserve(ReserveCommand),
    /// Put units reserved for an order back into stock (`"release"`).
    Release(ReleaseCommand),
    /// Add delivered units to stock (`"restock"`).
    Restock(RestockCommand),
}

impl InventoryCommand {
    /// The product the command is about.
    #[must_use]
    pub fn product_id(&self) -> &str {
        match self {
            Self::Reserve(c) => &c.product_id,
            Self::Release(c) => &c.product_id,
            Self::Restock(c) => &c.product_id,
        }
    }

    /// The number of units. Signed so that 0 or a negative number still parses and can be
    /// rejected by name.
    #[must_use]
    pub fn quantity(&self) -> i64 {
        match self {
            Self::Reserve(c) => c.quantity,
            Self::Release(c) => c.quantity,
            Self::Restock(c) => c.quantity,
        }
    }
}

/// `{"command":"reserve","order_id","customer_id","product_id","quantity"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveCommand {
    /// The order that wants the units.
    pub order_id: String,
    /// The customer who placed the order.
    pub customer_id: String,
    /// The product to reserve.
    pub product_id: String,
    /// Units wanted (at least 1): the sum of the order's lines for this product.
    pub quantity: i64,
}

/// `{"command":"release","order_id","product_id","quantity"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseCommand {
    /// The order whose reservation is given back.
    pub order_id: String,
    /// The product to release.
    pub product_id: String,
    /// Units to put back (at least 1).
    pub quantity: i64,
}

/// `{"command":"restock","restock_id","product_id","quantity"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestockCommand {
    /// Identity of the delivery.
    pub restock_id: String,
    /// The product delivered.
    pub product_id: String,
    /// Units delivered (at least 1).
    pub quantity: i64,
}

/// An event for the reservation stage (topic `InventoryResults`, keyed by the order id),
/// tagged by `"kind"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InventoryResult {
    /// An order is waiting for the reservation of its products (`"order_pending"`).
    OrderPending(OrderPending),
    /// The outcome of one reserve command (`"reservation"`).
    Reservation(Reservation),
    /// An order the inventory stage cannot reserve at all (`"order_refused"`).
    OrderRefused(OrderRefused),
}

impl InventoryResult {
    /// The order the result is about.
    #[must_use]
    pub fn order_id(&self) -> &str {
        match self {
            Self::OrderPending(p) => &p.order_id,
            Self::Reservation(r) => &r.order_id,
            Self::OrderRefused(r) => &r.order_id,
        }
    }
}

/// `{"kind":"order_pending","order_id","order","products"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderPending {
    /// The order.
    pub order_id: String,
    /// The `OrderReceived` event as the inventory stage received it.
    pub order: OrderReceived,
    /// The distinct product ids of the order, sorted: one reservation result is expected
    /// for each.
    pub products: Vec<String>,
}

/// `{"kind":"reservation","order_id","product_id","quantity","reserved","available"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// The order that asked.
    pub order_id: String,
    /// The product asked for.
    pub product_id: String,
    /// Units asked for.
    pub quantity: i64,
    /// Whether the units were taken out of stock.
    pub reserved: bool,
    /// Stock after the reservation (reserved) or the stock that was too small (not).
    pub available: u64,
}

/// `{"kind":"order_refused","order_id","customer_id","products","reason"}`: the inventory
/// stage cannot reserve the order (e.g. a product's quantity over the order's lines is above
/// [`crate::order::MAX_QUANTITY`]), so no reserve command was sent; the reservation stage
/// rejects the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRefused {
    /// The order.
    pub order_id: String,
    /// The customer who placed the order, to notify.
    pub customer_id: String,
    /// The products the order cannot get (sorted, distinct, at least one): the notification's
    /// `short_products`.
    pub products: Vec<String>,
    /// Why, naming the field, e.g. `items[1].quantity: the quantity of product p over the
    /// order's lines must be at most 9007199254740991`.
    pub reason: String,
}

/// Why the stock of a product changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerReason {
    /// Units reserved for an order (`"reserve"`, negative delta).
    Reserve,
    /// Units of a rejected order put back (`"release"`, positive delta).
    Release,
    /// Units delivered (`"restock"`, positive delta).
    Restock,
}

/// One change of a product's stock (topic `InventoryLedger`, keyed by the product id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// The product.
    pub product_id: String,
    /// The change in units (negative for a reservation).
    pub delta: i64,
    /// The stock after the change (never negative).
    pub stock: u64,
    /// Why the stock changed.
    pub reason: LedgerReason,
    /// The order, for `reserve` and `release`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// The delivery, for `restock`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restock_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn commands_are_tagged_by_command() {
        let reserve = InventoryCommand::Reserve(ReserveCommand {
            order_id: "o".into(),
            customer_id: "c".into(),
            product_id: "p".into(),
            quantity: 3,
        });
        let v = serde_json::to_value(&reserve).expect("serializes");
        assert_eq!(
            v,
            json!({"command": "reserve", "order_id": "o", "customer_id": "c",
                   "product_id": "p", "quantity": 3})
        );
        assert_eq!(
            serde_json::from_value::<InventoryCommand>(v).expect("parses"),
            reserve
        );
        assert_eq!(reserve.product_id(), "p");
        assert_eq!(reserve.quantity(), 3);

        let restock: InventoryCommand = serde_json::from_value(
            json!({"command": "restock", "restock_id": "r", "product_id": "p", "quantity": 0}),
        )
        .expect("a zero quantity parses, to be rejected by name");
        assert_eq!(restock.quantity(), 0);
        assert!(
            serde_json::from_value::<InventoryCommand>(
                json!({"command": "steal", "product_id": "p", "quantity": 1})
            )
            .is_err()
        );
    }

    #[test]
    fn results_are_tagged_by_kind() {
        let r = InventoryResult::Reservation(Reservation {
            order_id: "o".into(),
            product_id: "p".into(),
            quantity: 2,
            reserved: false,
            available: 1,
        });
        let v = serde_json::to_value(&r).expect("serializes");
        assert_eq!(
            v,
            json!({"kind": "reservation", "order_id": "o", "product_id": "p", "quantity": 2,
                   "reserved": false, "available": 1})
        );
        assert_eq!(
            serde_json::from_value::<InventoryResult>(v).expect("parses"),
            r
        );
        assert_eq!(r.order_id(), "o");

        let pending: InventoryResult = serde_json::from_value(json!({
            "kind": "order_pending", "order_id": "o", "products": ["p"],
            "order": {"order_id": "o", "customer_id": "c", "total": 1.0, "status": "received",
                      "items": [{"product_id": "p", "quantity": 1, "price": 1.0}]}
        }))
        .expect("parses");
        let InventoryResult::OrderPending(p) = &pending else {
            panic!("{pending:?}")
        };
        assert_eq!(p.order.order.items[0].product_id, "p");
        let back: Value = serde_json::to_value(&pending).expect("serializes");
        assert_eq!(back["order"]["status"], "received");
        assert_eq!(back["kind"], "order_pending");
    }

    #[test]
    fn refusals_are_tagged_by_kind() {
        let r = InventoryResult::OrderRefused(OrderRefused {
            order_id: "o".into(),
            customer_id: "c".into(),
            products: vec!["p".into()],
            reason: "why".into(),
        });
        let v = serde_json::to_value(&r).expect("serializes");
        assert_eq!(
            v,
            json!({"kind": "order_refused", "order_id": "o", "customer_id": "c",
                   "products": ["p"], "reason": "why"})
        );
        assert_eq!(
            serde_json::from_value::<InventoryResult>(v).expect("parses"),
            r
        );
        assert_eq!(r.order_id(), "o");
    }

    #[test]
    fn ledger_omits_the_absent_reference() {
        let e = LedgerEntry {
            product_id: "p".into(),
            delta: 5,
            stock: 7,
            reason: LedgerReason::Restock,
            order_id: None,
            restock_id: Some("r".into()),
        };
        assert_eq!(
            serde_json::to_value(&e).expect("serializes"),
            json!({"product_id": "p", "delta": 5, "stock": 7, "reason": "restock",
                   "restock_id": "r"})
        );
    }
}
