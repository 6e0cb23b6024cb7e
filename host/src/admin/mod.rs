//! The admin API, on a listener of its own: which plugin versions run, hot swaps and
//! rollbacks. `stagehost plugin …` is its client ([`client`]).
//!
//! - `GET /plugins`: every stage's live version, swap counts, longest swap stall, history.
//! - `GET /plugins/{stage}`: the same for one stage.
//! - `PUT /plugins/{stage}`: body = the new component's bytes (header `x-plugin-path` names
//!   its file for the history). `200` with the outcome, `422` naming why it was refused.
//! - `POST /plugins/{stage}/rollback`: back to the version live before the current one.
//! - `GET /stuck`: records held because they cannot be dead-lettered (see
//!   [`crate::stage::StuckBook`]).
//! - `POST /stuck/{stage}/{topic}/{partition}/skip` or `…/retry`: the operator's decision on
//!   the record held there; `404` naming what is held when nothing is.
//! - `GET /metrics`: every metric in the Prometheus text format (when `telemetry.metrics`).
//!
//! Every call needs a token (`Authorization: Bearer …`; [`token`]): the admin token, or the
//! read-only one for `GET`s; and every request a `Host` the listener serves and no foreign
//! browser `Origin` ([`guard`]). Only the console's static page shell is served without a token.

pub mod client;
pub mod guard;
mod metrics;
mod server;
pub mod token;

pub use guard::AdminGuard;
pub use metrics::MetricsEndpoint;
pub use server::{PATH_HEADER, Slots, router};
pub use token::{AdminTokens, Token};
