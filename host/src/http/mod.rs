//! The HTTP server: the ingress route, `/healthz` and `/readyz`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::stage::{Ingress, Reply};

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    /// The ingress stage, when the pipeline has one.
    pub ingress: Option<Arc<Ingress>>,
    /// True once plugins are loaded and Kafka answered recently.
    pub ready: Arc<AtomicBool>,
    /// Largest accepted body.
    pub max_body_bytes: usize,
}

/// Builds the router; `ingress_path` is where orders are posted.
pub fn router(state: HttpState, ingress_path: &str) -> Router {
    Router::new()
        .route(ingress_path, post(submit))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` completes; in-flight requests finish first.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .context("HTTP server failed")
}

/// Binds the listen address, with a message that says what to do when it is taken.
pub async fn bind(listen: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let address: SocketAddr = listen
        .parse()
        .with_context(|| format!("http.listen '{listen}' is not an address"))?;
    tokio::net::TcpListener::bind(address).await.with_context(|| {
        format!("cannot listen on {address}; is another stagehost running? (set STAGEHOST_HTTP_ADDR)")
    })
}

fn json_response(reply: Reply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        reply.body.to_string(),
    )
        .into_response()
}

async fn submit(State(state): State<HttpState>, body: Body) -> Response {
    let Some(ingress) = state.ingress.clone() else {
        return json_response(Reply {
            status: 404,
            body: json!({"error": "this pipeline has no HTTP ingress stage"}),
        });
    };
    let bytes = match to_bytes(body, state.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return json_response(Reply {
                status: 413,
                body: json!({"error": format!(
                    "body is larger than http.max_body_bytes ({} bytes)", state.max_body_bytes
                )}),
            });
        }
    };
    json_response(ingress.submit(&bytes).await)
}

async fn healthz() -> Response {
    json_response(Reply {
        status: 200,
        body: json!({"status": "ok"}),
    })
}

async fn readyz(State(state): State<HttpState>) -> Response {
    let ready = state.ready.load(Ordering::Relaxed);
    json_response(Reply {
        status: if ready { 200 } else { 503 },
        body: json!({"ready": ready}),
    })
}
