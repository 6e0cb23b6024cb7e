//! Every metric the host exports: its name, kind, labels and help, in one list.
//!
//! Names follow the Prometheus conventions: a `stagehost_` prefix, base units (`_seconds`,
//! `_bytes`, `_records`), `_total` on counters. The exporter describes each one from this list,
//! the Grafana dashboard and the console may only query names in it (a test checks the
//! dashboard), and the metrics test checks that what `/metrics` serves is in it.

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets (`_bucket`, `_sum`, `_count`).
    Histogram,
}

/// One exported metric.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// Its full name.
    pub name: &'static str,
    /// Its kind.
    pub kind: Kind,
    /// Its labels.
    pub labels: &'static [&'static str],
    /// What it measures (the `# HELP` line).
    pub help: &'static str,
}

const fn metric(
    name: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    help: &'static str,
) -> Metric {
    Metric {
        name,
        kind,
        labels,
        help,
    }
}

use Kind::{Counter, Gauge, Histogram};

/// Events a stage finished (committed, dead-lettered or dropped as repeats).
pub const STAGE_EVENTS_IN: &str = "stagehost_stage_events_in_total";
/// Records a stage wrote (outputs, not dead letters).
pub const STAGE_EVENTS_OUT: &str = "stagehost_stage_events_out_total";
/// Events a stage sent to the dead-letter queue, by reason.
pub const STAGE_DEAD_LETTERS: &str = "stagehost_stage_dead_letters_total";
/// Events parked for a retry.
pub const STAGE_RETRIES: &str = "stagehost_stage_retries_total";
/// Events dropped because their id was already processed.
pub const STAGE_REPEATS_DROPPED: &str = "stagehost_stage_repeats_dropped_total";
/// Events that took longer than the stage's event timeout.
pub const STAGE_EVENT_TIMEOUTS: &str = "stagehost_stage_event_timeouts_total";
/// Time from a batch's first poll to the commit that finished it.
pub const STAGE_PROCESSING_SECONDS: &str = "stagehost_stage_processing_seconds";
/// Time of one plugin call.
pub const PLUGIN_CALL_SECONDS: &str = "stagehost_plugin_call_seconds";
/// Time to commit a stage's work (a Kafka transaction, or a flush and an offset commit).
pub const STAGE_COMMIT_SECONDS: &str = "stagehost_stage_commit_seconds";
/// Transactions a stage aborted.
pub const STAGE_TRANSACTIONS_ABORTED: &str = "stagehost_stage_transactions_aborted_total";
/// Work dropped uncommitted (a rebalance took its partitions).
pub const STAGE_OPEN_WORK_DROPPED: &str = "stagehost_stage_open_work_dropped_total";
/// Times a stage's worker started.
pub const STAGE_STARTS: &str = "stagehost_stage_starts_total";
/// Times a stage was found stalled by its watchdog.
pub const STAGE_STALLS: &str = "stagehost_stage_stalls_total";
/// Times a stage was rebuilt by its supervisor.
pub const STAGE_REBUILDS: &str = "stagehost_stage_rebuilds_total";
/// Consumer errors a stage saw.
pub const STAGE_CONSUMER_ERRORS: &str = "stagehost_stage_consumer_errors_total";
/// Records on a stage's input partition after its committed offset.
pub const CONSUMER_LAG: &str = "stagehost_consumer_lag_records";
/// Records waiting on all of a stage's input partitions.
pub const STAGE_LAG: &str = "stagehost_stage_lag_records";
/// Seconds since a stage with lag last committed progress (0 while it has none).
pub const STAGE_STALLED_SECONDS: &str = "stagehost_stage_stalled_seconds";
/// Whether a part of the host is ready (1) or not (0).
pub const PART_READY: &str = "stagehost_part_ready";
/// The live plugin version of each stage (always 1).
pub const PLUGIN_INFO: &str = "stagehost_plugin_info";
/// When a stage's live plugin was swapped in (Unix seconds).
pub const PLUGIN_SWAPPED_IN: &str = "stagehost_plugin_swapped_in_timestamp_seconds";
/// Swap, rollback and refusal outcomes by stage.
pub const PLUGIN_SWAPS: &str = "stagehost_plugin_swaps_total";
/// Keys in a stateful stage's keyed state.
pub const STATE_KEYS: &str = "stagehost_state_keys";
/// Ingress and read-model requests, by route, method and status.
pub const HTTP_REQUESTS: &str = "stagehost_http_requests_total";
/// Time to answer an HTTP request, by route and method.
pub const HTTP_REQUEST_SECONDS: &str = "stagehost_http_request_duration_seconds";
/// Ingress requests answered from the idempotency record (a repeat of an accepted id).
pub const INGRESS_REPEATS: &str = "stagehost_ingress_repeats_total";
/// Ingress requests refused because their id was accepted with a different body.
pub const INGRESS_CONFLICTS: &str = "stagehost_ingress_conflicts_total";
/// Time to commit one ingress transaction (the events and answers of a group of requests).
pub const INGRESS_COMMIT_SECONDS: &str = "stagehost_ingress_commit_seconds";
/// Requests the admin API refused, by reason.
pub const ADMIN_REFUSED: &str = "stagehost_admin_refused_total";
/// The host's build (always 1).
pub const BUILD_INFO: &str = "stagehost_build_info";
/// Resident memory of the host process.
pub const PROCESS_RSS: &str = "process_resident_memory_bytes";
/// CPU time of the host process.
pub const PROCESS_CPU: &str = "process_cpu_seconds_total";

