//! The admin server: its router, the plugin handlers (list, show, swap, rollback) and the
//! held-record handlers (list, skip, retry).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::plugin::{PluginSlot, SwapError, SwapOutcome};
use crate::stage::{Decision, StuckBook};

/// Header of a swap request naming the component's file (for the history and messages).
pub const PATH_HEADER: &str = "x-plugin-path";

/// The live plugin slot of every stage, by stage name.
pub type Slots = Arc<BTreeMap<String, Arc<PluginSlot>>>;

/// The admin router over `slots` and `stuck`; swap bodies may be up to `max_plugin_bytes`.
pub fn router(slots: Slots, stuck: StuckBook, max_plugin_bytes: usize) -> Router {
    let plugins = Router::new()
        .route("/plugins", get(list))
        .route("/plugins/{stage}", get(show).put(swap))
        .route("/plugins/{stage}/rollback", post(rollback))
        .layer(DefaultBodyLimit::max(max_plugin_bytes))
        .with_state(slots);
    let stuck = Router::new()
        .route("/stuck", get(list_stuck))
        .route("/stuck/{stage}/{topic}/{partition}/skip", post(skip_stuck))
        .route(
            "/stuck/{stage}/{topic}/{partition}/retry",
            post(retry_stuck),
        )
        .with_state(stuck);
    plugins.merge(stuck)
}

async fn list_stuck(State(stuck): State<StuckBook>) -> Response {
    axum::Json(stuck.list()).into_response()
}

async fn skip_stuck(
    State(stuck): State<StuckBook>,
    Path((stage, topic, partition)): Path<(String, String, i32)>,
) -> Response {
    decide(&stuck, &stage, &topic, partition, Decision::Skip)
}

async fn retry_stuck(
    State(stuck): State<StuckBook>,
    Path((stage, topic, partition)): Path<(String, String, i32)>,
) -> Response {
    decide(&stuck, &stage, &topic, partition, Decision::Retry)
}

fn decide(
    stuck: &StuckBook,
    stage: &str,
    topic: &str,
    partition: i32,
    decision: Decision,
) -> Response {
    match stuck.decide(stage, topic, partition, decision) {
        Ok(record) => axum::Json(record).into_response(),
        Err(why) => error(StatusCode::NOT_FOUND, &why),
    }
}

async fn list(State(slots): State<Slots>) -> Response {
    let reports: Vec<_> = slots.values().map(|slot| slot.report()).collect();
    axum::Json(reports).into_response()
}

async fn show(State(slots): State<Slots>, Path(stage): Path<String>) -> Response {
    match slots.get(&stage) {
        Some(slot) => axum::Json(slot.report()).into_response(),
        None => unknown_stage(&slots, &stage),
    }
}

async fn swap(
    State(slots): State<Slots>,
    Path(stage): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(slot) = slots.get(&stage).cloned() else {
        return unknown_stage(&slots, &stage);
    };
    if body.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "the request body must be the new WebAssembly component",
        );
    }
    let path = headers
        .get(PATH_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("<uploaded>"));
    // Compiling takes a while; keep it off the async workers that serve the pipeline.
    let outcome = tokio::task::spawn_blocking(move || slot.swap_bytes(&path, &body)).await;
    answer(outcome)
}

async fn rollback(State(slots): State<Slots>, Path(stage): Path<String>) -> Response {
    let Some(slot) = slots.get(&stage).cloned() else {
        return unknown_stage(&slots, &stage);
    };
    answer(tokio::task::spawn_blocking(move || slot.rollback()).await)
}

fn answer(outcome: Result<Result<SwapOutcome, SwapError>, tokio::task::JoinError>) -> Response {
    match outcome {
        Ok(Ok(outcome)) => axum::Json(outcome).into_response(),
        Ok(Err(error @ SwapError::NothingToRollBack(_))) => {
            self::error(StatusCode::CONFLICT, &error.to_string())
        }
        Ok(Err(error)) => self::error(StatusCode::UNPROCESSABLE_ENTITY, &error.to_string()),
        Err(join) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("the swap task failed: {join}"),
        ),
    }
}

fn unknown_stage(slots: &Slots, stage: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        &format!(
            "no stage named '{stage}'; stages: {}",
            slots.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
    )
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}
