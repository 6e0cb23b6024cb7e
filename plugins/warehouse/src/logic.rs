//! The warehouse stage's pure logic: pick and pack a confirmed order.
#![forbid(unsafe_code)]

use serde::Deserialize;
use stage_events::{Notification, NotificationKind, OrderConfirmed, OrderPickedAndPacked};
use stagehost_sdk::{StageFailure, StageOutput};

/// Output name of a packed order.
pub const OUTPUT_PACKED: &str = "packed";
/// Output name of the `being_fulfilled` customer notification.
pub const OUTPUT_NOTIFY: &str = "notify";

/// The stage's `config` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Identifier of this warehouse, written to the packed event (default `"wh-1"`).
    #[serde(default = "default_warehouse_id")]
    pub warehouse_id: String,
    /// When set, copied to the packed event as `"stamp"` (identifies the plugin build or
    /// configuration in hot-swap tests).
    #[serde(default)]
    pub stamp: Option<String>,
}

fn default_warehouse_id() -> String {
    "wh-1".to_owned()
}

impl Default for Config {
    fn default() -> Self {
        Self {
            warehouse_id: default_warehouse_id(),
            stamp: None,
        }
    }
}

/// Parses the stage's `config` table (the JSON object from `config::get-all`).
///
/// # Errors
/// [`StageFailure::Reject`] naming the offending key; `warehouse_id` must not be empty.
pub fn parse_config(json: &str) -> Result<Config, StageFailure> {
    let config: Config = stagehost_sdk::parse_config(json)?;
    if config.warehouse_id.trim().is_empty() {
        return Err(StageFailure::Reject(
            "invalid stage config: warehouse_id must not be empty".to_owned(),
        ));
    }
    Ok(config)
}

/// Picks and packs the confirmed order: outputs `packed` (the order with
/// `"status": "picked_and_packed"`, `"warehouse"` and the optional `"stamp"`) and `notify`
/// (kind `being_fulfilled`), both keyed by the order id.
///
/// # Errors
/// [`StageFailure::Reject`] if the payload is not an `OrderConfirmed`.
pub fn handle(
    payload: &str,
    _event_id: &str,
    config: &Config,
) -> Result<Vec<StageOutput>, StageFailure> {
    let order = stagehost_sdk::parse_payload::<OrderConfirmed>(payload, "OrderConfirmed")?.order;
    let key = order.order_id.clone();
    let notification = Notification::new(
        &order.order_id,
        &order.customer_id,
        NotificationKind::BeingFulfilled,
        format!("Your order {} is being fulfilled.", order.order_id),
    );
    let packed =
        OrderPickedAndPacked::new(order, config.warehouse_id.clone(), config.stamp.clone());
    Ok(vec![
        StageOutput::json(OUTPUT_PACKED, &key, &packed)?,
        StageOutput::json(OUTPUT_NOTIFY, &key, &notification)?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn confirmed() -> Value {
        json!({"order_id": "order-1", "customer_id": "cust-456",
               "items": [{"product_id": "prod-789", "name": "Test Product",
                          "quantity": 2, "price": 19.99}],
               "total": 39.98, "timestamp": "2026-11-25T10:00:00Z", "status": "confirmed"})
    }

    fn json_of(out: &StageOutput) -> Value {
        serde_json::from_str(&out.payload).expect("payload is JSON")
    }

    #[test]
    fn confirmed_order_is_packed_and_notified() {
        let outputs = handle(&confirmed().to_string(), "evt-1", &Config::default()).expect("ok");
        assert_eq!(outputs.len(), 2);
        assert_eq!(outputs[0].output, "packed");
        assert_eq!(outputs[1].output, "notify");
        for out in &outputs {
            assert_eq!(out.key.as_deref(), Some("order-1"));
        }
        let mut expected = confirmed();
        expected["status"] = json!("picked_and_packed");
        expected["warehouse"] = json!("wh-1");
        assert_eq!(json_of(&outputs[0]), expected);
        assert_eq!(
            json_of(&outputs[1]),
            json!({"order_id": "order-1", "customer_id": "cust-456", "kind": "being_fulfilled",
                   "message": "Your order order-1 is being fulfilled."})
        );
    }

    #[test]
    fn warehouse_id_and_stamp_come_from_config() {
        let config =
            parse_config(r#"{"warehouse_id": "wh-berlin", "stamp": "v2"}"#).expect("valid config");
        let outputs = handle(&confirmed().to_string(), "evt-1", &config).expect("ok");
        let packed = json_of(&outputs[0]);
        assert_eq!(packed["warehouse"], "wh-berlin");
        assert_eq!(packed["stamp"], "v2");
        // Without a stamp the key is omitted, not null.
        let outputs = handle(&confirmed().to_string(), "evt-1", &Config::default()).expect("ok");
        assert!(json_of(&outputs[0]).get("stamp").is_none());
    }

    #[test]
    fn handling_is_deterministic() {
        let p = confirmed().to_string();
        assert_eq!(
            handle(&p, "a", &Config::default()),
            handle(&p, "a", &Config::default())
        );
    }

    #[test]
    fn wrong_or_malformed_input_is_rejected() {
        let cfg = Config::default();
        let err = handle("{", "e", &cfg).expect_err("malformed");
        assert!(matches!(err, StageFailure::Reject(_)));
        assert!(
            err.message()
                .starts_with("invalid OrderConfirmed payload: "),
            "{err}"
        );

        let mut received = confirmed();
        received["status"] = json!("received");
        let err = handle(&received.to_string(), "e", &cfg).expect_err("wrong status");
        assert!(
            err.message().starts_with(
                "invalid OrderConfirmed payload: status must be \"confirmed\" (got \"received\")"
            ),
            "{err}"
        );

        let mut no_customer = confirmed();
        no_customer
            .as_object_mut()
            .expect("object")
            .remove("customer_id");
        let err = handle(&no_customer.to_string(), "e", &cfg).expect_err("missing field");
        assert!(
            err.message().contains("missing field `customer_id`"),
            "{err}"
        );
    }

    #[test]
    fn config_defaults_and_errors() {
        assert_eq!(parse_config("{}").expect("empty"), Config::default());
        assert_eq!(Config::default().warehouse_id, "wh-1");
        let err = parse_config(r#"{"warehouse_id": ""}"#).expect_err("empty id");
        assert_eq!(
            err.message(),
            "invalid stage config: warehouse_id must not be empty"
        );
        let err = parse_config(r#"{"warehouse_id": 3}"#).expect_err("number");
        assert!(
            err.message()
                .starts_with("invalid stage config: warehouse_id: "),
            "{err}"
        );
        let err = parse_config(r#"{"stamp": ["x"]}"#).expect_err("list");
        assert!(
            err.message().starts_with("invalid stage config: stamp: "),
            "{err}"
        );
        let err = parse_config(r#"{"warehouse": "wh-2"}"#).expect_err("typo");
        assert!(err.message().contains("unknown field `warehouse`"), "{err}");
    }
}
