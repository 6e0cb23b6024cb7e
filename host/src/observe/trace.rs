//! Traces: one trace per order. The W3C trace context travels in each event's `traceparent`
//! (and `tracestate`) header, as the CloudEvents distributed-tracing extension has it: the
//! ingress starts a trace per request, and every stage that handles an event continues the
//! trace its header names with a span of its own (children: the plugin call, the commit), whose
//! context goes into the headers of what it writes. Spans go to an OpenTelemetry collector over
//! OTLP/HTTP when `telemetry.otlp_endpoint` is set; otherwise none is made (nothing costs).

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, Span,
};

use crate::config::TelemetryConfig;
use crate::event::headers::RecordHeaders;

/// Most spans waiting for export; more are dropped (and counted by the SDK), never waited for.
const MAX_QUEUED_SPANS: usize = 65_536;
/// How often waiting spans are sent.
const EXPORT_INTERVAL: Duration = Duration::from_secs(1);

struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

static TRACING: OnceLock<Tracing> = OnceLock::new();

/// Starts exporting spans to `config.otlp_endpoint`, if set (once per process).
pub fn install(config: &TelemetryConfig) -> anyhow::Result<()> {
    let Some(endpoint) = &config.otlp_endpoint else {
        return Ok(());
    };
    if TRACING.get().is_some() {
        return Ok(());
    }
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = SpanExporter::builder()
        .with_http()
        .with_endpoint(&url)
        .with_timeout(Duration::from_secs(10))
        .build()
        .with_context(|| format!("telemetry.otlp_endpoint: cannot export spans to {url}"))?;
    let batches = BatchConfigBuilder::default()
        .with_max_queue_size(MAX_QUEUED_SPANS)
        .with_scheduled_delay(EXPORT_INTERVAL)
        .build();
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batches)
        .build();
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
        config.trace_sample_ratio,
    )));
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(sampler)
        .with_resource(
            Resource::builder()
                .with_service_name(config.service_name.clone())
                .build(),
        )
        .build();
    let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "stagehost");
    tracing::info!(endpoint = %url, sample_ratio = config.trace_sample_ratio, "exporting trace spans over OTLP");
    let _ = TRACING.set(Tracing {
        provider,
        tracer,
        propagator: TraceContextPropagator::new(),
    });
    Ok(())
}

/// Sends the spans still waiting (at shutdown).
pub fn flush() {
    if let Some(tracing) = TRACING.get()
        && let Err(error) = tracing.provider.force_flush()
    {
        tracing::warn!(%error, "cannot send the last trace spans");
    }
}

/// Whether spans are made.
pub fn enabled() -> bool {
    TRACING.get().is_some()
}

/// The span of one event in one stage (or one request in the ingress).
pub struct EventSpan {
    span: Span,
    /// The context children and written events continue.
    context: Context,
}

impl EventSpan {
    /// Starts `name`'s span of an event whose `headers` may carry a trace context (none: a new
    /// trace); `None` when tracing is off.
    pub fn start<'a>(
        name: String,
        kind: SpanKind,
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
        attributes: Vec<KeyValue>,
    ) -> Option<Self> {
        let tracing = TRACING.get()?;
        let carried = Carried(headers.into_iter().collect());
        let parent = tracing.propagator.extract(&carried);
        let span = tracing
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes)
            .start_with_context(&tracing.tracer, &parent);
        let context = Context::new().with_remote_span_context(span.span_context().clone());
        Some(Self { span, context })
    }

    /// Records a child span `name` that ran from `start` to `end`.
    pub fn child(&self, name: &'static str, start: SystemTime, end: SystemTime) {
        let Some(tracing) = TRACING.get() else {
            return;
        };
        tracing
            .tracer
            .span_builder(name)
            .with_start_time(start)
            .with_end_time(end)
            .start_with_context(&tracing.tracer, &self.context)
            .end_with_timestamp(end);
    }

    /// Writes this span's context into `headers` (replacing any there).
    pub fn inject(&self, headers: &mut RecordHeaders) {
        let Some(tracing) = TRACING.get() else {
            return;
        };
        let mut carrier = Injected(Vec::new());
        tracing
            .propagator
            .inject_context(&self.context, &mut carrier);
        for (name, value) in carrier.0 {
            headers.set(name, value);
        }
    }

    /// Marks the span failed with `reason`.
    pub fn fail(&mut self, reason: &str) {
        self.span.set_status(Status::error(reason.to_string()));
    }

    /// Ends the span at `at`.
    pub fn end(mut self, at: SystemTime) {
        self.span.end_with_timestamp(at);
    }
}

impl std::fmt::Debug for EventSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSpan")
            .field("context", self.span.span_context())
            .finish()
    }
}

/// Headers a trace context is read from (names compared without case).
struct Carried<'a>(Vec<(&'a str, &'a str)>);

impl Extractor for Carried<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(key))
            .map(|(_, value)| *value)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| *name).collect()
    }
}

/// Headers a trace context is written to.
struct Injected(Vec<(String, String)>);

impl Injector for Injected {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_string(), value));
    }
}
