//! `GET /metrics`: every metric in the Prometheus text format. Most are counted as events
//! happen; a scrape also reads what is a state rather than an event: each part's readiness and
//! each stage's live plugin (version, swap-in time, swap counts).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::Slots;
use crate::health::Health;
use crate::observe::{Exporter, catalogue};

/// The content type of the Prometheus text format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a scrape renders.
pub struct MetricsEndpoint {
    exporter: &'static Exporter,
    health: Health,
    slots: Slots,
    /// The version each stage's `plugin_info` shows as live.
    shown: Mutex<BTreeMap<String, String>>,
}

impl MetricsEndpoint {
    /// Renders `exporter`'s metrics with the readiness of `health`'s parts and `slots`' plugins.
    pub fn new(exporter: &'static Exporter, health: Health, slots: Slots) -> Self {
        Self {
            exporter,
            health,
            slots,
            shown: Mutex::default(),
        }
    }

    /// The router serving `GET /metrics`.
    pub fn router(self) -> Router {
        Router::new()
            .route("/metrics", get(scrape))
            .with_state(Arc::new(self))
    }

    fn read_states(&self) {
        for (part, ready) in self.health.parts() {
            metrics::gauge!(catalogue::PART_READY, "part" => part).set(f64::from(u8::from(ready)));
        }
        let mut shown = self.shown.lock().unwrap_or_else(|p| p.into_inner());
        for slot in self.slots.values() {
            let report = slot.report();
            let stage = report.stage.clone();
            if let Some(old) = shown.insert(stage.clone(), report.version.clone())
                && old != report.version
            {
                metrics::gauge!(catalogue::PLUGIN_INFO, "stage" => stage.clone(), "version" => old)
                    .set(0.0);
            }
            metrics::gauge!(catalogue::PLUGIN_INFO, "stage" => stage.clone(), "version" => report.version.clone())
                .set(1.0);
            let live = report.history.last();
            if let Some(at) = live
                .and_then(|d| d.live_since.as_deref().or(Some(d.deployed_at.as_str())))
                .and_then(unix_seconds)
            {
                metrics::gauge!(catalogue::PLUGIN_SWAPPED_IN, "stage" => stage.clone()).set(at);
            }
            metrics::counter!(catalogue::PLUGIN_SWAPS, "stage" => stage.clone(), "outcome" => "accepted")
                .absolute(report.swaps);
            metrics::counter!(catalogue::PLUGIN_SWAPS, "stage" => stage, "outcome" => "refused")
                .absolute(report.refused);
        }
    }
}

async fn scrape(State(endpoint): State<Arc<MetricsEndpoint>>) -> Response {
    let text = tokio::task::spawn_blocking(move || {
        endpoint.read_states();
        endpoint.exporter.render()
    })
    .await
    .unwrap_or_else(|error| format!("# cannot render the metrics: {error}\n"));
    ([(CONTENT_TYPE, TEXT_FORMAT)], text).into_response()
}

/// An RFC 3339 time as Unix seconds.
fn unix_seconds(rfc3339: &str) -> Option<f64> {
    let at = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()?;
    let at: SystemTime = at.into();
    at.duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_in_times_read_as_unix_seconds() {
        assert_eq!(unix_seconds("1970-01-01T00:01:00Z"), Some(60.0));
        assert_eq!(
            unix_seconds("2026-12-07T18:00:00.500Z"),
            Some(1_796_666_400.5)
        );
        assert_eq!(unix_seconds("yesterday"), None);
    }
}
