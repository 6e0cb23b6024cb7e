//! What one declared route or read model answers: an ingress endpoint hands a request to its
//! stage; a view answers the latest record of its topic for the key in the path, optionally
//! shaped by a stage's plugin.

use std::sync::{Arc, Mutex};

use serde_json::json;

use super::TopicView;
use crate::plugin::{CallError, Header, InputEvent, PluggedInstance};
use futures::future::BoxFuture;

use super::Reply;
use crate::event::headers::PATH_HEADER_PREFIX;

/// What handles the requests of a declared route (its stage's ingress).
pub trait Submit: Send + Sync {
    /// The answer to a request with these path parameters and body.
    fn submit<'a>(&'a self, params: &'a [(String, String)], body: &'a [u8])
    -> BoxFuture<'a, Reply>;
}

/// One `[[http.routes]]` entry, bound to what handles its requests.
pub struct IngressEndpoint {
    /// HTTP method (`POST`, `PUT`, `PATCH` or `DELETE`).
    pub method: String,
    /// Path with `{parameters}`.
    pub path: String,
    /// The path's parameters: when there are none the handler extracts none.
    pub params: Vec<String>,
    /// Handles its requests.
    pub handler: Arc<dyn Submit>,
}

/// A stage's plugin that shapes a read model's answers (`http.views.stage`).
pub struct ViewShaper {
    /// The stage, for messages.
    pub stage: String,
    /// `ce_type` of the events handed to it.
    pub event_type: String,
    /// Its own instance of the stage's plugin (it follows hot swaps); calls take microseconds.
    pub instance: Mutex<PluggedInstance>,
}

/// One `[[http.views]]` entry.
pub struct ViewEndpoint {
    /// Path with `{parameters}`.
    pub path: String,
    /// The parameter that holds the record key.
    pub key_param: String,
    /// The topic, for messages and as the shaping event's source.
    pub topic: String,
    /// The latest record per key of the topic.
    pub view: Arc<TopicView>,
    /// The plugin that shapes the answer, if any.
    pub shaper: Option<ViewShaper>,
}

impl ViewEndpoint {
    /// The answer to `GET` with these path parameters.
    pub async fn answer(&self, params: &[(String, String)]) -> Reply {
        let key = params
            .iter()
            .find(|(name, _)| name == &self.key_param)
            .map(|(_, value)| value.as_str())
            .unwrap_or_default();
        let latest = match self.view.get(key) {
            Ok(latest) => latest,
            // The local store fails: try again (never a wrong "not found").
            Err(failure) => return error(503, failure.to_string()),
        };
        let Some(shaper) = &self.shaper else {
            return match latest {
                Some(record) => Reply {
                    status: 200,
                    body: record,
                },
                None => not_found(format!("{} has no record for {key} (yet)", self.topic)),
            };
        };
        let event = InputEvent {
            id: format!("view:{}:{key}", self.path),
            event_type: shaper.event_type.clone(),
            key: Some(key.to_string()),
            payload: latest.unwrap_or(serde_json::Value::Null).to_string(),
            headers: params
                .iter()
                .map(|(name, value)| Header {
                    name: format!("{PATH_HEADER_PREFIX}{name}"),
                    value: value.clone(),
                })
                .collect(),
            topic: self.topic.clone(),
        };
        // Off the async worker: a plugin's WASI I/O runs `block_on` (see the ingress).
        let called = tokio::task::block_in_place(|| match shaper.instance.lock() {
            Ok(mut plugged) => Some(plugged.current().handle(&event)),
            Err(_) => None,
        });
        match called {
            None => error(
                500,
                format!("the plugin of stage {} is unavailable", shaper.stage),
            ),
            Some(Ok(outputs)) => match outputs.first() {
                None => not_found(format!("no answer for {key}")),
                Some(output) => match serde_json::from_str(&output.payload) {
                    Ok(body) => Reply { status: 200, body },
                    Err(e) => internal_error(
                        &shaper.stage,
                        &self.path,
                        &format!("answered with invalid JSON: {e}"),
                    ),
                },
            },
            Some(Err(CallError::Reject(message))) => not_found(message),
            Some(Err(CallError::Retry(message))) => error(503, message),
            Some(Err(CallError::Trap(message))) => {
                internal_error(&shaper.stage, &self.path, &message)
            }
        }
    }
}

/// A view's plugin failed: the client gets `500` with an id and no internals; the log gets the
/// failure (escaped) with the same id.
fn internal_error(stage: &str, path: &str, failure: &str) -> Reply {
    let id = uuid::Uuid::new_v4().to_string();
    tracing::error!(%stage, %path, %id, error = %crate::observe::escaped(failure),
        "view plugin failed; the client was answered 500 with this id");
    Reply {
        status: 500,
        body: json!({ "error": "internal error", "id": id }),
    }
}

fn not_found(message: String) -> Reply {
    error(404, message)
}

fn error(status: u16, message: String) -> Reply {
    Reply {
        status,
        body: json!({ "error": message }),
    }
}
