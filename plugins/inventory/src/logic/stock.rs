//! Stage `stock` (event type `InventoryCommand`, keyed by product id): the real stock of
//! each product, in state under `stock/<product_id>` as a decimal ASCII integer.

use stage_events::{
    InventoryCommand, InventoryResult, LedgerEntry, LedgerReason, Reservation, StageFailure,
    StageInput, StageOutput, State,
};

use super::{Config, OUTPUT_LEDGER, OUTPUT_RESULT, positive_quantity};

/// The state key of a product's stock.
#[must_use]
pub fn stock_key(product_id: &str) -> String {
    format!("stock/{product_id}")
}

/// The stock of `product_id`: the value in state, or else `config.catalog[product_id]`, or
/// else 0.
///
/// # Errors
/// [`StageFailure::Reject`] if the stored value is not a decimal integer.
pub fn current_stock(
    state: &dyn State,
    config: &Config,
    product_id: &str,
) -> Result<u64, StageFailure> {
    let key = stock_key(product_id);
    match state.get(&key) {
        None => Ok(config.catalog.get(product_id).copied().unwrap_or(0)),
        Some(bytes) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|text| text.parse::<u64>().ok())
            .ok_or_else(|| {
                StageFailure::Reject(format!(
                    "state {key} is not a decimal stock (got {:?})",
                    String::from_utf8_lossy(&bytes)
                ))
            }),
    }
}

fn save_stock(state: &mut dyn State, product_id: &str, stock: u64) {
    state.set(&stock_key(product_id), stock.to_string().into_bytes());
}

/// Applies one command to the product's stock. The record key must be the product id.
///
/// - `reserve`: when the stock covers the quantity, takes it out, saves, and outputs
///   `result` (`reserved: true`, `available` = stock after; keyed by the order id) and
///   `ledger` (negative delta; keyed by the product id). Otherwise outputs only `result`
///   with `reserved: false` and the current stock; nothing is saved.
/// - `release` / `restock`: adds the quantity, saves, and outputs `ledger`.
///
/// # Errors
/// [`StageFailure::Reject`] if the payload is not an `InventoryCommand`, the quantity is not
/// positive, the key is not the product id, the stock would overflow, or the stored stock is
/// corrupt. Nothing is saved then.
pub fn handle(
    event: &StageInput,
    config: &Config,
    state: &mut dyn State,
) -> Result<Vec<StageOutput>, StageFailure> {
    let command: InventoryCommand =
        stage_events::parse_payload(&event.payload, "InventoryCommand")?;
    let quantity = positive_quantity("InventoryCommand", "quantity", command.quantity())?;
    let product_id = command.product_id().to_owned();
    event.expect_key("product_id", &product_id)?;
    let stock = current_stock(state, config, &product_id)?;

    match command {
        InventoryCommand::Reserve(reserve) => {
            let reserved = stock >= quantity;
            let available = if reserved { stock - quantity } else { stock };
            let result = InventoryResult::Reservation(Reservation {
                order_id: reserve.order_id.clone(),
                product_id: product_id.clone(),
                quantity: reserve.quantity,
                reserved,
                available,
            });
            let mut outputs = vec![StageOutput::json(
                OUTPUT_RESULT,
                &reserve.order_id,
                &result,
            )?];
            if reserved {
                let entry = LedgerEntry {
                    product_id: product_id.clone(),
                    delta: -reserve.quantity,
                    stock: available,
                    reason: LedgerReason::Reserve,
                    order_id: Some(reserve.order_id),
                    restock_id: None,
                };
                outputs.push(StageOutput::json(OUTPUT_LEDGER, &product_id, &entry)?);
                save_stock(state, &product_id, available);
            }
            Ok(outputs)
        }
        InventoryCommand::Release(release) => {
            let after = add(stock, quantity, &product_id)?;
            let entry = LedgerEntry {
                product_id: product_id.clone(),
                delta: release.quantity,
                stock: after,
                reason: LedgerReason::Release,
                order_id: Some(release.order_id),
                restock_id: None,
            };
            let outputs = vec![StageOutput::json(OUTPUT_LEDGER, &product_id, &entry)?];
            save_stock(state, &product_id, after);
            Ok(outputs)
        }
        InventoryCommand::Restock(restock) => {
            let after = add(stock, quantity, &product_id)?;
            let entry = LedgerEntry {
                product_id: product_id.clone(),
                delta: restock.quantity,
                stock: after,
                reason: LedgerReason::Restock,
                order_id: None,
                restock_id: Some(restock.restock_id),
            };
            let outputs = vec![StageOutput::json(OUTPUT_LEDGER, &product_id, &entry)?];
            save_stock(state, &product_id, after);
            Ok(outputs)
        }
    }
}