/// Every metric the host exports.
pub const METRICS: &[Metric] = &[
    metric(
        STAGE_EVENTS_IN,
        Counter,
        &["stage"],
        "Events a stage finished (committed, dead-lettered or dropped as repeats).",
    ),
    metric(
        STAGE_EVENTS_OUT,
        Counter,
        &["stage"],
        "Records a stage wrote (outputs, not dead letters).",
    ),
    metric(
        STAGE_DEAD_LETTERS,
        Counter,
        &["stage", "reason"],
        "Events a stage sent to the dead-letter queue, by reason.",
    ),
    metric(
        STAGE_RETRIES,
        Counter,
        &["stage"],
        "Events parked for a retry.",
    ),
    metric(
        STAGE_REPEATS_DROPPED,
        Counter,
        &["stage"],
        "Events dropped because their id was already processed.",
    ),
    metric(
        STAGE_EVENT_TIMEOUTS,
        Counter,
        &["stage"],
        "Events that took longer than the stage's event timeout.",
    ),
    metric(
        STAGE_PROCESSING_SECONDS,
        Histogram,
        &["stage"],
        "Time from a batch's first poll to the commit that finished it, once per event.",
    ),
    metric(
        PLUGIN_CALL_SECONDS,
        Histogram,
        &["stage", "version"],
        "Time of one plugin call.",
    ),
    metric(
        STAGE_COMMIT_SECONDS,
        Histogram,
        &["stage"],
        "Time to commit a stage's work (a Kafka transaction, or a flush and an offset commit).",
    ),
    metric(
        STAGE_TRANSACTIONS_ABORTED,
        Counter,
        &["stage"],
        "Transactions a stage aborted.",
    ),
    metric(
        STAGE_OPEN_WORK_DROPPED,
        Counter,
        &["stage"],
        "Work dropped uncommitted because a rebalance took its partitions.",
    ),
    metric(
        STAGE_STARTS,
        Counter,
        &["stage"],
        "Times a stage's worker started.",
    ),
    metric(
        STAGE_STALLS,
        Counter,
        &["stage"],
        "Times a stage was found stalled by its watchdog.",
    ),
    metric(
        STAGE_REBUILDS,
        Counter,
        &["stage"],
        "Times a stage was rebuilt by its supervisor.",
    ),
    metric(
        STAGE_CONSUMER_ERRORS,
        Counter,
        &["stage"],
        "Consumer errors a stage saw.",
    ),
    metric(
        CONSUMER_LAG,
        Gauge,
        &["stage", "topic", "partition"],
        "Records on a stage's input partition after its committed offset.",
    ),
    metric(
        STAGE_LAG,
        Gauge,
        &["stage"],
        "Records waiting on all of a stage's input partitions.",
    ),
    metric(
        STAGE_STALLED_SECONDS,
        Gauge,
        &["stage"],
        "Seconds since a stage with lag last committed progress (0 while it has none).",
    ),
    metric(
        PART_READY,
        Gauge,
        &["part"],
        "Whether a part of the host is ready (1) or not (0).",
    ),
    metric(
        PLUGIN_INFO,
        Gauge,
        &["stage", "version"],
        "The live plugin version of each stage (always 1).",
    ),
    metric(
        PLUGIN_SWAPPED_IN,
        Gauge,
        &["stage"],
        "When a stage's live plugin was swapped in (Unix seconds).",
    ),
    metric(
        PLUGIN_SWAPS,
        Counter,
        &["stage", "outcome"],
        "Plugin swaps and rollbacks by outcome: accepted or refused.",
    ),
    metric(
        STATE_KEYS,
        Gauge,
        &["stage"],
        "Keys in a stateful stage's keyed state.",
    ),
    metric(
        HTTP_REQUESTS,
        Counter,
        &["route", "method", "status"],
        "HTTP requests by route, method and status.",
    ),
    metric(
        HTTP_REQUEST_SECONDS,
        Histogram,
        &["route", "method"],
        "Time to answer an HTTP request.",
    ),
    metric(
        INGRESS_REPEATS,
        Counter,
        &["route"],
        "Ingress requests answered as a repeat of an accepted id.",
    ),
    metric(
        INGRESS_CONFLICTS,
        Counter,
        &["route"],
        "Ingress requests refused: their id was accepted with a different body.",
    ),
    metric(
        INGRESS_COMMIT_SECONDS,
        Histogram,
        &[],
        "Time to commit one exactly-once ingress transaction (a group of requests).",
    ),
    metric(
        ADMIN_REFUSED,
        Counter,
        &["reason"],
        "Admin API requests refused, by reason: missing_token, wrong_token, read_only_token, bad_host, bad_origin.",
    ),
    metric(
        BUILD_INFO,
        Gauge,
        &["version"],
        "The host's build (always 1).",
    ),
    metric(
        PROCESS_RSS,
        Gauge,
        &[],
        "Resident memory of the host process.",
    ),
    metric(PROCESS_CPU, Counter, &[], "CPU time of the host process."),
];

