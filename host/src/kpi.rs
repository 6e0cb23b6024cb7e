//! Key performance indicators: per-stage counts and latency aggregated over a window and
//! published to the KPI topic once per window (never one Kafka message per event).
//!
//! KPI events keep the seed's fields (`kpi_name`, `metric`, `value`, `timestamp`) and add the
//! stage and the window length.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use rdkafka::producer::FutureProducer;
use serde::Serialize;

use crate::event::cloudevents::{self, CloudEvent};
use crate::kafka::OutRecord;
use crate::store::unix_ms;

/// Counts and latencies of one stage during the current window.
struct Window {
    processed: u64,
    outputs: u64,
    dead_lettered: u64,
    duplicates: u64,
    /// Inputs a fused stage skipped because a writer upstream handled them in process.
    handled_upstream: u64,
    retries: u64,
    /// Processing latency per event, in microseconds.
    latency_us: Histogram<u64>,
}

impl Window {
    fn new() -> Self {
        Self {
            processed: 0,
            outputs: 0,
            dead_lettered: 0,
            duplicates: 0,
            handled_upstream: 0,
            retries: 0,
            // Three significant digits up to one hour: bounded memory whatever the load.
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!())),
        }
    }

    fn is_empty(&self) -> bool {
        self.processed + self.dead_lettered + self.duplicates + self.handled_upstream + self.retries
            == 0
    }
}

/// The recorder one stage writes into. Cheap to clone.
///
/// Counts are kept per plugin version, so that each KPI event names the version that
/// produced it even when a window spans a hot swap. Counts no plugin took part in
/// (duplicates dropped by the host) have no version.
#[derive(Clone)]
pub struct StageKpis {
    stage: Arc<str>,
    windows: Arc<Mutex<BTreeMap<Option<String>, Window>>>,
}

impl StageKpis {
    /// A recorder for `stage` with an empty window.
    pub fn new(stage: &str) -> Self {
        Self {
            stage: Arc::from(stage),
            windows: Arc::default(),
        }
    }

    /// The stage it counts for.
    pub fn stage(&self) -> &str {
        &self.stage
    }

    /// Closes the current window (of length `window`) and returns its KPI events; none when
    /// nothing happened in it.
    pub fn drain(&self, window: Duration) -> Vec<KpiEvent> {
        let closed = match self.windows.lock() {
            Ok(mut current) => std::mem::take(&mut *current),
            Err(_) => return Vec::new(),
        };
        let timestamp = unix_ms(SystemTime::now());
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let mut events = Vec::new();
        for (version, closed) in closed {
            if closed.is_empty() {
                continue;
            }
            let mut push = |name: &str, metric: &str, value: u64| {
                events.push(self.event(
                    (name, metric, value),
                    timestamp,
                    window_ms,
                    version.clone(),
                ))
            };
            if version.is_none() {
                if closed.duplicates > 0 {
                    push("duplicates_dropped", "count", closed.duplicates);
                }
                if closed.handled_upstream > 0 {
                    push("handled_upstream", "count", closed.handled_upstream);
                }
                continue;
            }
            push("events_processed", "count", closed.processed);
            push("events_emitted", "count", closed.outputs);
            push("dead_letters", "count", closed.dead_lettered);
            push("retries", "count", closed.retries);
            if !closed.latency_us.is_empty() {
                push(
                    "latency_p50",
                    "microseconds",
                    closed.latency_us.value_at_quantile(0.5),
                );
                push(
                    "latency_p99",
                    "microseconds",
                    closed.latency_us.value_at_quantile(0.99),
                );
                push("latency_max", "microseconds", closed.latency_us.max());
            }
        }
        events
    }

    /// The size of the stage's keyed state at the end of a window of length `window`: entries
    /// (`state_keys`, the store's estimate) and bytes on disk (`state_bytes`).
    pub fn state_size(&self, window: Duration, keys: u64, bytes: u64) -> Vec<KpiEvent> {
        let timestamp = unix_ms(SystemTime::now());
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        [
            ("state_keys", "count", keys),
            ("state_bytes", "bytes", bytes),
        ]
        .into_iter()
        .map(|(name, metric, value)| self.event((name, metric, value), timestamp, window_ms, None))
        .collect()
    }

    /// One KPI event of this stage: `(name, metric, value)` over a window of `window_ms`
    /// ending at `timestamp`.
    fn event(
        &self,
        (name, metric, value): (&str, &str, u64),
        timestamp: u64,
        window_ms: u64,
        plugin_version: Option<String>,
    ) -> KpiEvent {
        KpiEvent {
            kpi_name: format!("{}.{name}", self.stage),
            metric: metric.into(),
            value,
            timestamp,
            stage: self.stage.to_string(),
            window_ms,
            plugin_version,
        }
    }

