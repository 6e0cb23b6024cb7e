//! The inventory saga's pure logic. One component serves three stages and dispatches on the
//! input's event type (the `event_type` of its input topic):
//!
//! | event type         | stage         | state                              | module          |
//! |--------------------|---------------|------------------------------------|-----------------|
//! | `OrderReceived`    | `inventory`   | none                               | [`split`]       |
//! | `InventoryCommand` | `stock`       | `stock/<product_id>`, order lines  | [`stock`]       |
//! | `InventoryResult`  | `reservation` | `order/<order_id>`                 | [`reservation`] |
//! | `RestockRequest`   | `restock`     | none (HTTP route)                  | [`http`]        |
//! | `StockQuery`       | `stock`       | none (HTTP read model)             | [`http`]        |
//!
//! The inventory stage splits an order into one `order_pending` result and one `reserve`
//! command per product (or, when its quantities cannot be processed, one `order_refused`
//! result, so that the order is still rejected with a notification rather than
//! dead-lettered). The stock stage, fed by product-keyed commands so that every product
//! lives on one partition, holds the real stock and never lets it go negative; it answers a
//! repeated reserve or release of an order line without touching the stock again. The
//! reservation stage joins the results of an order and confirms it, or releases what was
//! reserved and rejects it. The host's exactly-once processing (state, outputs and offset
//! commit together) makes each step atomic.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use serde::Deserialize;
use stagehost_sdk::{StageFailure, StageInput, StageOutput, State};

pub mod http;
pub mod reservation;
pub mod split;
pub mod stock;

/// Event type handled by [`split`].
pub const EVENT_ORDER_RECEIVED: &str = "OrderReceived";
/// Event type handled by [`stock`].
pub const EVENT_INVENTORY_COMMAND: &str = "InventoryCommand";
/// Event type handled by [`reservation`].
pub const EVENT_INVENTORY_RESULT: &str = "InventoryResult";

/// Output of the `order_pending` result (inventory stage; topic `InventoryResults`).
pub const OUTPUT_PENDING: &str = "pending";
/// Output of a `reserve` command (inventory stage; topic `InventoryCommands`).
pub const OUTPUT_RESERVE: &str = "reserve";
/// Output of a `reservation` result (stock stage; topic `InventoryResults`).
pub const OUTPUT_RESULT: &str = "result";
/// Output of a stock change (stock stage; topic `InventoryLedger`).
pub const OUTPUT_LEDGER: &str = "ledger";
/// Output of a confirmed order (reservation stage; topic `OrderConfirmed`).
pub const OUTPUT_CONFIRMED: &str = "confirmed";
/// Output of the customer notification (reservation stage; topic `Notification`).
pub const OUTPUT_NOTIFY: &str = "notify";
/// Output of a `release` command (reservation stage; topic `InventoryCommands`).
pub const OUTPUT_RELEASE: &str = "release";

/// The default of [`Config::remembered_lines`].
pub const DEFAULT_REMEMBERED_LINES: u64 = 100_000;

/// The `config` table, the same for the three stages.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Initial stock per product id, used by the stock stage while a product has no stock in
    /// state yet. A product that is not listed starts at 0.
    #[serde(default)]
    pub catalog: BTreeMap<String, u64>,
    /// How many order lines the stock stage remembers per product (its most recent reserve
    /// commands), so that a repeated `reserve` of one of them gets the first answer again and
    /// a repeated `release` changes nothing (see [`stock`]). Each costs about 150 bytes of
    /// state; 0 remembers none. Default [`DEFAULT_REMEMBERED_LINES`].
    #[serde(default = "default_remembered_lines")]
    pub remembered_lines: u64,
}

fn default_remembered_lines() -> u64 {
    DEFAULT_REMEMBERED_LINES
}

impl Default for Config {
    fn default() -> Self {
        Self {
            catalog: BTreeMap::new(),
            remembered_lines: DEFAULT_REMEMBERED_LINES,
        }
    }
}

