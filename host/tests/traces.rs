//! Traces: the repository's pipeline on a real broker sends its spans over OTLP/HTTP to an
//! endpoint this test serves. One order is one trace: the ingress request is its root, every
//! stage the order goes through has a span in it (child of the span of the stage that wrote its
//! event), and a topic-fed stage's span has its plugin call and its commit as children.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use common::{TestPipeline, flow, order, wait_until};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

const TIMEOUT: Duration = Duration::from_secs(60);

/// A span as received: its ids, parent, name and trace.
#[derive(Debug, Clone)]
struct Received {
    trace: Vec<u8>,
    id: Vec<u8>,
    parent: Vec<u8>,
    name: String,
    service: String,
}

type Spans = Arc<Mutex<Vec<Received>>>;

/// An OTLP/HTTP trace endpoint on a free port: its base URL, and the spans it received.
async fn collector() -> (String, Spans) {
    let spans = Spans::default();
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .with_state(spans.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, spans)
}

async fn receive(State(spans): State<Spans>, body: Bytes) -> Vec<u8> {
    let request = ExportTraceServiceRequest::decode(body).unwrap();
    let mut received = spans.lock().unwrap();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .and_then(|a| a.value.as_ref())
            .map(|v| format!("{:?}", v.value))
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                received.push(Received {
                    trace: span.trace_id,
                    id: span.span_id,
                    parent: span.parent_span_id,
                    name: span.name,
                    service: service.clone(),
                });
            }
        }
    }
    ExportTraceServiceResponse::default().encode_to_vec()
}

/// The spans of each trace, by trace id.
fn traces(spans: &Spans) -> BTreeMap<Vec<u8>, Vec<Received>> {
    let mut traces: BTreeMap<Vec<u8>, Vec<Received>> = BTreeMap::new();
    for span in spans.lock().unwrap().iter() {
        traces
            .entry(span.trace.clone())
            .or_default()
            .push(span.clone());
    }
    traces
}

/// The stages an order goes through, besides the ingress request.
const STAGES: [&str; 7] = [
    "inventory",
    "stock",
    "reservation",
    "warehouse",
    "shipper",
    "notification",
    "order-status",
];

/// Whether `trace` has a span of every stage an order goes through.
fn spans_every_stage(trace: &[Received]) -> bool {
    let names: BTreeSet<&str> = trace.iter().map(|s| s.name.as_str()).collect();
    names.contains("POST /orders") && STAGES.iter().all(|stage| names.contains(stage))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_is_one_trace_with_a_span_per_stage() {
    let (endpoint, spans) = collector().await;
    let mut pipeline = TestPipeline::new(|config| {
        flow::stocked(config);
        let mut telemetry = toml::Table::new();
        telemetry.insert("otlp_endpoint".into(), endpoint.clone().into());
        telemetry.insert("service_name".into(), "orders-under-test".into());
        config.insert("telemetry".into(), telemetry.into());
    });
    pipeline.start();
    for id in ["trace-1", "trace-2"] {
        let (status, answer) = pipeline.post_order(&order(id, "fp-3", 1)).await;
        assert_eq!(status, 202, "{answer}");
    }
    wait_until("two traces spanning every stage", TIMEOUT, || async {
        traces(&spans)
            .values()
            .filter(|trace| spans_every_stage(trace))
            .count()
            == 2
    })
    .await;
    let status = pipeline.stop("TERM");
    assert!(status.success(), "the host did not stop cleanly: {status}");

    let traces = traces(&spans);
    let roots: Vec<&Received> = spans_named(&traces, "POST /orders");
    assert_eq!(roots.len(), 2, "one request span per order");
    for root in roots {
        let trace = &traces[&root.trace];
        assert!(root.parent.is_empty(), "the request starts the trace");
        assert!(
            root.service.contains("orders-under-test"),
            "{}",
            root.service
        );
        let ids: BTreeSet<&[u8]> = trace.iter().map(|s| s.id.as_slice()).collect();
        for span in trace.iter().filter(|s| !s.parent.is_empty()) {
            assert!(
                ids.contains(span.parent.as_slice()),
                "{} has a parent outside its trace",
                span.name
            );
        }
        let children = |parent: &Received| -> BTreeSet<&str> {
            trace
                .iter()
                .filter(|s| s.parent == parent.id)
                .map(|s| s.name.as_str())
                .collect()
        };
        assert!(children(root).contains("plugin"), "{:?}", children(root));
        assert!(children(root).contains("publish"), "{:?}", children(root));
        for stage in STAGES {
            let span = trace.iter().find(|s| s.name == stage).unwrap();
            let parent = trace.iter().find(|s| s.id == span.parent).unwrap();
            assert!(
                parent.name == "POST /orders" || STAGES.contains(&parent.name.as_str()),
                "{stage}'s parent is {}",
                parent.name
            );
            let own = children(span);
            assert!(
                own.contains("plugin") && own.contains("commit"),
                "{stage}: {own:?}"
            );
        }
    }
}

fn spans_named<'a>(traces: &'a BTreeMap<Vec<u8>, Vec<Received>>, name: &str) -> Vec<&'a Received> {
    traces
        .values()
        .flatten()
        .filter(|span| span.name == name)
        .collect()
}
