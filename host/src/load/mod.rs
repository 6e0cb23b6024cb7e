//! `stagehost load`: a load generator for any pipeline behind an HTTP ingress.
//!
//! Each request gets a unique id (`<prefix>-<n>`), put in place of `{id}` in the URL and the
//! body template. A request is done when the done topic has held the expected number of
//! records naming it (by record key, or by a field of the JSON payload): e.g. for a pipeline
//! whose last stage writes `TicketClosed` keyed by the ticket id,
//! `--body '{"ticket_id": "{id}"}' --done-topic TicketClosed`.
//!
//! Two modes: open loop at `--rate` (each request due at a fixed time whatever the answers'
//! speed, latency counted from that due time: no coordinated omission) and closed loop with
//! `--clients N` (each client sends its next request when the previous one is answered).
//! Latencies go into HDR histograms; the report includes the generator's own CPU time, so a
//! reader can tell how much of the machine it took from what it measured.
//!
//! - [`request`]: the URL and body templates, and how a done record names its request.
//! - [`done`]: the done topic's reader and the requests in flight.
//! - [`drive`]: open and closed loop sending.
//! - [`cpu`]: CPU time of a process.
//! - `options`, `report`, `run`: the flags of a run, its outcome, and the run itself.

pub mod cpu;
pub mod done;
mod drive;
mod options;
mod report;
pub mod request;
mod run;

pub use options::LoadOptions;
pub use report::LoadReport;
pub use run::run;
