//! Stage `stock` (event type `InventoryCommand`, keyed by product id): the real stock of
//! each product, and what it answered to each order line.
//!
//! State, per product (`<p>` is the product id with `%` and `/` percent-encoded):
//!
//! | key                    | value                                                   |
//! |------------------------|---------------------------------------------------------|
//! | `stock/<product_id>`   | the stock, a decimal ASCII integer                      |
//! | `line/<p>/<order_id>`  | a [`LineRecord`]: the answer to the line's first reserve |
//! | `line-count/<p>`       | how many lines of the product were recorded (decimal)   |
//! | `line-slot/<p>/<n>`    | the order id of the line in ring slot `n`               |
//!
//! **Idempotent per order line.** The same order can flow twice (two host instances, a
//! replayed event) with other event ids, so the stage cannot tell repeats by event id. It
//! records each line's first answer: a repeated `reserve` gets the same `result` again and
//! touches no stock; a `release` puts back what the first reserve took, once. The stage never
//! learns that an order was confirmed, so records cannot be dropped then, and a released line
//! must stay recorded to refuse a second release. Instead the records of a product form a ring
//! of [`Config::remembered_lines`] slots: a new line takes the oldest line's slot and its
//! record is deleted. A line older than that is forgotten: a repeat of it is handled as new.

use serde::{Deserialize, Serialize};
use stage_events::{InventoryCommand, InventoryResult, LedgerEntry, LedgerReason, Reservation};
use stagehost_sdk::{StageFailure, StageInput, StageOutput, State};

use super::{Config, OUTPUT_LEDGER, OUTPUT_RESULT, positive_quantity};

/// The state key of a product's stock.
#[must_use]
pub fn stock_key(product_id: &str) -> String {
    format!("stock/{product_id}")
}

/// The product id as one key segment: `%` and `/` percent-encoded, so that
/// `line/<product>/<order>` is unambiguous whatever the ids hold.
fn segment(product_id: &str) -> String {
    product_id.replace('%', "%25").replace('/', "%2F")
}

/// The state key of an order line's [`LineRecord`].
#[must_use]
pub fn line_key(product_id: &str, order_id: &str) -> String {
    format!("line/{}/{order_id}", segment(product_id))
}

fn count_key(product_id: &str) -> String {
    format!("line-count/{}", segment(product_id))
}

fn slot_key(product_id: &str, slot: u64) -> String {
    format!("line-slot/{}/{slot}", segment(product_id))
}

/// What the stage answered to an order line's first `reserve`, and whether it was released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineRecord {
    /// The units the first reserve asked for.
    pub quantity: i64,
    /// Whether they were taken out of stock.
    pub reserved: bool,
    /// The `available` of the first answer.
    pub available: u64,
    /// Whether a `release` has put them back.
    #[serde(default)]
    pub released: bool,
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
    match read_u64(state, &key, "stock")? {
        None => Ok(config.catalog.get(product_id).copied().unwrap_or(0)),
        Some(stock) => Ok(stock),
    }
}

/// A decimal `u64` stored under `key`, or `None` if there is none.
fn read_u64(state: &dyn State, key: &str, what: &str) -> Result<Option<u64>, StageFailure> {
    let Some(bytes) = state.get(key) else {
        return Ok(None);
    };
    std::str::from_utf8(&bytes)
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| {
            StageFailure::Reject(format!(
                "state {key} is not a decimal {what} (got {:?})",
                String::from_utf8_lossy(&bytes)
            ))
        })
}

fn save_stock(state: &mut dyn State, product_id: &str, stock: u64) {
    state.set(&stock_key(product_id), stock.to_string().into_bytes());
}

/// The record of an order line, if the stage remembers it.
///
/// # Errors
/// [`StageFailure::Reject`] if the stored record is corrupt.
pub fn line_record(
    state: &dyn State,
    product_id: &str,
    order_id: &str,
) -> Result<Option<LineRecord>, StageFailure> {
    let key = line_key(product_id, order_id);
    state
        .get(&key)
        .map(|bytes| {
            serde_json::from_slice(&bytes).map_err(|e| {
                StageFailure::Reject(format!("state {key} is not an order line record: {e}"))
            })
        })
        .transpose()
}

fn save_line(
    state: &mut dyn State,
    product_id: &str,
    order_id: &str,
    record: &LineRecord,
) -> Result<(), StageFailure> {
    let bytes = serde_json::to_vec(record).map_err(|e| {
        StageFailure::Reject(format!("cannot serialize the order line record: {e}"))
    })?;
    state.set(&line_key(product_id, order_id), bytes);
    Ok(())
}