    fn with_window<F: FnOnce(&mut Window)>(&self, version: Option<&str>, update: F) {
        if let Ok(mut windows) = self.windows.lock() {
            let window = match windows.get_mut(&version.map(str::to_string)) {
                Some(window) => window,
                None => windows
                    .entry(version.map(str::to_string))
                    .or_insert_with(Window::new),
            };
            update(window);
        }
    }

    /// One input fully handled by plugin `version` with `outputs` records published, taking
    /// `latency`.
    pub fn processed(&self, version: &str, outputs: usize, latency: Duration) {
        self.with_window(Some(version), |w| {
            w.processed += 1;
            w.outputs += outputs as u64;
            let micros = u64::try_from(latency.as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            w.latency_us.saturating_record(micros);
        });
    }

    /// One input that plugin `version` failed on, sent to the dead-letter queue.
    pub fn dead_lettered(&self, version: &str) {
        self.with_window(Some(version), |w| w.dead_lettered += 1);
    }

    /// One input dropped because the stage had already processed its id.
    pub fn duplicate(&self) {
        self.with_window(None, |w| w.duplicates += 1);
    }

    /// One input skipped because a stage writing it handled it in process for this (fused)
    /// stage (see `stage::fusion`).
    pub fn handled_upstream(&self) {
        self.with_window(None, |w| w.handled_upstream += 1);
    }

    /// One retry of an input that plugin `version` asked to retry.
    pub fn retried(&self, version: &str) {
        self.with_window(Some(version), |w| w.retries += 1);
    }
}

/// One KPI event as published.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KpiEvent {
    /// `<stage>.<indicator>`, e.g. `threshold.events_processed`.
    pub kpi_name: String,
    /// Unit or kind: `count`, `microseconds`.
    pub metric: String,
    /// The value over the window.
    pub value: u64,
    /// End of the window, unix milliseconds.
    pub timestamp: u64,
    /// The stage.
    pub stage: String,
    /// Window length in milliseconds.
    pub window_ms: u64,
    /// Content hash of the plugin version the counts are about (none for host-only counts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin_version: Option<String>,
}

/// Recorders whose KPIs the hub publishes (stages that do not publish their own, such as the
/// HTTP ingress; topic stages publish theirs after each commit).
#[derive(Clone, Default)]
pub struct KpiHub {
    stages: Arc<Mutex<BTreeMap<String, StageKpis>>>,
}

impl KpiHub {
    /// The recorder of `stage`, published by the hub (created on first use).
    pub fn stage(&self, stage: &str) -> StageKpis {
        let mut stages = match self.stages.lock() {
            Ok(stages) => stages,
            Err(poisoned) => poisoned.into_inner(),
        };
        stages
            .entry(stage.to_string())
            .or_insert_with(|| StageKpis::new(stage))
            .clone()
    }

    /// Closes the current window of every registered stage and returns its KPI events.
    pub fn drain(&self, window: Duration) -> Vec<KpiEvent> {
        let stages: Vec<StageKpis> = match self.stages.lock() {
            Ok(stages) => stages.values().cloned().collect(),
            Err(poisoned) => poisoned.into_inner().values().cloned().collect(),
        };
        stages.iter().flat_map(|kpis| kpis.drain(window)).collect()
    }
}

/// Publishes the hub's KPIs every `interval` until `shutdown` fires, then once more.
pub async fn publish_loop(
    hub: KpiHub,
    sink: KpiSink,
    topic: String,
    event_type: String,
    interval: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let instance = uuid::Uuid::new_v4().to_string();
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    loop {
        let stopping = tokio::select! {
            _ = ticker.tick() => false,
            _ = shutdown.changed() => true,
        };
        let records: Vec<OutRecord> = hub
            .drain(interval)
            .into_iter()
            .map(|event| kpi_record(&event, &topic, &event_type, &instance))
            .collect();
        sink.publish(records);
        if stopping {
            break;
        }
    }
}

/// Where KPI records go: the host's shared (non-transactional) producer, best effort.
/// Monitoring never stops processing: a KPI record that cannot be published (its topic
/// deleted, no permission to write it, the local queue full) is counted and logged as a
/// warning, and the window is lost; it never fails a stage's transaction, and nobody waits for
/// it. KPIs count only committed work (a stage counts its inputs once their work committed),
/// so publishing them outside the transaction never counts anything twice.
#[derive(Clone)]
pub struct KpiSink {
    producer: FutureProducer,
    /// KPI records that could not be published since the host started.
    lost: Arc<AtomicU64>,
}

impl KpiSink {
    /// A sink publishing on `producer`.
    pub fn new(producer: FutureProducer) -> Self {
        Self {
            producer,
            lost: Arc::default(),
        }
    }

