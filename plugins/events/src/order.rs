//! The order and the status-carrying events derived from it.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::money::cents_of;

/// The largest quantity of a line, of one product over an order's lines, and of a whole
/// order: 2^53 - 1, the largest integer that every JSON reader holds exactly (RFC 8259,
/// section 6). Sums of quantities up to it never overflow an `i64`.
pub const MAX_QUANTITY: i64 = 9_007_199_254_740_991;

/// One order line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// Identifier of the product, e.g. `prod-789`.
    pub product_id: String,
    /// Display name of the product, when the client sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Number of units, from 1 to [`MAX_QUANTITY`] once the order stage accepted the order.
    /// Signed so that a 0 or negative quantity still parses and can be rejected with a
    /// message naming the line (see the order stage).
    pub quantity: i64,
    /// Unit price: a whole number of cents from 0 to [`crate::money::MAX_CENTS`] once the
    /// order stage accepted the order (exact as an `f64`, see [`crate::money`]).
    pub price: f64,
}

impl Item {
    /// The line amount (`quantity` x price) in exact integer cents, or `None` if the price is
    /// not a whole number of cents in range (the order stage accepts no such price).
    #[must_use]
    pub fn line_cents(&self) -> Option<i128> {
        let price = cents_of(self.price).ok()?;
        i128::from(self.quantity).checked_mul(i128::from(price))
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
    /// The order total, which must equal the sum of the lines exactly (whole cents, see
    /// [`crate::money`]).
    pub total: f64,
    /// When the client placed the order (free-form text, usually RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

impl Order {
    /// The sum of the line amounts in exact integer cents, or `None` if a price is not a
    /// whole number of cents in range or the sum overflows.
    #[must_use]
    pub fn lines_cents(&self) -> Option<i128> {
        self.items
            .iter()
            .try_fold(0_i128, |sum, item| sum.checked_add(item.line_cents()?))
    }

    /// The units wanted per product (the lines of a product summed), sorted by product id.
    ///
    /// # Errors
    /// The first line, in order, whose quantity is not from 1 to [`MAX_QUANTITY`], or that
    /// takes its product's quantity or the order's over [`MAX_QUANTITY`].
    pub fn quantities(&self) -> Result<BTreeMap<&str, i64>, QuantityError> {
        let mut wanted: BTreeMap<&str, i64> = BTreeMap::new();
        let mut order_total: i64 = 0;
        for (line, item) in self.items.iter().enumerate() {
            let fail = |problem| QuantityError {
                line,
                product_id: item.product_id.clone(),
                problem,
            };
            let quantity = item.quantity;
            if quantity < 1 {
                return Err(fail(QuantityProblem::NotPositive(quantity)));
            }
            if quantity > MAX_QUANTITY {
                return Err(fail(QuantityProblem::LineTooLarge(quantity)));
            }
            let product = wanted.entry(item.product_id.as_str()).or_default();
            *product = product
                .checked_add(quantity)
                .filter(|sum| *sum <= MAX_QUANTITY)
                .ok_or_else(|| fail(QuantityProblem::ProductTooLarge))?;
            order_total = order_total
                .checked_add(quantity)
                .filter(|sum| *sum <= MAX_QUANTITY)
                .ok_or_else(|| fail(QuantityProblem::OrderTooLarge))?;
        }
        Ok(wanted)
    }
}

/// A quantity of an order that cannot be processed: see [`Order::quantities`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantityError {
    /// Index of the offending line in `items`.
    pub line: usize,
    /// The product of that line.
    pub product_id: String,
    /// What is wrong with it.
    pub problem: QuantityProblem,
}

/// What is wrong with a quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantityProblem {
    /// The line's quantity is 0 or negative.
    NotPositive(i64),
    /// The line's quantity is above [`MAX_QUANTITY`].
    LineTooLarge(i64),
    /// With this line, the product's quantity over the order's lines is above
    /// [`MAX_QUANTITY`].
    ProductTooLarge,
    /// With this line, the order's quantity is above [`MAX_QUANTITY`].
    OrderTooLarge,
}