/// Records a new line in the product's ring, deleting the record of the line whose slot it
/// takes.
fn remember_line(
    state: &mut dyn State,
    config: &Config,
    product_id: &str,
    order_id: &str,
    record: &LineRecord,
) -> Result<(), StageFailure> {
    let window = config.remembered_lines;
    if window == 0 {
        return Ok(());
    }
    let counter = count_key(product_id);
    let count = read_u64(state, &counter, "line count")?.unwrap_or(0);
    let slot = slot_key(product_id, count % window);
    if let Some(oldest) = state.get(&slot) {
        let oldest = String::from_utf8_lossy(&oldest).into_owned();
        state.delete(&line_key(product_id, &oldest));
    }
    state.set(&slot, order_id.as_bytes().to_vec());
    state.set(&counter, count.wrapping_add(1).to_string().into_bytes());
    save_line(state, product_id, order_id, record)
}

fn reservation_result(
    order_id: &str,
    product_id: &str,
    record: &LineRecord,
) -> Result<StageOutput, StageFailure> {
    let result = InventoryResult::Reservation(Reservation {
        order_id: order_id.to_owned(),
        product_id: product_id.to_owned(),
        quantity: record.quantity,
        reserved: record.reserved,
        available: record.available,
    });
    StageOutput::json(OUTPUT_RESULT, order_id, &result)
}