    /// Queues `records` now and counts, in the background, those that are not acknowledged.
    pub fn publish(&self, records: Vec<OutRecord>) {
        if records.is_empty() {
            return;
        }
        let mut deliveries = Vec::with_capacity(records.len());
        for record in &records {
            match self.producer.send_result(record.to_future_record()) {
                Ok(delivery) => deliveries.push((record.topic.clone(), delivery)),
                Err((error, _)) => self.count_lost(&record.topic, &error.to_string()),
            }
        }
        if deliveries.is_empty() {
            return;
        }
        let sink = self.clone();
        tokio::spawn(async move {
            for (topic, delivery) in deliveries {
                match delivery.await {
                    Ok(Ok(_)) => {}
                    Ok(Err((error, _))) => sink.count_lost(&topic, &error.to_string()),
                    Err(_) => sink.count_lost(&topic, "the producer dropped the record"),
                }
            }
        });
    }

    fn count_lost(&self, topic: &str, error: &str) {
        let lost = self.lost.fetch_add(1, Ordering::Relaxed) + 1;
        // One line for the first loss and then one per hundred: a deleted topic loses every
        // window of every stage.
        if lost == 1 || lost.is_multiple_of(100) {
            tracing::warn!(
                topic,
                error,
                lost_in_all = lost,
                "cannot publish a KPI record; it is lost (processing goes on). Check that the KPI topic exists and the host may write it"
            );
        }
    }
}

/// The record of one KPI event; `instance` keeps ids of different host instances apart.
pub fn kpi_record(event: &KpiEvent, topic: &str, event_type: &str, instance: &str) -> OutRecord {
    let id = uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!(
            "kpi\n{instance}\n{}\n{}\n{}",
            event.kpi_name,
            event.timestamp,
            event.plugin_version.as_deref().unwrap_or("")
        )
        .as_bytes(),
    )
    .to_string();
    let attributes = CloudEvent {
        id: id.clone(),
        event_type: event_type.to_string(),
        source: "/stagehost/kpi".into(),
        time: cloudevents::now_rfc3339(),
        plugin_version: event.plugin_version.clone(),
    };
    OutRecord {
        topic: topic.to_string(),
        partition: None,
        key: Some(event.kpi_name.clone()),
        payload: Some(serde_json::to_vec(event).unwrap_or_default()),
        headers: attributes.to_headers([]),
        id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_a_window_into_one_event_per_indicator() {
        let hub = KpiHub::default();
        let kpis = hub.stage("enricher");
        for micros in [100, 200, 300, 10_000] {
            kpis.processed("sha256:a", 2, Duration::from_micros(micros));
        }
        kpis.dead_lettered("sha256:a");
        kpis.duplicate();
        hub.stage("idle");
        let events = hub.drain(Duration::from_secs(5));
        let value = |name: &str| {
            events
                .iter()
                .find(|e| e.kpi_name == format!("enricher.{name}"))
                .map(|e| e.value)
        };
        assert_eq!(value("events_processed"), Some(4));
        assert_eq!(value("events_emitted"), Some(8));
        assert_eq!(value("dead_letters"), Some(1));
        assert_eq!(value("duplicates_dropped"), Some(1));
        assert!(value("latency_max").unwrap() >= 10_000);
        assert!(
            events
                .iter()
                .all(|e| e.stage == "enricher" && e.window_ms == 5000)
        );
        assert!(
            events
                .iter()
                .filter(|e| e.kpi_name != "enricher.duplicates_dropped")
                .all(|e| e.plugin_version.as_deref() == Some("sha256:a"))
        );
        assert!(
            hub.drain(Duration::from_secs(5)).is_empty(),
            "window resets"
        );
    }

    #[test]
    fn a_window_spanning_a_swap_reports_each_version_apart() {
        let kpis = StageKpis::new("warehouse");
        kpis.processed("sha256:old", 1, Duration::from_micros(50));
        kpis.processed("sha256:new", 1, Duration::from_micros(50));
        kpis.processed("sha256:new", 1, Duration::from_micros(50));
        let events = kpis.drain(Duration::from_secs(1));
        let processed = |version: &str| {
            events
                .iter()
                .find(|e| {
                    e.kpi_name == "warehouse.events_processed"
                        && e.plugin_version.as_deref() == Some(version)
                })
                .map(|e| e.value)
        };
        assert_eq!(processed("sha256:old"), Some(1));
        assert_eq!(processed("sha256:new"), Some(2));
        let ids: std::collections::HashSet<String> = events
            .iter()
            .map(|e| kpi_record(e, "KPIs", "KPI", "host-0").id)
            .collect();
        assert_eq!(
            ids.len(),
            events.len(),
            "KPI ids stay unique across versions"
        );
    }
}
