//! The order and the status-carrying events derived from it.

use serde::{Deserialize, Serialize};

use crate::money::to_cents;

/// One order line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// Identifier of the product, e.g. `prod-789`.
    pub product_id: String,
    /// Display name of the product, when the client sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Number of units. Signed so that a 0 or negative quantity still parses and can be
    /// rejected with a message naming the line (see the order stage).
    pub quantity: i64,
    /// Unit price.
    pub price: f64,
}

impl Item {
    /// The line amount (`quantity` x price rounded to cents) in integer cents.
    #[must_use]
    pub fn line_cents(&self) -> i128 {
        i128::from(self.quantity) * i128::from(to_cents(self.price))
    }
}

/// An order as posted to the HTTP ingress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// Identifier of the order; also the Kafka key of every event about it.
    pub order_id: String,
    /// Identifier of the customer who placed the order.
    pub customer_id: String,
    /// The order lines.
    pub items: Vec<Item>,
    /// The order total, which must equal the sum of the lines to the cent.
    pub total: f64,
    /// When the client placed the order (free-form text, usually RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

impl Order {
    /// The sum of the line amounts in integer cents, or `None` if it overflows.
    #[must_use]
    pub fn lines_cents(&self) -> Option<i128> {
        self.items
            .iter()
            .try_fold(0_i128, |sum, item| sum.checked_add(item.line_cents()))
    }
}

/// Where an order is in the pipeline; carried as the `status` field of the order events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Accepted by the order stage (`"received"`).
    Received,
    /// All lines are in stock (`"confirmed"`).
    Confirmed,
    /// A warehouse picked and packed the order (`"picked_and_packed"`).
    PickedAndPacked,
}

impl OrderStatus {
    /// The JSON spelling of the status.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Confirmed => "confirmed",
            Self::PickedAndPacked => "picked_and_packed",
        }
    }
}

impl std::fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The wire form of the status events, used to deserialize them without `#[serde(flatten)]`
/// (which would lose the field path of parse errors, e.g. `items[0].quantity`).
#[derive(Deserialize)]
struct OrderEventWire {
    order_id: String,
    customer_id: String,
    items: Vec<Item>,
    total: f64,
    #[serde(default)]
    timestamp: Option<String>,
    status: OrderStatus,
    #[serde(default)]
    warehouse: Option<String>,
    #[serde(default)]
    stamp: Option<String>,
}

impl OrderEventWire {
    /// Splits off the order after checking that the status is `expected`.
    fn into_order(
        self,
        expected: OrderStatus,
    ) -> Result<(Order, Option<String>, Option<String>), String> {
        if self.status != expected {
            return Err(format!(
                "status must be \"{expected}\" (got \"{}\")",
                self.status
            ));
        }
        let order = Order {
            order_id: self.order_id,
            customer_id: self.customer_id,
            items: self.items,
            total: self.total,
            timestamp: self.timestamp,
        };
        Ok((order, self.warehouse, self.stamp))
    }
}

/// Output of the order stage: the order with `"status": "received"`.
///
/// Deserializing checks the status: another status is a parse error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "OrderEventWire")]
pub struct OrderReceived {
    /// The order fields.
    #[serde(flatten)]
    pub order: Order,
    /// Always [`OrderStatus::Received`].
    pub status: OrderStatus,
}

impl TryFrom<OrderEventWire> for OrderReceived {
    type Error = String;

    fn try_from(wire: OrderEventWire) -> Result<Self, String> {
        let (order, _, _) = wire.into_order(OrderStatus::Received)?;
        Ok(Self::new(order))
    }
}

impl OrderReceived {
    /// Wraps an accepted order.
    #[must_use]
    pub fn new(order: Order) -> Self {
        Self {
            order,
            status: OrderStatus::Received,
        }
    }
}

/// Output of the inventory stage: the order with `"status": "confirmed"`.
///
/// Deserializing checks the status: another status is a parse error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "OrderEventWire")]
pub struct OrderConfirmed {
    /// The order fields.
    #[serde(flatten)]
    pub order: Order,
    /// Always [`OrderStatus::Confirmed`].
    pub status: OrderStatus,
}

impl TryFrom<OrderEventWire> for OrderConfirmed {
    type Error = String;

    fn try_from(wire: OrderEventWire) -> Result<Self, String> {
        let (order, _, _) = wire.into_order(OrderStatus::Confirmed)?;
        Ok(Self::new(order))
    }
}

impl OrderConfirmed {
    /// Wraps an order whose lines are all in stock.
    #[must_use]
    pub fn new(order: Order) -> Self {
        Self {
            order,
            status: OrderStatus::Confirmed,
        }
    }
}

/// Output of the warehouse stage: the order with `"status": "picked_and_packed"` and the
/// warehouse that packed it.
///
/// Deserializing checks the status: another status is a parse error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "OrderEventWire")]
pub struct OrderPickedAndPacked {
    /// The order fields.
    #[serde(flatten)]
    pub order: Order,
    /// Always [`OrderStatus::PickedAndPacked`].
    pub status: OrderStatus,
    /// Identifier of the warehouse that packed the order.
    pub warehouse: String,
    /// Free-form marker copied from the warehouse stage's `stamp` config key, when set
    /// (lets tests see which plugin build handled an event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamp: Option<String>,
}

impl TryFrom<OrderEventWire> for OrderPickedAndPacked {
    type Error = String;

    fn try_from(wire: OrderEventWire) -> Result<Self, String> {
        let (order, warehouse, stamp) = wire.into_order(OrderStatus::PickedAndPacked)?;
        let warehouse = warehouse.ok_or_else(|| "missing field `warehouse`".to_owned())?;
        Ok(Self::new(order, warehouse, stamp))
    }
}