impl fmt::Display for QuantityError {
    /// A message naming the field, e.g. `items[1].quantity must be greater than 0 (got 0)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = format!("items[{}].quantity", self.line);
        match self.problem {
            QuantityProblem::NotPositive(q) => write!(f, "{at} must be greater than 0 (got {q})"),
            QuantityProblem::LineTooLarge(q) => {
                write!(f, "{at} must be at most {MAX_QUANTITY} (got {q})")
            }
            QuantityProblem::ProductTooLarge => write!(
                f,
                "{at}: the quantity of product {} over the order's lines must be at most \
                 {MAX_QUANTITY}",
                self.product_id
            ),
            QuantityProblem::OrderTooLarge => write!(
                f,
                "{at}: the quantity of the whole order must be at most {MAX_QUANTITY}"
            ),
        }
    }
}

impl std::error::Error for QuantityError {}

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

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
    fn lines_are_summed_in_exact_cents() {
        let mut order = seed();
        assert_eq!(order.lines_cents(), Some(3998));
        order.items[0].quantity = 3;
        assert_eq!(order.items[0].line_cents(), Some(5997));
        // No per-unit rounding: a price that is not whole cents has no line amount.
        order.items[0].quantity = 1000;
        order.items[0].price = 0.004;
        assert_eq!(order.items[0].line_cents(), None);
        assert_eq!(order.lines_cents(), None);
        order.items[0].price = 1e17;
        assert_eq!(order.lines_cents(), None);
    }

    fn lines(items: &[(&str, i64)]) -> Order {
        let mut order = seed();
        order.items = items
            .iter()
            .map(|(p, q)| Item {
                product_id: (*p).to_owned(),
                name: None,
                quantity: *q,
                price: 1.0,
            })
            .collect();
        order
    }

    #[test]
    fn quantities_are_summed_per_product() {
        let order = lines(&[("b", 2), ("a", 1), ("b", 3)]);
        let wanted = order.quantities().expect("valid");
        assert_eq!(wanted.into_iter().collect::<Vec<_>>(), [("a", 1), ("b", 5)]);
        let order = lines(&[("a", MAX_QUANTITY)]);
        assert_eq!(
            order.quantities().expect("the largest line")["a"],
            MAX_QUANTITY
        );
    }

    #[test]
    fn quantities_that_cannot_be_processed_name_their_line() {
        let cases = [
            (
                lines(&[("a", 1), ("b", 0)]),
                "items[1].quantity must be greater than 0 (got 0)",
            ),
            (
                lines(&[("a", -4)]),
                "items[0].quantity must be greater than 0 (got -4)",
            ),
            (
                lines(&[
                    ("a", 5_000_000_000_000_000_000),
                    ("a", 5_000_000_000_000_000_000),
                ]),
                "items[0].quantity must be at most 9007199254740991 (got 5000000000000000000)",
            ),
            (
                lines(&[("a", i64::MAX)]),
                "items[0].quantity must be at most 9007199254740991 (got 9223372036854775807)",
            ),
            (
                lines(&[("b", 5_000_000_000_000_000), ("b", 5_000_000_000_000_000)]),
                "items[1].quantity: the quantity of product b over the order's lines must be \
                 at most 9007199254740991",
            ),
            (
                lines(&[("a", MAX_QUANTITY), ("b", 1)]),
                "items[1].quantity: the quantity of the whole order must be at most \
                 9007199254740991",
            ),
        ];
        for (order, expected) in cases {
            let err = order.quantities().expect_err(expected);
            assert_eq!(err.to_string(), expected);
        }
        let err = lines(&[("a", 1), ("b", MAX_QUANTITY - 1), ("b", 1)])
            .quantities()
            .expect_err("too large");
        assert_eq!(
            (err.line, err.product_id.as_str(), err.problem),
            (2, "b", QuantityProblem::OrderTooLarge)
        );
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
        let err =
            stagehost_sdk::parse_payload::<OrderReceived>(&value.to_string(), "OrderReceived")
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
