//! The HTTP server itself: the router over the declared routes and read models, `/healthz`
//! and `/readyz`, binding the listen address, and serving until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, get, on};
use serde_json::json;

use super::Reply;
use super::endpoints::{IngressEndpoint, ViewEndpoint};
use crate::observe::{HostEvent, RequestAnswered};

/// What every handler shares.
#[derive(Clone)]
pub struct HttpState {
    /// Whether every part of the host works (stages own their partitions, the ingress can
    /// publish, Kafka answers), and what does not.
    pub health: crate::health::Health,
    /// Largest accepted body.
    pub max_body_bytes: usize,
}

/// Builds the router: one route per ingress endpoint and read model, plus `/healthz` and
/// `/readyz`. Paths and methods were validated with the configuration.
pub fn router(
    state: HttpState,
    ingress: Vec<IngressEndpoint>,
    views: Vec<ViewEndpoint>,
) -> anyhow::Result<Router> {
    let mut router = Router::new();
    for endpoint in ingress {
        let (path, filter) = (endpoint.path.clone(), method_filter(&endpoint.method)?);
        let endpoint = Arc::new(endpoint);
        let has_params = !endpoint.params.is_empty();
        let handler: MethodRouter<HttpState> = if has_params {
            on(
                filter,
                move |State(state): State<HttpState>,
                      Path(params): Path<Vec<(String, String)>>,
                      body: Body| {
                    let endpoint = endpoint.clone();
                    async move { submit(&state, &endpoint, params, body).await }
                },
            )
        } else {
            on(filter, move |State(state): State<HttpState>, body: Body| {
                let endpoint = endpoint.clone();
                async move { submit(&state, &endpoint, Vec::new(), body).await }
            })
        };
        router = router.route(&path, handler);
    }
    for view in views {
        let path = view.path.clone();
        let view = Arc::new(view);
        router = router.route(
            &path,
            get(move |Path(params): Path<Vec<(String, String)>>| {
                let view = view.clone();
                async move { json_response(view.answer(&params).await) }
            }),
        );
    }
    Ok(router
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route_layer(axum::middleware::from_fn(measured))
        .layer(DefaultBodyLimit::disable())
        .with_state(state))
}

/// Reports each answered request (route, method, status, time) as a [`RequestAnswered`].
async fn measured(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_string())
        .unwrap_or_default();
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    RequestAnswered {
        route: &route,
        method: method.as_str(),
        status: response.status().as_u16(),
        took: started.elapsed(),
    }
    .emit();
    response
}

fn method_filter(method: &str) -> anyhow::Result<MethodFilter> {
    Ok(match method {
        "POST" => MethodFilter::POST,
        "PUT" => MethodFilter::PUT,
        "PATCH" => MethodFilter::PATCH,
        "DELETE" => MethodFilter::DELETE,
        other => anyhow::bail!("HTTP method {other} cannot feed an ingress stage"),
    })
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

async fn submit(
    state: &HttpState,
    endpoint: &IngressEndpoint,
    params: Vec<(String, String)>,
    body: Body,
) -> Response {
    let limit = state.max_body_bytes;
    let bytes = match to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return json_response(Reply {
                status: 413,
                body: json!({"error": format!("body is larger than http.max_body_bytes ({limit} bytes)")}),
            });
        }
    };
    json_response(endpoint.handler.submit(&params, &bytes).await)
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