fn add(stock: u64, quantity: u64, product_id: &str) -> Result<u64, StageFailure> {
    stock.checked_add(quantity).ok_or_else(|| {
        StageFailure::Reject(format!(
            "invalid InventoryCommand payload: quantity: the stock of {product_id} would overflow \
             ({stock} + {quantity})"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use stage_events::MemoryState;

    fn config(stock: &[(&str, u64)]) -> Config {
        Config {
            catalog: stock.iter().map(|(p, n)| ((*p).to_owned(), *n)).collect(),
        }
    }

    fn command(payload: &Value) -> StageInput {
        let key = payload["product_id"].as_str().expect("product_id");
        StageInput::new("evt-1", "InventoryCommand", Some(key), payload.to_string())
    }

    fn reserve(order_id: &str, product_id: &str, quantity: i64) -> StageInput {
        command(
            &json!({"command": "reserve", "order_id": order_id, "customer_id": "c",
                        "product_id": product_id, "quantity": quantity}),
        )
    }

    fn release(order_id: &str, product_id: &str, quantity: i64) -> StageInput {
        command(&json!({"command": "release", "order_id": order_id,
                        "product_id": product_id, "quantity": quantity}))
    }

    fn restock(restock_id: &str, product_id: &str, quantity: i64) -> StageInput {
        command(&json!({"command": "restock", "restock_id": restock_id,
                        "product_id": product_id, "quantity": quantity}))
    }

    fn run(
        event: &StageInput,
        config: &Config,
        state: &mut MemoryState,
    ) -> Vec<(String, Option<String>, Value)> {
        handle(event, config, state)
            .expect("handled")
            .into_iter()
            .map(|o| {
                let v = serde_json::from_str(&o.payload).expect("JSON");
                (o.output, o.key, v)
            })
            .collect()
    }

    fn stock_in<'a>(state: &'a MemoryState, product: &str) -> Option<&'a str> {
        state.get_str(&stock_key(product))
    }

    #[test]
    fn reserve_takes_stock_and_writes_the_ledger() {
        let mut state = MemoryState::new();
        let outputs = run(&reserve("o1", "p", 3), &config(&[("p", 10)]), &mut state);
        assert_eq!(
            outputs,
            [
                (
                    "result".to_owned(),
                    Some("o1".to_owned()),
                    json!({"kind": "reservation", "order_id": "o1", "product_id": "p",
                           "quantity": 3, "reserved": true, "available": 7})
                ),
                (
                    "ledger".to_owned(),
                    Some("p".to_owned()),
                    json!({"product_id": "p", "delta": -3, "stock": 7, "reason": "reserve",
                           "order_id": "o1"})
                ),
            ]
        );
        assert_eq!(stock_in(&state, "p"), Some("7"));

        // The stored stock wins over the catalog from now on.
        let outputs = run(&reserve("o2", "p", 7), &config(&[("p", 10)]), &mut state);
        assert_eq!(outputs[0].2["available"], 0);
        assert_eq!(outputs[1].2["stock"], 0);
        assert_eq!(stock_in(&state, "p"), Some("0"));
    }

    #[test]
    fn reserve_beyond_stock_fails_without_saving() {
        let mut state = MemoryState::new();
        let outputs = run(&reserve("o1", "p", 11), &config(&[("p", 10)]), &mut state);
        assert_eq!(
            outputs,
            [(
                "result".to_owned(),
                Some("o1".to_owned()),
                json!({"kind": "reservation", "order_id": "o1", "product_id": "p",
                       "quantity": 11, "reserved": false, "available": 10})
            )]
        );
        assert!(state.is_empty(), "nothing saved: {state:?}");
    }

    #[test]
    fn stock_never_goes_negative() {
        let cfg = config(&[("p", 5)]);
        let mut state = MemoryState::new();
        let mut reserved = 0;
        // Concurrent orders all land on the product's partition, one after the other.
        for (i, quantity) in [2, 2, 2, 1, 1, 3].into_iter().enumerate() {
            let outputs = run(&reserve(&format!("o{i}"), "p", quantity), &cfg, &mut state);
            if outputs[0].2["reserved"] == true {
                reserved += quantity;
            }
            let available = outputs[0].2["available"].as_u64().expect("available");
            assert!(available <= 5);
        }
        assert_eq!(reserved, 5, "exactly the stock was sold");
        assert_eq!(stock_in(&state, "p"), Some("0"));
        let outputs = run(&reserve("last", "p", 1), &cfg, &mut state);
        assert_eq!(outputs[0].2["reserved"], false);
        assert_eq!(outputs[0].2["available"], 0);
    }

    #[test]
    fn catalog_default_and_unknown_products() {
        let cfg = config(&[("p", 4)]);
        let mut state = MemoryState::new();
        assert_eq!(current_stock(&state, &cfg, "p"), Ok(4));
        assert_eq!(current_stock(&state, &cfg, "unknown"), Ok(0));
        let outputs = run(&reserve("o", "unknown", 1), &cfg, &mut state);
        assert_eq!(outputs[0].2["reserved"], false);
        assert_eq!(outputs[0].2["available"], 0);
        // With no catalog at all every product starts empty.
        let outputs = run(&reserve("o", "p", 1), &Config::default(), &mut state);
        assert_eq!(outputs[0].2["reserved"], false);
        state.set(&stock_key("p"), b"2".to_vec());
        assert_eq!(current_stock(&state, &cfg, "p"), Ok(2));
    }

    #[test]
    fn release_puts_stock_back() {
        let cfg = config(&[("p", 10)]);
        let mut state = MemoryState::new();
        run(&reserve("o1", "p", 4), &cfg, &mut state);
        let outputs = run(&release("o1", "p", 4), &cfg, &mut state);
        assert_eq!(
            outputs,
            [(
                "ledger".to_owned(),
                Some("p".to_owned()),
                json!({"product_id": "p", "delta": 4, "stock": 10, "reason": "release",
                       "order_id": "o1"})
            )]
        );
        assert_eq!(stock_in(&state, "p"), Some("10"));
    }

    #[test]
    fn restock_adds_stock_even_to_unknown_products() {
        let mut state = MemoryState::new();
        let outputs = run(&restock("r-1", "new", 6), &Config::default(), &mut state);
        assert_eq!(
            outputs,
            [(
                "ledger".to_owned(),
                Some("new".to_owned()),
                json!({"product_id": "new", "delta": 6, "stock": 6, "reason": "restock",
                       "restock_id": "r-1"})
            )]
        );
        let outputs = run(&restock("r-2", "new", 1), &Config::default(), &mut state);
        assert_eq!(outputs[0].2["stock"], 7);
        assert_eq!(stock_in(&state, "new"), Some("7"));
        // Restocking a catalog product starts from the catalog.
        let outputs = run(&restock("r-3", "p", 1), &config(&[("p", 10)]), &mut state);
        assert_eq!(outputs[0].2["stock"], 11);
    }

    #[test]
    fn quantity_must_be_at_least_one() {
        for event in [
            reserve("o", "p", 0),
            release("o", "p", -1),
            restock("r", "p", 0),
        ] {
            let mut state = MemoryState::new();
            let err = handle(&event, &config(&[("p", 10)]), &mut state).expect_err("bad qty");
            assert!(matches!(err, StageFailure::Reject(_)));
            assert!(
                err.message().starts_with(
                    "invalid InventoryCommand payload: quantity must be greater than 0"
                ),
                "{err}"
            );
            assert!(state.is_empty());
        }
    }

    #[test]
    fn overflow_and_corrupt_state_are_rejected_without_saving() {
        let mut state = MemoryState::new();
        state.set(&stock_key("p"), u64::MAX.to_string().into_bytes());
        let err =
            handle(&restock("r", "p", 1), &Config::default(), &mut state).expect_err("overflow");
        assert!(err.message().contains("would overflow"), "{err}");
        assert_eq!(stock_in(&state, "p"), Some(u64::MAX.to_string().as_str()));

        state.set(&stock_key("q"), b"-3".to_vec());
        let err =
            handle(&reserve("o", "q", 1), &Config::default(), &mut state).expect_err("corrupt");
        assert_eq!(
            err.message(),
            "state stock/q is not a decimal stock (got \"-3\")"
        );
    }

    #[test]
    fn commands_must_be_keyed_by_product() {
        let mut event = reserve("o", "p", 1);
        event.key = Some("o".into());
        let mut state = MemoryState::new();
        let err = handle(&event, &config(&[("p", 1)]), &mut state).expect_err("wrong key");
        assert_eq!(
            err.message(),
            "the record key must be the product_id \"p\" (got \"o\")"
        );
        event.key = None;
        assert!(handle(&event, &config(&[("p", 1)]), &mut state).is_err());
        assert!(state.is_empty());
    }

    #[test]
    fn malformed_commands_are_rejected() {
        let mut state = MemoryState::new();
        let event = StageInput::new(
            "e",
            "InventoryCommand",
            Some("p"),
            r#"{"command":"steal","product_id":"p","quantity":1}"#,
        );
        let err = handle(&event, &Config::default(), &mut state).expect_err("unknown command");
        assert!(
            err.message()
                .starts_with("invalid InventoryCommand payload: "),
            "{err}"
        );
        assert!(err.message().contains("steal"), "{err}");
    }
}
