//! Event types and helpers shared by the stagehost order-pipeline plugins.
//!
//! The pipeline is `Order (HTTP) -> Inventory -> Warehouse -> Shipper -> Notification`. Every
//! payload is one JSON object; the JSON Schemas in `schemas/` at the repository root describe
//! the same shapes as the types here, and the plugins' tests check that they agree.
//!
//! The crate is plain Rust (no WebAssembly bindings), so the stage logic that uses it can be
//! unit-tested natively.
#![forbid(unsafe_code)]

pub mod money;
pub mod notification;
pub mod order;
pub mod stage;

pub use money::{format_cents, to_cents};
pub use notification::{Notification, NotificationDelivered, NotificationKind};
pub use order::{Item, Order, OrderConfirmed, OrderPickedAndPacked, OrderReceived, OrderStatus};
pub use stage::{StageFailure, StageOutput, parse_config, parse_payload};
