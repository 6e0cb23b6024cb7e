//! The HTTP server: the ingress route, order status and stock read models, restocking,
//! `/healthz` and `/readyz`.

mod views;

pub use views::TopicView;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
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
    /// Whether every part of the host works (stages own their partitions, the ingress can
    /// publish, Kafka answers), and what does not.
    pub health: crate::health::Health,
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// Latest status per order, for `GET /orders/{order_id}`.
    pub order_status: Option<Arc<TopicView>>,
    /// Latest stock record per product, for `GET /inventory/{product_id}`.
    pub stock: Option<Arc<TopicView>>,
    /// Starting stock of products without a stock record yet.
    pub catalog: Arc<HashMap<String, i64>>,
    /// Topic and event type of restock commands.
    pub restock: Option<(String, String)>,
}

/// Builds the router; `ingress_path` is where orders are posted.
pub fn router(state: HttpState, ingress_path: &str) -> Router {
    Router::new()
        .route(ingress_path, post(submit))
        .route("/orders/{order_id}", get(order_status))
        .route("/inventory/{product_id}", get(stock))
        .route("/inventory/{product_id}/restock", post(restock))
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

/// Seconds a client is told to wait before repeating a request that got `503`.
const RETRY_AFTER_SECONDS: &str = "2";

fn json_response(reply: Reply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        reply.body.to_string(),
    )
        .into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            header::HeaderValue::from_static(RETRY_AFTER_SECONDS),
        );
    }
    response
}

async fn submit(State(state): State<HttpState>, body: Body) -> Response {
    let Some(ingress) = state.ingress.clone() else {
        return json_response(Reply {
            status: 404,
            body: json!({"error": "this pipeline has no HTTP ingress stage"}),
        });
    };
    let bytes = match read_body(body, state.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(response) => return response,
    };
    json_response(ingress.submit(&bytes).await)
}

async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, Response> {
    to_bytes(body, limit).await.map_err(|_| {
        json_response(Reply {
            status: 413,
            body: json!({"error": format!("body is larger than http.max_body_bytes ({limit} bytes)")}),
        })
    })
}

fn not_configured(what: &str) -> Response {
    json_response(Reply {
        status: 404,
        body: json!({"error": format!("this pipeline does not configure {what}")}),
    })
}

/// A read model cannot answer because the local store fails: `503`, try again.
fn store_failed(error: &crate::store::StoreError) -> Response {
    let mut response = json_response(Reply {
        status: 503,
        body: json!({"error": error.to_string()}),
    });
    response
        .headers_mut()
        .insert("retry-after", axum::http::HeaderValue::from_static("2"));
    response
}

async fn order_status(State(state): State<HttpState>, Path(order_id): Path<String>) -> Response {
    let Some(view) = &state.order_status else {
        return not_configured("http.order_status_topic");
    };
    match view.get(&order_id) {
        Err(error) => store_failed(&error),
        Ok(Some(status)) => json_response(Reply {
            status: 200,
            body: status,
        }),
        Ok(None) => json_response(Reply {
            status: 404,
            body: json!({"error": format!("no order {order_id} is known (yet)")}),
        }),
    }
}

async fn stock(State(state): State<HttpState>, Path(product_id): Path<String>) -> Response {
    let Some(view) = &state.stock else {
        return not_configured("http.stock_topic");
    };
    let entry = match view.get(&product_id) {
        Ok(entry) => entry,
        Err(error) => return store_failed(&error),
    };
    let body = match (entry, state.catalog.get(&product_id)) {
        (Some(entry), _) => json!({
            "product_id": product_id,
            "stock": entry.get("stock").cloned().unwrap_or(serde_json::Value::Null),
            "source": "ledger",
            "last_change": entry,
        }),
        (None, Some(stock)) => {
            json!({"product_id": product_id, "stock": stock, "source": "catalog"})
        }
        (None, None) => {
            return json_response(Reply {
                status: 404,
                body: json!({"error": format!("product {product_id} has no stock record and is not in the catalog")}),
            });
        }
    };
    json_response(Reply { status: 200, body })
}

async fn restock(
    State(state): State<HttpState>,
    Path(product_id): Path<String>,
    body: Body,
) -> Response {
    let (Some(ingress), Some((topic, event_type))) = (state.ingress.clone(), state.restock.clone())
    else {
        return not_configured("http.inventory_commands_topic with an ingress stage");
    };
    let bytes = match read_body(body, state.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(response) => return response,
    };
    json_response(
        ingress
            .restock(&product_id, &bytes, &topic, &event_type)
            .await,
    )
}

async fn healthz() -> Response {
    json_response(Reply {
        status: 200,
        body: json!({"status": "ok"}),
    })
}

async fn readyz(State(state): State<HttpState>) -> Response {
    let ready = state.health.ready();
    let body = if ready {
        json!({"ready": true})
    } else {
        json!({"ready": false, "problems": state.health.problems()})
    };
    json_response(Reply {
        status: if ready { 200 } else { 503 },
        body,
    })
}