impl OrderPickedAndPacked {
    /// Wraps an order packed by `warehouse`.
    #[must_use]
    pub fn new(order: Order, warehouse: String, stamp: Option<String>) -> Self {
        Self {
            order,
            status: OrderStatus::PickedAndPacked,
            warehouse,
            stamp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const SEED: &str = r#"{"order_id":"order-1","customer_id":"cust-456","items":[{"product_id":"prod-789","name":"Test Product","quantity":2,"price":19.99}],"total":39.98,"timestamp":"2026-11-25T10:00:00Z"}"#;

    fn seed() -> Order {
        serde_json::from_str(SEED).expect("seed order parses")
    }

    #[test]
    fn seed_order_round_trips() {
        let order = seed();
        assert_eq!(order.order_id, "order-1");
        assert_eq!(order.items[0].quantity, 2);
        assert_eq!(order.items[0].name.as_deref(), Some("Test Product"));
        let back: Value = serde_json::to_value(&order).expect("serializes");
        let original: Value = serde_json::from_str(SEED).expect("json");
        assert_eq!(back, original);
    }

    #[test]
    fn absent_optionals_are_omitted() {
        let order: Order = serde_json::from_value(json!({
            "order_id": "o", "customer_id": "c",
            "items": [{"product_id": "p", "quantity": 1, "price": 1.0}],
            "total": 1.0
        }))
        .expect("parses without optionals");
        assert_eq!(order.timestamp, None);
        assert_eq!(order.items[0].name, None);
        let text = serde_json::to_string(&order).expect("serializes");
        assert!(!text.contains("timestamp"), "{text}");
        assert!(!text.contains("name"), "{text}");
    }

    #[test]
    fn zero_and_negative_quantities_parse_so_they_can_be_rejected_by_name() {
        let order: Order = serde_json::from_value(json!({
            "order_id": "o", "customer_id": "c",
            "items": [{"product_id": "p", "quantity": 0, "price": 1.0},
                      {"product_id": "q", "quantity": -3, "price": 1.0}],
            "total": 0.0
        }))
        .expect("parses");
        assert_eq!(order.items[0].quantity, 0);
        assert_eq!(order.items[1].quantity, -3);
    }

    #[test]
    fn lines_are_summed_in_cents() {
        let mut order = seed();
        assert_eq!(order.lines_cents(), Some(3998));
        order.items[0].quantity = 3;
        assert_eq!(order.items[0].line_cents(), 5997);
    }

    #[test]
    fn status_events_flatten_the_order_and_add_the_status() {
        let received = serde_json::to_value(OrderReceived::new(seed())).expect("serializes");
        assert_eq!(received["status"], "received");
        assert_eq!(received["order_id"], "order-1");
        assert_eq!(received["items"][0]["quantity"], 2);

        let confirmed = serde_json::to_value(OrderConfirmed::new(seed())).expect("serializes");
        assert_eq!(confirmed["status"], "confirmed");

        let packed = OrderPickedAndPacked::new(seed(), "wh-1".into(), None);
        let packed_json = serde_json::to_value(&packed).expect("serializes");
        assert_eq!(packed_json["status"], "picked_and_packed");
        assert_eq!(packed_json["warehouse"], "wh-1");
        assert!(packed_json.get("stamp").is_none());

        let stamped = OrderPickedAndPacked::new(seed(), "wh-2".into(), Some("v2".into()));
        assert_eq!(
            serde_json::to_value(&stamped).expect("serializes")["stamp"],
            "v2"
        );
    }

    #[test]
    fn status_events_parse_back_and_check_their_status() {
        let text = serde_json::to_string(&OrderConfirmed::new(seed())).expect("serializes");
        let confirmed: OrderConfirmed = serde_json::from_str(&text).expect("parses");
        assert_eq!(confirmed.order, seed());

        // A confirmed event is not a received one.
        let err = serde_json::from_str::<OrderReceived>(&text).expect_err("wrong status");
        assert!(
            err.to_string()
                .starts_with("status must be \"received\" (got \"confirmed\")"),
            "{err}"
        );

        let packed = OrderPickedAndPacked::new(seed(), "wh-9".into(), Some("s".into()));
        let text = serde_json::to_string(&packed).expect("serializes");
        let back: OrderPickedAndPacked = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, packed);

        // The warehouse is required on a packed event.
        let mut value: Value = serde_json::from_str(&text).expect("json");
        value.as_object_mut().expect("object").remove("warehouse");
        let err = serde_json::from_value::<OrderPickedAndPacked>(value).expect_err("no warehouse");
        assert!(
            err.to_string().contains("missing field `warehouse`"),
            "{err}"
        );
    }

    #[test]
    fn parse_errors_keep_the_field_path() {
        let mut value: Value = serde_json::from_str(SEED).expect("json");
        value["status"] = json!("received");
        value["items"][0]["quantity"] = json!("2");
        let err = crate::parse_payload::<OrderReceived>(&value.to_string(), "OrderReceived")
            .expect_err("string quantity");
        assert!(
            err.message()
                .starts_with("invalid OrderReceived payload: items[0].quantity: invalid type"),
            "{err}"
        );
    }

    #[test]
    fn unknown_status_is_a_parse_error() {
        let mut value: Value = serde_json::from_str(SEED).expect("json");
        value["status"] = json!("lost");
        assert!(serde_json::from_value::<OrderReceived>(value).is_err());
    }
}