/// The metric named `name` (a series name may end in `_bucket`, `_sum` or `_count`).
pub fn find(series: &str) -> Option<&'static Metric> {
    METRICS.iter().find(|metric| {
        series == metric.name
            || (metric.kind == Histogram
                && ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| series.strip_suffix(suffix) == Some(metric.name)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prometheus_conventions() {
        for metric in METRICS {
            let counter = metric.kind == Counter;
            assert_eq!(counter, metric.name.ends_with("_total"), "{}", metric.name);
            assert!(
                metric.name.starts_with("stagehost_") || metric.name.starts_with("process_"),
                "{}",
                metric.name
            );
            assert!(!metric.name.contains("_ms") && !metric.name.contains("millis"));
        }
    }

    #[test]
    fn the_operators_page_lists_every_metric() {
        let page =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/observability.md");
        let page = std::fs::read_to_string(page).unwrap();
        for metric in METRICS {
            assert!(
                page.contains(&format!("| `{}` |", metric.name)),
                "docs/observability.md does not list {}",
                metric.name
            );
        }
    }

    #[test]
    fn each_name_is_listed_once_and_histogram_series_are_found() {
        for metric in METRICS {
            let same = METRICS.iter().filter(|m| m.name == metric.name).count();
            assert_eq!(same, 1, "{}", metric.name);
        }
        assert!(find("stagehost_plugin_call_seconds_bucket").is_some());
        assert!(find("stagehost_stage_events_in_total_count").is_none());
        assert!(find("stagehost_unknown").is_none());
    }
}