/// Applies one command to the product's stock. The record key must be the product id.
///
/// - `reserve`: when the stock covers the quantity, takes it out, saves, and outputs
///   `result` (`reserved: true`, `available` = stock after; keyed by the order id) and
///   `ledger` (negative delta; keyed by the product id). Otherwise outputs only `result`
///   with `reserved: false` and the current stock, and saves no stock. Either way the answer
///   is recorded for the order line; a repeated reserve of a recorded line outputs the same
///   `result` again and nothing else, and changes nothing.
/// - `release`: adds the units the line's first reserve took (or, for a line the stage does
///   not remember, the command's quantity), saves, outputs `ledger` and records the line as
///   released. A release of a line that is released already, or whose reserve took nothing,
///   outputs nothing and changes nothing.
/// - `restock`: adds the quantity, saves, and outputs `ledger`.
///
/// # Errors
/// [`StageFailure::Reject`] if the payload is not an `InventoryCommand`, the quantity is not
/// positive, the key is not the product id, the stock would overflow, or the stored stock or
/// line record is corrupt. Nothing is saved then.
pub fn handle(
    event: &StageInput,
    config: &Config,
    state: &mut dyn State,
) -> Result<Vec<StageOutput>, StageFailure> {
    let command: InventoryCommand =
        stagehost_sdk::parse_payload(&event.payload, "InventoryCommand")?;
    let quantity = positive_quantity("InventoryCommand", "quantity", command.quantity())?;
    let product_id = command.product_id().to_owned();
    event.expect_key("product_id", &product_id)?;

    match command {
        InventoryCommand::Reserve(reserve) => {
            let order_id = reserve.order_id;
            if let Some(record) = line_record(state, &product_id, &order_id)? {
                return Ok(vec![reservation_result(&order_id, &product_id, &record)?]);
            }
            let stock = current_stock(state, config, &product_id)?;
            let reserved = stock >= quantity;
            let record = LineRecord {
                quantity: reserve.quantity,
                reserved,
                available: if reserved { stock - quantity } else { stock },
                released: false,
            };
            let mut outputs = vec![reservation_result(&order_id, &product_id, &record)?];
            if reserved {
                let entry = LedgerEntry {
                    product_id: product_id.clone(),
                    delta: -reserve.quantity,
                    stock: record.available,
                    reason: LedgerReason::Reserve,
                    order_id: Some(order_id.clone()),
                    restock_id: None,
                };
                outputs.push(StageOutput::json(OUTPUT_LEDGER, &product_id, &entry)?);
                save_stock(state, &product_id, record.available);
            }
            remember_line(state, config, &product_id, &order_id, &record)?;
            Ok(outputs)
        }
        InventoryCommand::Release(release) => {
            let order_id = release.order_id;
            let line = line_record(state, &product_id, &order_id)?;
            let (delta, units) = match &line {
                Some(record) if record.released || !record.reserved => return Ok(Vec::new()),
                Some(record) => {
                    let what = format!("state {}", line_key(&product_id, &order_id));
                    let units = positive_quantity(&what, "quantity", record.quantity)?;
                    (record.quantity, units)
                }
                None => (release.quantity, quantity),
            };
            let stock = current_stock(state, config, &product_id)?;
            let after = add(stock, units, &product_id)?;
            let entry = LedgerEntry {
                product_id: product_id.clone(),
                delta,
                stock: after,
                reason: LedgerReason::Release,
                order_id: Some(order_id.clone()),
                restock_id: None,
            };
            let outputs = vec![StageOutput::json(OUTPUT_LEDGER, &product_id, &entry)?];
            if let Some(record) = line {
                let released = LineRecord {
                    released: true,
                    ..record
                };
                save_line(state, &product_id, &order_id, &released)?;
            }
            save_stock(state, &product_id, after);
            Ok(outputs)
        }
        InventoryCommand::Restock(restock) => {
            let stock = current_stock(state, config, &product_id)?;
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
    use stagehost_sdk::MemoryState;

    fn config(stock: &[(&str, u64)]) -> Config {
        Config {
            catalog: stock.iter().map(|(p, n)| ((*p).to_owned(), *n)).collect(),
            ..Config::default()
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
        assert_eq!(stock_in(&state, "p"), None, "no stock saved: {state:?}");
        // Only the answer is remembered.
        assert_eq!(
            line_record(&state, "p", "o1").expect("readable"),
            Some(LineRecord {
                quantity: 11,
                reserved: false,
                available: 10,
                released: false
            })
        );
    }

    /// The same command as another event (another id), as a second host instance would
    /// send it.
    fn again(event: &StageInput) -> StageInput {
        StageInput {
            id: format!("{}-again", event.id),
            ..event.clone()
        }
    }

    #[test]
    fn a_repeated_reserve_gets_the_first_answer_and_reserves_nothing() {
        let cfg = config(&[("p", 10)]);
        let mut state = MemoryState::new();
        let first = run(&reserve("o1", "p", 3), &cfg, &mut state);
        assert_eq!(first.len(), 2, "result and ledger");
        let after_first = state.clone();

        let second = run(&again(&reserve("o1", "p", 3)), &cfg, &mut state);
        assert_eq!(second, first[..1], "the same result, no ledger");
        assert_eq!(state, after_first, "nothing changed");
        assert_eq!(stock_in(&state, "p"), Some("7"));

        // Even when the stock moved in between, or the repeat asks for another quantity.
        run(&reserve("o2", "p", 5), &cfg, &mut state);
        assert_eq!(stock_in(&state, "p"), Some("2"));
        let third = run(&reserve("o1", "p", 9), &cfg, &mut state);
        assert_eq!(third, first[..1]);
        assert_eq!(stock_in(&state, "p"), Some("2"));
    }

    #[test]
    fn a_repeated_refused_reserve_stays_refused() {
        let cfg = config(&[("p", 10)]);
        let mut state = MemoryState::new();
        let first = run(&reserve("o1", "p", 11), &cfg, &mut state);
        run(&restock("r", "p", 5), &cfg, &mut state);
        let second = run(&again(&reserve("o1", "p", 11)), &cfg, &mut state);
        assert_eq!(second, first);
        assert_eq!(second[0].2["reserved"], false);
        assert_eq!(stock_in(&state, "p"), Some("15"), "not taken by the repeat");
        // Its release (none is expected) puts nothing back.
        assert!(run(&release("o1", "p", 11), &cfg, &mut state).is_empty());
        assert_eq!(stock_in(&state, "p"), Some("15"));
    }

    #[test]
    fn a_release_puts_back_once() {
        let cfg = config(&[("p", 10)]);
        let mut state = MemoryState::new();
        let reserved = run(&reserve("o1", "p", 4), &cfg, &mut state);
        let outputs = run(&release("o1", "p", 4), &cfg, &mut state);
        assert_eq!(outputs.len(), 1);
        assert_eq!(outputs[0].2["delta"], 4);
        assert_eq!(stock_in(&state, "p"), Some("10"));
        let after_release = state.clone();

        assert!(run(&again(&release("o1", "p", 4)), &cfg, &mut state).is_empty());
        assert_eq!(state, after_release, "nothing changed");
        // A late repeat of the reserve gets its first answer and takes nothing either.
        let late = run(&again(&reserve("o1", "p", 4)), &cfg, &mut state);
        assert_eq!(late, reserved[..1]);
        assert_eq!(state, after_release);
        assert!(run(&release("o1", "p", 4), &cfg, &mut state).is_empty());
        assert_eq!(stock_in(&state, "p"), Some("10"));
    }

    #[test]
    fn a_release_puts_back_what_the_reserve_took() {
        let cfg = config(&[("p", 10)]);
        let mut state = MemoryState::new();
        run(&reserve("o1", "p", 4), &cfg, &mut state);
        let outputs = run(&release("o1", "p", 9), &cfg, &mut state);
        assert_eq!(outputs[0].2["delta"], 4);
        assert_eq!(stock_in(&state, "p"), Some("10"));
        // A line the stage does not remember (reserved before records were kept, or
        // forgotten) is released as the command says.
        let outputs = run(&release("old", "p", 3), &cfg, &mut state);
        assert_eq!(outputs[0].2["delta"], 3);
        assert_eq!(stock_in(&state, "p"), Some("13"));
    }

    #[test]
    fn line_records_are_bounded_per_product() {
        let cfg = Config {
            remembered_lines: 3,
            ..config(&[("p", 1000), ("q", 1000)])
        };
        let mut state = MemoryState::new();
        for i in 0..50 {
            run(&reserve(&format!("o{i}"), "p", 1), &cfg, &mut state);
        }
        run(&reserve("o0", "q", 1), &cfg, &mut state);
        let lines: Vec<&str> = state.keys().filter(|k| k.starts_with("line/")).collect();
        assert_eq!(
            lines,
            ["line/p/o47", "line/p/o48", "line/p/o49", "line/q/o0"]
        );
        // 3 records, 3 slots and a counter for p; 1 of each for q; and the two stocks.
        assert_eq!(
            state.len(),
            7 + 3 + 2,
            "{:?}",
            state.keys().collect::<Vec<_>>()
        );
        assert_eq!(state.get_str("line-count/p"), Some("50"));
        assert_eq!(stock_in(&state, "p"), Some("950"));

        // A forgotten line is handled as new; a remembered one is not.
        run(&reserve("o49", "p", 1), &cfg, &mut state);
        assert_eq!(stock_in(&state, "p"), Some("950"));
        run(&reserve("o0", "p", 1), &cfg, &mut state);
        assert_eq!(stock_in(&state, "p"), Some("949"));
        assert_eq!(
            state
                .keys()
                .filter(|k| k.starts_with("line/p/"))
                .collect::<Vec<_>>(),
            ["line/p/o0", "line/p/o48", "line/p/o49"]
        );
    }

    #[test]
    fn no_memory_means_no_records() {
        let cfg = Config {
            remembered_lines: 0,
            ..config(&[("p", 10)])
        };
        let mut state = MemoryState::new();
        run(&reserve("o1", "p", 1), &cfg, &mut state);
        run(&reserve("o1", "p", 1), &cfg, &mut state);
        assert_eq!(stock_in(&state, "p"), Some("8"));
        assert_eq!(state.keys().collect::<Vec<_>>(), ["stock/p"]);
    }

    #[test]
    fn line_keys_cannot_collide() {
        assert_eq!(line_key("a/b", "c"), "line/a%2Fb/c");
        assert_eq!(line_key("a", "b/c"), "line/a/b/c");
        assert_eq!(line_key("a%2Fb", "c"), "line/a%252Fb/c");
        let cfg = config(&[("a/b", 5), ("a", 5)]);
        let mut state = MemoryState::new();
        run(&reserve("c", "a/b", 1), &cfg, &mut state);
        let outputs = run(&reserve("b/c", "a", 2), &cfg, &mut state);
        assert_eq!(outputs[0].2["reserved"], true);
        assert_eq!(stock_in(&state, "a"), Some("3"));
        assert_eq!(stock_in(&state, "a/b"), Some("4"));
    }

    #[test]
    fn corrupt_line_records_are_rejected_without_saving() {
        let mut state = MemoryState::new();
        state.set(&line_key("p", "o"), b"{".to_vec());
        let before = state.clone();
        let err =
            handle(&reserve("o", "p", 1), &config(&[("p", 5)]), &mut state).expect_err("corrupt");
        assert!(
            err.message()
                .starts_with("state line/p/o is not an order line record: "),
            "{err}"
        );
        assert_eq!(state, before);
        state.set("line-count/p", b"x".to_vec());
        let err = handle(&reserve("o2", "p", 1), &config(&[("p", 5)]), &mut state)
            .expect_err("corrupt counter");
        assert_eq!(
            err.message(),
            "state line-count/p is not a decimal line count (got \"x\")"
        );
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
