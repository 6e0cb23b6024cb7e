//! Row 11: what metrics and traces cost. The whole pipeline (exactly-once, default modes)
//! drains the same backlog with telemetry off (no recorder, no spans), with metrics on (the
//! default), with metrics and traces on, the spans sent over OTLP/HTTP to a sink served here,
//! and the same with one trace in ten recorded (`trace_sample_ratio = 0.1`); the variants
//! alternate `BENCH_TELEMETRY_REPEATS` times (default 2) and each ratio is
//! the mean of a variant's rates over the mean with telemetry off.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;

use super::{Row, row, whole_pipeline};

/// An OTLP/HTTP endpoint that accepts every export: its base URL, and the bytes it took.
async fn span_sink() -> (String, Arc<AtomicU64>) {
    let received = Arc::new(AtomicU64::new(0));
    let counted = received.clone();
    let app = Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let counted = counted.clone();
            async move {
                counted.fetch_add(body.len() as u64, Ordering::Relaxed);
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

/// One variant: its name, metrics on, where spans go, the share of traces recorded.
type Variant<'a> = (&'a str, bool, Option<&'a str>, f64);

/// Sets `[telemetry]` of `config` as `variant` has it.
fn telemetry(config: &mut toml::Table, (_, metrics, endpoint, ratio): Variant<'_>) {
    let mut table = toml::Table::new();
    table.insert("metrics".into(), metrics.into());
    if let Some(endpoint) = endpoint {
        table.insert("otlp_endpoint".into(), endpoint.into());
        table.insert("trace_sample_ratio".into(), ratio.into());
    }
    config.insert("telemetry".into(), table.into());
}

/// Runs row 11 on `orders` orders, adding its rows to `rows`.
pub async fn telemetry_rows(orders: u64, repeats: u64, rows: &mut Vec<Row>) {
    let (sink, received) = span_sink().await;
    let variants: [Variant<'_>; 4] = [
        ("off", false, None, 1.0),
        ("metrics", true, None, 1.0),
        ("metrics + traces", true, Some(&sink), 1.0),
        ("metrics + traces, 10 % sampled", true, Some(&sink), 0.1),
    ];
    let mut rates = vec![Vec::new(); variants.len()];
    for repeat in 0..repeats {
        // Alternate the order, so a drifting machine favours none of them.
        let mut order: Vec<usize> = (0..variants.len()).collect();
        if repeat % 2 == 1 {
            order.reverse();
        }
        for index in order {
            let variant = variants[index];
            let (rate, ..) =
                whole_pipeline("exactly_once", orders, |config| telemetry(config, variant)).await;
            rates[index].push(rate);
        }
    }
    let mean = |rates: &[f64]| rates.iter().sum::<f64>() / rates.len() as f64;
    let off = mean(&rates[0]);
    let list = |rates: &[f64]| {
        rates
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    rows.push(row(
        "11. telemetry off",
        off,
        "orders/s",
        format!(
            "{orders} orders, exactly-once, no recorder, no spans; runs: {}",
            list(&rates[0])
        ),
    ));
    for (index, goal) in [(1, 0.95), (2, 0.85), (3, 0.85)] {
        let rate = mean(&rates[index]);
        let ratio = rate / off;
        rows.push(row(
            &format!("11. telemetry: {}", variants[index].0),
            ratio,
            "× off",
            format!(
                "{rate:.0} orders/s (runs: {}); goal ≥ {goal}: {}{}",
                list(&rates[index]),
                if ratio >= goal { "met" } else { "not met" },
                if index == 3 {
                    format!(
                        "; the sink took {:.1} MB of spans from both traced variants",
                        received.load(Ordering::Relaxed) as f64 / 1e6
                    )
                } else {
                    String::new()
                }
            ),
        ));
    }
}
