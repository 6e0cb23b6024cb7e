//! Event types and helpers shared by the stagehost order-pipeline plugins.
//!
//! The pipeline is `Order (HTTP) -> Inventory -> Warehouse -> Shipper -> Notification`. Every
//! payload is one JSON object; the JSON Schemas in `schemas/` at the repository root describe
//! the same shapes as the types here, and the plugins' tests check that they agree.
//!
//! The crate is plain Rust data (no WebAssembly bindings and nothing of the plugin SDK): the
//! SDK (`stagehost-sdk`, in `plugins/sdk`) holds the glue macro and the input, output, failure
//! and state types, and any pipeline's plugins can use it without these order types.
#![forbid(unsafe_code)]

pub mod inventory;
pub mod money;
pub mod notification;
pub mod order;
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
pub use status::{OrderStatusDoc, TimelineEntry, TimelineEvent, TrackedStatus};
