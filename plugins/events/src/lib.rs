//! Event types and helpers shared by the stagehost order-pipeline plugins.
//!
//! The pipeline is `Order (HTTP) -> Inventory -> Warehouse -> Shipper -> Notification`. Every
//! payload is one JSON object; the JSON Schemas in `schemas/` at the repository root describe
//! the same shapes as the types here, and the plugins' tests check that they agree.
//!
//! The crate is plain Rust (no WebAssembly bindings), so the stage logic that uses it can be
//! unit-tested natively. Its one macro, [`stage_component!`], writes a plugin's bindings glue
//! (it expands `wit_bindgen::generate!` in the plugin crate, which depends on `wit-bindgen`).
#![forbid(unsafe_code)]

mod component;
pub mod inventory;
pub mod money;
pub mod notification;
pub mod order;
pub mod stage;
pub mod state;
pub mod status;

pub use inventory::{
    InventoryCommand, InventoryResult, LedgerEntry, LedgerReason, OrderPending, OrderRefused,
    ReleaseCommand, Reservation, ReserveCommand, RestockCommand,
};
pub use money::{AmountError, MAX_CENTS, cents_of, cents_to_f64, format_cents, parse_cents};
pub use notification::{Notification, NotificationDelivered, NotificationKind};
pub use order::{
    Item, MAX_QUANTITY, Order, OrderConfirmed, OrderPickedAndPacked, OrderReceived, OrderStatus,
    QuantityError, QuantityProblem,
};
pub use stage::{StageFailure, StageInput, StageOutput, parse_config, parse_payload};
pub use state::{MemoryState, State};
pub use status::{OrderStatusDoc, TimelineEntry, TimelineEvent, TrackedStatus};
