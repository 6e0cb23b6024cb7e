//! The shipper stage's pure logic: hand a packed order to a carrier.
#![forbid(unsafe_code)]

use serde::Deserialize;
use sha2::{Digest, Sha256};
use stage_events::{Notification, NotificationKind, OrderPickedAndPacked};
use stagehost_sdk::{StageFailure, StageOutput};

/// Output name of the `shipped` customer notification.
pub const OUTPUT_NOTIFY: &str = "notify";

/// The stage's `config` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The carriers to choose from (default `["UPS", "FedEx", "DHL"]`); must not be empty.
    #[serde(default = "default_carriers")]
    pub carriers: Vec<String>,
}

fn default_carriers() -> Vec<String> {
    ["UPS", "FedEx", "DHL"].map(String::from).to_vec()
}

impl Default for Config {
    fn default() -> Self {
        Self {
            carriers: default_carriers(),
        }
    }
}

/// Parses the stage's `config` table (the JSON object from `config::get-all`).
///
/// # Errors
/// [`StageFailure::Reject`] naming the offending key; `carriers` must be a non-empty list of
/// non-empty strings.
pub fn parse_config(json: &str) -> Result<Config, StageFailure> {
    let config: Config = stagehost_sdk::parse_config(json)?;
    if config.carriers.is_empty() {
        return Err(StageFailure::Reject(
            "invalid stage config: carriers must not be empty".to_owned(),
        ));
    }
    if let Some(i) = config.carriers.iter().position(|c| c.trim().is_empty()) {
        return Err(StageFailure::Reject(format!(
            "invalid stage config: carriers[{i}] must not be empty"
        )));
    }
    Ok(config)
}

/// A carrier and tracking number, both derived from the order id alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipment {
    /// The chosen carrier, one of the configured `carriers`.
    pub carrier: String,
    /// `<PREFIX>-<16 uppercase hex digits>`.
    pub tracking_number: String,
}

/// Chooses the carrier and tracking number for `order_id`, deterministically.
///
/// With `h` the first 8 bytes of SHA-256(`order_id`) (UTF-8): the carrier is
/// `carriers[u64::from_be_bytes(h) % carriers.len()]` and the tracking number is
/// `<carrier's ASCII letters and digits, uppercased>-<h as 16 uppercase hex digits>`
/// (prefix `TRK` if the carrier name has no ASCII letter or digit).
///
/// `carriers` must not be empty ([`parse_config`] ensures it); an empty list yields
/// carrier `"UNKNOWN"`.
#[must_use]
pub fn shipment(order_id: &str, carriers: &[String]) -> Shipment {
    let digest = Sha256::digest(order_id.as_bytes());
    let mut head = [0_u8; 8];
    head.copy_from_slice(&digest[..8]);
    let n = u64::from_be_bytes(head);
    let carrier = match u64::try_from(carriers.len()) {
        Ok(len) if len > 0 => {
            // n % len < len <= usize::MAX, so the index conversion cannot fail.
            let index = usize::try_from(n % len).unwrap_or_default();
            carriers[index].clone()
        }
        _ => "UNKNOWN".to_owned(),
    };
    let mut prefix: String = carrier
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if prefix.is_empty() {
        prefix.push_str("TRK");
    }
    Shipment {
        tracking_number: format!("{prefix}-{n:016X}"),
        carrier,
    }
}

