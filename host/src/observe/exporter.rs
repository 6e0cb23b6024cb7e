//! The Prometheus exporter: the process-wide `metrics` recorder and what `GET /metrics`
//! renders from it.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::catalogue::{self, Kind};

/// Bucket bounds of the `_seconds` histograms: 50 µs to 10 s, about three per decade.
const SECONDS_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// How often histograms are folded into their buckets between scrapes (bounds their memory).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The installed exporter.
pub struct Exporter {
    handle: PrometheusHandle,
    process: metrics_process::Collector,
}

static EXPORTER: OnceLock<Result<Exporter, String>> = OnceLock::new();

impl Exporter {
    /// Installs the exporter as the process's `metrics` recorder, once; later calls return
    /// the same one. Fails if another recorder was installed first.
    pub fn install() -> anyhow::Result<&'static Exporter> {
        EXPORTER
            .get_or_init(|| Self::build().map_err(|error| format!("{error:#}")))
            .as_ref()
            .map_err(|error| anyhow::anyhow!("cannot install the metrics exporter: {error}"))
    }

    fn build() -> anyhow::Result<Exporter> {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)?
            .install_recorder()?;
        describe_all();
        let process = metrics_process::Collector::default();
        process.describe();
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_INTERVAL);
                    upkeep.run_upkeep();
                }
            })?;
        metrics::gauge!(catalogue::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        Ok(Exporter { handle, process })
    }

    /// Every metric in the Prometheus text format, with the process's figures read now.
    pub fn render(&self) -> String {
        self.process.collect();
        self.handle.render()
    }
}

fn describe_all() {
    for metric in catalogue::METRICS {
        let (name, help) = (metric.name, metric.help);
        match metric.kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, metrics::Unit::Seconds, help),
        }
    }
}