/// Parses the `config` table (the JSON object from `config::get-all`).
///
/// # Errors
/// [`StageFailure::Reject`] naming the offending key, e.g. a negative stock under
/// `catalog.<product>`.
pub fn parse_config(json: &str) -> Result<Config, StageFailure> {
    stagehost_sdk::parse_config(json)
}

/// Handles one event of any of the inventory stages (and their HTTP handlers), chosen by
/// `event.event_type`.
///
/// # Errors
/// [`StageFailure::Reject`] for an unknown event type, and see [`split::handle`],
/// [`stock::handle`] and [`reservation::handle`].
pub fn handle(
    event: &StageInput,
    config: &Config,
    state: &mut dyn State,
) -> Result<Vec<StageOutput>, StageFailure> {
    match event.event_type.as_str() {
        EVENT_ORDER_RECEIVED => split::handle(&event.payload),
        EVENT_INVENTORY_COMMAND => stock::handle(event, config, state),
        EVENT_INVENTORY_RESULT => reservation::handle(event, state),
        http::EVENT_RESTOCK_REQUEST => http::restock(event),
        http::EVENT_STOCK_QUERY => http::stock_answer(event, config),
        other => Err(StageFailure::Reject(format!(
            "unsupported event type \"{other}\": the inventory component handles \
             {EVENT_ORDER_RECEIVED}, {EVENT_INVENTORY_COMMAND}, {EVENT_INVENTORY_RESULT}, \
             {} and {}",
            http::EVENT_RESTOCK_REQUEST,
            http::EVENT_STOCK_QUERY
        ))),
    }
}

/// Checks that a quantity of a payload is at least 1.
fn positive_quantity(what: &str, field: &str, quantity: i64) -> Result<u64, StageFailure> {
    u64::try_from(quantity)
        .ok()
        .filter(|q| *q > 0)
        .ok_or_else(|| {
            StageFailure::Reject(format!(
                "invalid {what} payload: {field} must be greater than 0 (got {quantity})"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use stagehost_sdk::MemoryState;

    #[test]
    fn unknown_event_types_are_rejected() {
        let event = StageInput::new("e", "OrderConfirmed", Some("o"), "{}");
        let err = handle(&event, &Config::default(), &mut MemoryState::new())
            .expect_err("not an inventory event");
        assert!(matches!(err, StageFailure::Reject(_)));
        assert!(
            err.message()
                .starts_with("unsupported event type \"OrderConfirmed\""),
            "{err}"
        );
    }

    #[test]
    fn config_is_parsed_with_defaults_and_named_errors() {
        assert_eq!(parse_config("{}").expect("empty"), Config::default());
        let config = parse_config(r#"{"catalog": {"prod-789": 1000000}}"#).expect("catalog");
        assert_eq!(config.catalog.get("prod-789"), Some(&1_000_000));
        assert_eq!(config.remembered_lines, DEFAULT_REMEMBERED_LINES);
        let config = parse_config(r#"{"remembered_lines": 0}"#).expect("no memory");
        assert_eq!(config.remembered_lines, 0);
        let err = parse_config(r#"{"remembered_lines": -1}"#).expect_err("negative");
        assert!(
            err.message()
                .starts_with("invalid stage config: remembered_lines: "),
            "{err}"
        );
        let err = parse_config(r#"{"catalog": {"prod-789": -1}}"#).expect_err("negative");
        assert!(
            err.message()
                .starts_with("invalid stage config: catalog.prod-789: "),
            "{err}"
        );
        let err = parse_config(r#"{"catalog": {"prod-789": "many"}}"#).expect_err("string");
        assert!(err.message().contains("catalog.prod-789"), "{err}");
        let err = parse_config(r#"{"catalogue": {}}"#).expect_err("typo");
        assert!(err.message().contains("unknown field `catalogue`"), "{err}");
    }

    #[test]
    fn quantities_must_be_positive() {
        assert_eq!(positive_quantity("X", "quantity", 3), Ok(3));
        for bad in [0, -1, i64::MIN] {
            assert_eq!(
                positive_quantity("X", "quantity", bad),
                Err(StageFailure::Reject(format!(
                    "invalid X payload: quantity must be greater than 0 (got {bad})"
                )))
            );
        }
    }
}