/// Ships the packed order: the only output is `notify` (kind `shipped`, with `carrier` and
/// `tracking_number`), keyed by the order id.
///
/// # Errors
/// [`StageFailure::Reject`] if the payload is not an `OrderPickedAndPacked`.
pub fn handle(
    payload: &str,
    _event_id: &str,
    config: &Config,
) -> Result<Vec<StageOutput>, StageFailure> {
    let order =
        stagehost_sdk::parse_payload::<OrderPickedAndPacked>(payload, "OrderPickedAndPacked")?
            .order;
    let Shipment {
        carrier,
        tracking_number,
    } = shipment(&order.order_id, &config.carriers);
    let mut notification = Notification::new(
        &order.order_id,
        &order.customer_id,
        NotificationKind::Shipped,
        format!(
            "Your order {} has shipped with {carrier}, tracking {tracking_number}.",
            order.order_id
        ),
    );
    notification.carrier = Some(carrier);
    notification.tracking_number = Some(tracking_number);
    Ok(vec![StageOutput::json(
        OUTPUT_NOTIFY,
        &order.order_id,
        &notification,
    )?])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn packed(order_id: &str) -> String {
        json!({"order_id": order_id, "customer_id": "cust-456",
               "items": [{"product_id": "prod-789", "quantity": 2, "price": 19.99}],
               "total": 39.98, "status": "picked_and_packed", "warehouse": "wh-1"})
        .to_string()
    }

    fn carriers(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn shipment_follows_the_documented_sha256_rule() {
        let digest = Sha256::digest(b"order-1");
        let hex: String = digest[..8].iter().map(|b| format!("{b:02X}")).collect();
        let n = u64::from_str_radix(&hex, 16).expect("hex");
        let all = Config::default().carriers;
        let expected_carrier = &all[usize::try_from(n % 3).expect("small")];
        let s = shipment("order-1", &all);
        assert_eq!(&s.carrier, expected_carrier);
        assert_eq!(
            s.tracking_number,
            format!("{}-{hex}", expected_carrier.to_uppercase())
        );
    }

    #[test]
    fn shipment_golden_values() {
        // Pinned so that an accidental change of the rule (which would re-route and re-number
        // every order) fails loudly.
        let all = Config::default().carriers;
        assert_eq!(
            shipment("order-1", &all),
            Shipment {
                carrier: GOLDEN_ORDER_1.0.to_owned(),
                tracking_number: GOLDEN_ORDER_1.1.to_owned()
            }
        );
    }

    /// Computed independently: Python `hashlib.sha256(b"order-1").digest()[:8]`.
    const GOLDEN_ORDER_1: (&str, &str) = ("DHL", "DHL-0BAFE22156D2698C");

    #[test]
    fn tracking_numbers_are_well_formed_and_carriers_spread() {
        let all = Config::default().carriers;
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..60 {
            let s = shipment(&format!("order-{i}"), &all);
            assert!(all.contains(&s.carrier), "{s:?}");
            let (prefix, hex) = s.tracking_number.split_once('-').expect("dash");
            assert_eq!(prefix, s.carrier.to_uppercase());
            assert_eq!(hex.len(), 16, "{s:?}");
            assert!(
                hex.chars()
                    .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c)),
                "{s:?}"
            );
            seen.insert(s.carrier);
        }
        assert_eq!(seen.len(), 3, "60 orders should use every carrier");
    }

    #[test]
    fn prefix_is_uppercase_alphanumeric_with_fallback() {
        let s = shipment("o", &carriers(&["Royal Mail-2"]));
        assert_eq!(s.carrier, "Royal Mail-2");
        assert!(s.tracking_number.starts_with("ROYALMAIL2-"), "{s:?}");
        let s = shipment("o", &carriers(&["Пошта"]));
        assert!(s.tracking_number.starts_with("TRK-"), "{s:?}");
        assert_eq!(shipment("o", &[]).carrier, "UNKNOWN");
    }

    #[test]
    fn packed_order_ships_with_a_notification() {
        let outputs = handle(&packed("order-1"), "evt-1", &Config::default()).expect("ok");
        assert_eq!(outputs.len(), 1);
        let out = &outputs[0];
        assert_eq!(out.output, "notify");
        assert_eq!(out.key.as_deref(), Some("order-1"));
        let s = shipment("order-1", &Config::default().carriers);
        let n: Value = serde_json::from_str(&out.payload).expect("JSON");
        assert_eq!(
            n,
            json!({"order_id": "order-1", "customer_id": "cust-456", "kind": "shipped",
                   "message": format!("Your order order-1 has shipped with {}, tracking {}.",
                                      s.carrier, s.tracking_number),
                   "carrier": s.carrier, "tracking_number": s.tracking_number})
        );
    }

    #[test]
    fn handling_is_deterministic_and_depends_on_the_order_id() {
        let cfg = Config::default();
        assert_eq!(
            handle(&packed("order-7"), "a", &cfg),
            handle(&packed("order-7"), "b", &cfg)
        );
        assert_ne!(
            handle(&packed("order-7"), "a", &cfg),
            handle(&packed("order-8"), "a", &cfg)
        );
    }

    #[test]
    fn single_carrier_config_always_uses_it() {
        let cfg = parse_config(r#"{"carriers": ["Local Courier"]}"#).expect("valid");
        for i in 0..10 {
            let s = shipment(&format!("order-{i}"), &cfg.carriers);
            assert_eq!(s.carrier, "Local Courier");
            assert!(s.tracking_number.starts_with("LOCALCOURIER-"));
        }
    }

    #[test]
    fn wrong_or_malformed_input_is_rejected() {
        let cfg = Config::default();
        let err = handle("[]", "e", &cfg).expect_err("not an object");
        assert!(matches!(err, StageFailure::Reject(_)));
        assert!(
            err.message()
                .starts_with("invalid OrderPickedAndPacked payload: "),
            "{err}"
        );
        let confirmed = packed("o").replace("picked_and_packed", "confirmed");
        let err = handle(&confirmed, "e", &cfg).expect_err("wrong status");
        assert!(
            err.message()
                .contains("status must be \"picked_and_packed\" (got \"confirmed\")"),
            "{err}"
        );
        let mut no_wh: Value = serde_json::from_str(&packed("o")).expect("JSON");
        no_wh.as_object_mut().expect("object").remove("warehouse");
        let err = handle(&no_wh.to_string(), "e", &cfg).expect_err("no warehouse");
        assert!(err.message().contains("missing field `warehouse`"), "{err}");
    }

    #[test]
    fn config_defaults_and_errors() {
        assert_eq!(parse_config("{}").expect("empty"), Config::default());
        assert_eq!(
            Config::default().carriers,
            carriers(&["UPS", "FedEx", "DHL"])
        );
        let err = parse_config(r#"{"carriers": []}"#).expect_err("empty list");
        assert_eq!(
            err.message(),
            "invalid stage config: carriers must not be empty"
        );
        let err = parse_config(r#"{"carriers": ["UPS", " "]}"#).expect_err("blank");
        assert_eq!(
            err.message(),
            "invalid stage config: carriers[1] must not be empty"
        );
        let err = parse_config(r#"{"carriers": ["UPS", 3]}"#).expect_err("number");
        assert!(
            err.message()
                .starts_with("invalid stage config: carriers[1]: "),
            "{err}"
        );
        let err = parse_config(r#"{"carriers": "UPS"}"#).expect_err("not a list");
        assert!(
            err.message()
                .starts_with("invalid stage config: carriers: "),
            "{err}"
        );
    }
}
