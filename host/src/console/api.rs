//! The console's JSON endpoints on the admin router: the topology, the pending dead letters,
//! replaying them, and tracing a key. Kafka reads run on the blocking threads.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::topology::Topology;
use crate::config::PipelineConfig;
use crate::dlq::{self, DeadLetterEntry, Filter};

/// Most pending dead letters one answer lists (the newest ones).
const MAX_LISTED: usize = 500;

/// The console's page and endpoints, over the pipeline's configuration.
pub fn router(config: Arc<PipelineConfig>) -> Router {
    let api = Router::new()
        .route("/api/topology", get(topology))
        .route("/api/dlq", get(pending))
        .route("/api/dlq/replay", post(replay))
        .route("/api/trace/{key}", get(trace))
        .with_state(config);
    super::page::routes().merge(api)
}

async fn topology(State(config): State<Arc<PipelineConfig>>) -> Response {
    Json(Topology::of(&config)).into_response()
}

/// The answer of `GET /api/dlq`.
#[derive(Serialize)]
struct Pending {
    /// Dead letters not replayed yet.
    total: usize,
    /// The newest of them (at most [`MAX_LISTED`]), newest first.
    letters: Vec<PendingLetter>,
}

/// One pending dead letter and how long ago it was written.
#[derive(Serialize)]
struct PendingLetter {
    /// Seconds since it was dead-lettered (by the host's clock).
    age_seconds: Option<f64>,
    /// The letter: id, key, reason and the whole envelope.
    #[serde(flatten)]
    entry: DeadLetterEntry,
}

async fn pending(State(config): State<Arc<PipelineConfig>>) -> Response {
    let read = tokio::task::spawn_blocking(move || dlq::list(&config, &Filter::default())).await;
    let entries = match read {
        Ok(Ok(entries)) => entries,
        Ok(Err(why)) => {
            return error(
                StatusCode::BAD_GATEWAY,
                &format!("cannot read the dead letters: {why:#}"),
            );
        }
        Err(join) => return failed(&join),
    };
    let now = time::OffsetDateTime::now_utc();
    let mut letters: Vec<PendingLetter> = entries
        .into_iter()
        .filter(|entry| entry.replayed_at.is_none())
        .map(|entry| PendingLetter {
            age_seconds: age(&entry.letter.timestamp, now),
            entry,
        })
        .collect();
    letters.sort_by(|a, b| b.entry.letter.timestamp.cmp(&a.entry.letter.timestamp));
    let total = letters.len();
    letters.truncate(MAX_LISTED);
    Json(Pending { total, letters }).into_response()
}

/// Seconds from the RFC 3339 time `at` to `now`.
fn age(at: &str, now: time::OffsetDateTime) -> Option<f64> {
    let at =
        time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()?;
    Some((now - at).as_seconds_f64().max(0.0))
}

/// The body of `POST /api/dlq/replay`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    /// The stage that failed on the letters; found from `id` when left out.
    stage: Option<String>,
    /// Only the letter with this id (or failed event id).
    id: Option<String>,
    /// Only those since this long ago (`30m`) or this time.
    since: Option<String>,
}

async fn replay(
    State(config): State<Arc<PipelineConfig>>,
    Json(request): Json<ReplayRequest>,
) -> Response {
    let filter = match filter_of(&config, request).await {
        Ok(filter) => filter,
        Err(response) => return *response,
    };
    match dlq::replay(&config, &filter).await {
        Ok(report) => Json(report).into_response(),
        Err(why) => error(
            StatusCode::BAD_GATEWAY,
            &format!("the replay failed: {why:#}"),
        ),
    }
}

/// The replay filter a request asks for, or the answer saying what is wrong with it.
async fn filter_of(
    config: &Arc<PipelineConfig>,
    request: ReplayRequest,
) -> Result<Filter, Box<Response>> {
    let bad = |status, message: &str| Box::new(error(status, message));
    if request.id.is_some() && request.since.is_some() {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            "give either id (one dead letter) or since (a filter), not both",
        ));
    }
    let since = match request.since.as_deref().map(dlq::parse_since).transpose() {
        Ok(since) => since,
        Err(why) => return Err(bad(StatusCode::BAD_REQUEST, &format!("{why:#}"))),
    };
    let stage = match (request.stage, &request.id) {
        (Some(stage), _) => stage,
        (None, Some(id)) => stage_of(config, id).await?,
        (None, None) => {
            return Err(bad(
                StatusCode::BAD_REQUEST,
                "say what to replay: {\"id\": …} for one dead letter, or {\"stage\": …} (with \
                 \"since\") for a stage's",
            ));
        }
    };
    if !config.stages.iter().any(|s| s.name == stage) {
        return Err(bad(
            StatusCode::NOT_FOUND,
            &format!("no stage named '{stage}' in the configuration"),
        ));
    }
    Ok(Filter {
        stage: Some(stage),
        since,
        id: request.id,
    })
}

/// The stage that failed on the dead letter `id`.
async fn stage_of(config: &Arc<PipelineConfig>, id: &str) -> Result<String, Box<Response>> {
    let (config, filter) = (
        config.clone(),
        Filter {
            id: Some(id.to_string()),
            ..Filter::default()
        },
    );
    match tokio::task::spawn_blocking(move || dlq::list(&config, &filter)).await {
        Ok(Ok(entries)) => match entries.first() {
            Some(entry) => Ok(entry.letter.origin.stage.clone()),
            None => Err(Box::new(error(
                StatusCode::NOT_FOUND,
                &format!("no dead letter with id {id}; GET /api/dlq lists them"),
            ))),
        },
        Ok(Err(why)) => Err(Box::new(error(
            StatusCode::BAD_GATEWAY,
            &format!("cannot read the dead letters: {why:#}"),
        ))),
        Err(join) => Err(Box::new(failed(&join))),
    }
}

async fn trace(State(config): State<Arc<PipelineConfig>>, Path(key): Path<String>) -> Response {
    match tokio::task::spawn_blocking(move || crate::trace::lookup(&config, &key)).await {
        Ok(Ok(trace)) => Json(trace).into_response(),
        Ok(Err(why)) => error(
            StatusCode::BAD_GATEWAY,
            &format!("cannot trace the key: {why:#}"),
        ),
        Err(join) => failed(&join),
    }
}

fn failed(join: &tokio::task::JoinError) -> Response {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        &format!("the Kafka reader failed: {join}"),
    )
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_seconds_by_the_hosts_clock() {
        let now = time::OffsetDateTime::parse(
            "2026-12-07T10:00:30Z",
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert_eq!(age("2026-12-07T10:00:00Z", now), Some(30.0));
        assert_eq!(age("2026-12-07T10:01:00Z", now), Some(0.0));
        assert_eq!(age("yesterday", now), None);
    }
}
