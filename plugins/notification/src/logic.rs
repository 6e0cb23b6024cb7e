//! The notification stage's pure logic: deliver a notification (to the host log) and emit a
//! delivery receipt.
#![forbid(unsafe_code)]

use serde::Deserialize;
use stage_events::{Notification, NotificationDelivered};
use stagehost_sdk::{StageFailure, StageOutput};

/// Output name of the delivery receipt.
pub const OUTPUT_DELIVERED: &str = "delivered";
/// The delivery channel of this version: the host's structured log.
pub const CHANNEL: &str = "log";

/// The stage's `config` table. The notification stage has no settings; any key is rejected
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

/// The log line that stands for delivering `notification`.
#[must_use]
pub fn delivery_line(notification: &Notification) -> String {
    format!(
        "delivered {} notification for order {} to customer {} via {CHANNEL}: {}",
        notification.kind, notification.order_id, notification.customer_id, notification.message
    )
}

/// Delivers the notification by passing one line to `log` (the glue writes it to the host
/// log at level `info`), and outputs `delivered`: the receipt whose `notification_id` is
/// `event_id`, keyed by the order id.
///
/// # Errors
/// [`StageFailure::Reject`] if the payload is not a `Notification` or `event_id` is empty.
/// Nothing is logged then.
pub fn handle(
    payload: &str,
    event_id: &str,
    _config: &Config,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<StageOutput>, StageFailure> {
    let notification: Notification = stagehost_sdk::parse_payload(payload, "Notification")?;
    if event_id.is_empty() {
        return Err(StageFailure::Reject(
            "the input event has an empty id, which is the notification_id".to_owned(),
        ));
    }
    let key = notification.order_id.clone();
    let line = delivery_line(&notification);
    let receipt = NotificationDelivered::new(event_id, CHANNEL, notification);
    let output = StageOutput::json(OUTPUT_DELIVERED, &key, &receipt)?;
    log(&line);
    Ok(vec![output])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn run(
        payload: &Value,
        event_id: &str,
    ) -> (Result<Vec<StageOutput>, StageFailure>, Vec<String>) {
        let mut lines = Vec::new();
        let result = handle(
            &payload.to_string(),
            event_id,
            &Config::default(),
            &mut |l| {
                lines.push(l.to_owned());
            },
        );
        (result, lines)
    }

    fn delivered(payload: &Value) -> (Value, Vec<String>) {
        let (result, lines) = run(payload, "evt-42");
        let outputs = result.expect("delivered");
        assert_eq!(outputs.len(), 1);
        assert_eq!(outputs[0].output, "delivered");
        assert_eq!(
            outputs[0].key.as_deref(),
            Some(payload["order_id"].as_str().expect("id"))
        );
        (
            serde_json::from_str(&outputs[0].payload).expect("JSON"),
            lines,
        )
    }

    #[test]
    fn confirmed_notification_is_logged_and_receipted() {
        let n = json!({"order_id": "order-1", "customer_id": "cust-456",
                       "kind": "order_confirmed", "message": "Your order order-1 is confirmed."});
        let (receipt, lines) = delivered(&n);
        assert_eq!(
            receipt,
            json!({"notification_id": "evt-42", "order_id": "order-1", "customer_id": "cust-456",
                   "kind": "order_confirmed", "channel": "log",
                   "message": "Your order order-1 is confirmed."})
        );
        assert_eq!(
            lines,
            vec![
                "delivered order_confirmed notification for order order-1 to customer cust-456 \
                 via log: Your order order-1 is confirmed."
            ]
        );
    }

    #[test]
    fn every_kind_maps_with_its_optional_fields() {
        let cases = [
            json!({"order_id": "o", "customer_id": "c", "kind": "being_fulfilled",
                   "message": "Your order o is being fulfilled."}),
            json!({"order_id": "o", "customer_id": "c", "kind": "shipped",
                   "message": "Your order o has shipped with UPS, tracking UPS-0011223344556677.",
                   "carrier": "UPS", "tracking_number": "UPS-0011223344556677"}),
            json!({"order_id": "o", "customer_id": "c", "kind": "order_rejected",
                   "message": "Your order o was rejected: not enough stock for a, b.",
                   "short_products": ["a", "b"]}),
        ];
        for n in cases {
            let (receipt, lines) = delivered(&n);
            let mut expected = n.clone();
            expected["notification_id"] = json!("evt-42");
            expected["channel"] = json!("log");
            assert_eq!(receipt, expected);
            assert_eq!(lines.len(), 1);
            assert!(
                lines[0].starts_with(&format!(
                    "delivered {} notification for order o to customer c via log: ",
                    n["kind"].as_str().expect("kind")
                )),
                "{lines:?}"
            );
        }
    }

    #[test]
    fn handling_is_deterministic() {
        let n = json!({"order_id": "o", "customer_id": "c", "kind": "shipped", "message": "m",
                       "carrier": "DHL", "tracking_number": "DHL-1"});
        assert_eq!(run(&n, "e"), run(&n, "e"));
        // The receipt identity is the event id.
        assert_ne!(run(&n, "e").0, run(&n, "f").0);
    }

    #[test]
    fn bad_input_is_rejected_without_logging() {
        let (result, lines) = run(
            &json!({"order_id": "o", "customer_id": "c",
                                          "kind": "lost", "message": "m"}),
            "e",
        );
        let err = result.expect_err("unknown kind");
        assert!(matches!(err, StageFailure::Reject(_)));
        assert!(
            err.message()
                .starts_with("invalid Notification payload: kind: "),
            "{err}"
        );
        assert!(lines.is_empty());

        let (result, _) = run(
            &json!({"order_id": "o", "kind": "shipped", "message": "m"}),
            "e",
        );
        assert!(
            result
                .expect_err("missing")
                .message()
                .contains("missing field `customer_id`")
        );

        let mut lines = Vec::new();
        let err = handle("nope", "e", &Config::default(), &mut |l| {
            lines.push(l.to_owned())
        })
        .expect_err("malformed");
        assert!(
            err.message().starts_with("invalid Notification payload: "),
            "{err}"
        );

        let n = json!({"order_id": "o", "customer_id": "c", "kind": "shipped", "message": "m"});
        let (result, lines) = run(&n, "");
        assert!(result.expect_err("empty id").message().contains("empty id"));
        assert!(lines.is_empty());
    }

    #[test]
    fn config_rejects_unknown_keys() {
        assert_eq!(parse_config("{}").expect("empty"), Config {});
        let err = parse_config(r#"{"channel": "email"}"#).expect_err("unknown");
        assert!(err.message().contains("unknown field `channel`"), "{err}");
    }
}
