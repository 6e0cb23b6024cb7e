//! The inventory's two HTTP-facing handlers, so that the host knows nothing of stock:
//!
//! - [`restock`] (stage `restock`, route `POST /inventory/{product_id}/restock`, event type
//!   [`EVENT_RESTOCK_REQUEST`]): turns the request body `{"quantity": n, "restock_id": "…"}`
//!   and the path's product id (input header `stagehost-path-product_id`) into a `restock`
//!   command for the stock stage, keyed by the product.
//! - [`stock_answer`] (the read model `GET /inventory/{product_id}`, shaped by the stock
//!   stage's plugin, event type [`EVENT_STOCK_QUERY`]): answers from the product's latest
//!   ledger entry (the payload), or from `config.catalog` before its first change.

use serde::Deserialize;
use serde_json::json;
use stage_events::{InventoryCommand, LedgerEntry, RestockCommand};
use stagehost_sdk::{StageFailure, StageInput, StageOutput, parse_payload};

use super::Config;

/// Event type of a restock request from the HTTP route.
pub const EVENT_RESTOCK_REQUEST: &str = "RestockRequest";
/// Event type of a stock query from the read model.
pub const EVENT_STOCK_QUERY: &str = "StockQuery";
/// Output of a restock command (restock stage; topic `InventoryCommands`).
pub const OUTPUT_COMMAND: &str = "command";
/// Output of a read-model answer (never published: the host answers with it).
pub const OUTPUT_ANSWER: &str = "answer";
/// Input header that carries the route's `{product_id}` path parameter.
pub const PRODUCT_HEADER: &str = "stagehost-path-product_id";

/// The body of `POST /inventory/{product_id}/restock`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestockRequest {
    quantity: i64,
    restock_id: String,
}

/// A restock request → one `restock` command (output [`OUTPUT_COMMAND`], keyed by product).
///
/// # Errors
/// [`StageFailure::Reject`] (the host answers `400`) for a body that is not
/// `{"quantity": <integer ≥ 1>, "restock_id": <non-empty string>}`, or a missing product id.
pub fn restock(event: &StageInput) -> Result<Vec<StageOutput>, StageFailure> {
    let request: RestockRequest = parse_payload(&event.payload, "restock request")?;
    let product_id = event
        .header(PRODUCT_HEADER)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            StageFailure::Reject(format!(
                "the product id is missing (header {PRODUCT_HEADER}, from the route's path)"
            ))
        })?;
    if request.quantity < 1 {
        return Err(StageFailure::Reject(format!(
            "quantity must be at least 1 (got {})",
            request.quantity
        )));
    }
    if request.restock_id.is_empty() {
        return Err(StageFailure::Reject("restock_id must not be empty".into()));
    }
    let command = InventoryCommand::Restock(RestockCommand {
        restock_id: request.restock_id,
        product_id: product_id.to_owned(),
        quantity: request.quantity,
    });
    Ok(vec![StageOutput::json(
        OUTPUT_COMMAND,
        product_id,
        &command,
    )?])
}

/// The answer of `GET /inventory/{product_id}`: `{"product_id", "stock", "source": "ledger",
/// "last_change": <entry>}` from the latest ledger entry (the payload), or `{"product_id",
/// "stock", "source": "catalog"}` for a product without one.
///
/// # Errors
/// [`StageFailure::Reject`] (the host answers `404`) for a product with neither.
pub fn stock_answer(event: &StageInput, config: &Config) -> Result<Vec<StageOutput>, StageFailure> {
    let product_id = event.key.clone().unwrap_or_default();
    let latest: Option<LedgerEntry> = parse_payload(&event.payload, "stock query")?;
    let answer = match (latest, config.catalog.get(&product_id)) {
        (Some(entry), _) => json!({
            "product_id": product_id,
            "stock": entry.stock,
            "source": "ledger",
            "last_change": entry,
        }),
        (None, Some(stock)) => {
            json!({"product_id": product_id, "stock": stock, "source": "catalog"})
        }
        (None, None) => {
            return Err(StageFailure::Reject(format!(
                "product {product_id} has no stock record and is not in the catalog"
            )));
        }
    };
    Ok(vec![StageOutput::json(
        OUTPUT_ANSWER,
        &product_id,
        &answer,
    )?])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn request(body: &str) -> StageInput {
        StageInput::new("e", EVENT_RESTOCK_REQUEST, Some("r-1"), body)
            .with_header(PRODUCT_HEADER, "p-1")
    }

    #[test]
    fn a_restock_request_becomes_a_command_keyed_by_product() {
        let outputs = restock(&request(r#"{"quantity": 5, "restock_id": "r-1"}"#)).unwrap();
        assert_eq!(outputs.len(), 1);
        assert_eq!(outputs[0].output, OUTPUT_COMMAND);
        assert_eq!(outputs[0].key.as_deref(), Some("p-1"));
        let command: serde_json::Value = serde_json::from_str(&outputs[0].payload).unwrap();
        assert_eq!(
            command,
            json!({"command": "restock", "restock_id": "r-1", "product_id": "p-1", "quantity": 5})
        );
        schema_check::assert_valid("inventory-command.schema.json", &command);
    }

    #[test]
    fn bad_restock_requests_are_rejected() {
        for body in [
            r#"{"quantity": 0, "restock_id": "r-1"}"#,
            r#"{"quantity": 1, "restock_id": ""}"#,
            r#"{"quantity": 1}"#,
            r#"{"quantity": 1, "restock_id": "r", "extra": 1}"#,
        ] {
            let failure = restock(&request(body)).expect_err(body);
            assert!(matches!(failure, StageFailure::Reject(_)), "{body}");
        }
        let no_product = StageInput::new(
            "e",
            EVENT_RESTOCK_REQUEST,
            None,
            r#"{"quantity": 1, "restock_id": "r"}"#,
        );
        assert!(
            restock(&no_product)
                .unwrap_err()
                .message()
                .contains(PRODUCT_HEADER)
        );
    }

    #[test]
    fn stock_answers_come_from_the_ledger_then_the_catalog() {
        let config = Config {
            catalog: BTreeMap::from([("p-1".to_owned(), 3)]),
            ..Config::default()
        };
        let query =
            |key: &str, payload: &str| StageInput::new("q", EVENT_STOCK_QUERY, Some(key), payload);
        let answer = |event| -> serde_json::Value {
            serde_json::from_str(&stock_answer(&event, &config).unwrap()[0].payload).unwrap()
        };
        assert_eq!(
            answer(query("p-1", "null")),
            json!({"product_id": "p-1", "stock": 3, "source": "catalog"})
        );
        let entry = json!({"product_id": "p-1", "delta": 5, "stock": 8, "reason": "restock", "restock_id": "r"});
        assert_eq!(
            answer(query("p-1", &entry.to_string())),
            json!({"product_id": "p-1", "stock": 8, "source": "ledger", "last_change": entry})
        );
        let unknown = stock_answer(&query("nope", "null"), &config).unwrap_err();
        assert!(
            unknown.message().contains("not in the catalog"),
            "{unknown}"
        );
    }
}
