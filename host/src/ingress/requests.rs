//! The HTTP ingress stage: validates a request body against its route, answers repeats from
//! the durable record, runs the stage's plugin and publishes its outputs before answering.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::FutureExt;
use futures::future::BoxFuture;
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use rdkafka::producer::FutureProducer;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::answer_book::{AnswerBook, Published};
use crate::event::cloudevents;
use crate::event::dead_letter::Origin;
use crate::event::headers::PATH_HEADER_PREFIX;
use crate::http::{Reply, Submit};
use crate::kafka::{OutRecord, publish_all};
use crate::kpi::StageKpis;
use crate::observe::trace::EventSpan;
use crate::observe::{HostEvent, RepeatRequest, escaped};
use crate::plugin::PluggedInstance;
use crate::stage::{Failure, Input, StageContext};
use crate::store::{IngressRecord, unix_ms};

/// Stripes of the per-request-key lock: two requests with the same key never race.
const LOCK_STRIPES: usize = 64;
/// Rounds of re-publishing before the request fails with 503.
const PUBLISH_ROUNDS: u32 = 3;
/// Default of `http.request_timeout`.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of `http.max_id_bytes`.
const DEFAULT_MAX_ID_BYTES: usize = 256;

/// What an ingress needs to know about the route a request came by.
#[derive(Debug, Clone)]
pub struct IngressRoute {
    /// `METHOD path`, naming the route in messages and selecting its schema.
    pub name: String,
    /// Body field that identifies a request.
    pub id_field: String,
    /// Idempotency-key template: `{name}` placeholders of path parameters and `id_field`.
    pub key_template: String,
    /// `ce_type` given to the route's events.
    pub event_type: String,
}

impl IngressRoute {
    /// The idempotency key of a request with `id` and path parameters `params`.
    /// Placeholders are filled in one pass, so a value that looks like a placeholder stays as
    /// it is.
    fn key(&self, id: &str, params: &[(String, String)]) -> String {
        let mut key = String::with_capacity(self.key_template.len() + id.len());
        let mut rest = self.key_template.as_str();
        while let Some(open) = rest.find('{') {
            key.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                break;
            };
            let name = &after[..close];
            let value = if name == self.id_field {
                Some(id)
            } else {
                params
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.as_str())
            };
            match value {
                Some(value) => key.push_str(value),
                None => key.push_str(&rest[open..open + close + 2]),
            }
            rest = &after[close + 1..];
        }
        key.push_str(rest);
        key
    }
}

/// The ingress: one stage fed by HTTP requests (from one route or several).
pub struct Ingress {
    /// Routing, schemas and naming of the stage.
    pub context: Arc<StageContext>,
    /// The stage's plugin instance (calls take microseconds; a mutex is enough).
    pub instance: Mutex<PluggedInstance>,
    /// The shared producer (dead letters).
    pub producer: FutureProducer,
    /// Durable record of answers, and how events are published.
    pub answers: Box<dyn AnswerBook>,
    /// KPI recorder of the stage.
    pub kpis: StageKpis,
    /// Longest a request waits for its events to be committed before it gets `503`.
    pub request_timeout: Duration,
    /// Longest accepted idempotency key, in bytes.
    pub max_id_bytes: usize,
    locks: Vec<tokio::sync::Mutex<()>>,
}

impl Ingress {
    /// Builds the ingress for `context`.
    pub fn new(
        context: Arc<StageContext>,
        instance: PluggedInstance,
        producer: FutureProducer,
        answers: Box<dyn AnswerBook>,
        kpis: StageKpis,
    ) -> Self {
        Self {
            context,
            instance: Mutex::new(instance),
            producer,
            answers,
            kpis,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_id_bytes: DEFAULT_MAX_ID_BYTES,
            locks: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    /// Sets the request timeout and the longest idempotency key (`http.request_timeout`,
    /// `http.max_id_bytes`).
    pub fn with_limits(mut self, request_timeout: Duration, max_id_bytes: usize) -> Self {
        self.request_timeout = request_timeout;
        self.max_id_bytes = max_id_bytes;
        self
    }

    /// `reply`, or `503` with a message when it is not ready within the request timeout
    /// (Kafka unreachable, or requests queued behind others of the same key stripe).
    async fn within_timeout(&self, reply: impl std::future::Future<Output = Reply>) -> Reply {
        match tokio::time::timeout(self.request_timeout, reply).await {
            Ok(reply) => reply,
            Err(_) => Reply::error(
                503,
                format!(
                    "not answered within http.request_timeout ({:?}): is Kafka reachable? A repeat of this request gets the first answer if its events commit later",
                    self.request_timeout
                ),
            ),
        }
    }

    /// Handles one request to `route`, with its path parameters and body, and returns the
    /// answer, within the request timeout.
    pub async fn submit(
        &self,
        route: &IngressRoute,
        params: &[(String, String)],
        body: &[u8],
    ) -> Reply {
        let mut span = EventSpan::start(
            route.name.clone(),
            SpanKind::Server,
            [],
            vec![KeyValue::new(
                "stagehost.stage",
                self.context.name.to_string(),
            )],
        );
        let reply = self
            .within_timeout(self.submit_unbounded(route, params, body, span.as_ref()))
            .await;
        if let Some(mut span) = span.take() {
            if reply.status >= 500 {
                span.fail(&reply.body.to_string());
            }
            span.end(SystemTime::now());
        }
        reply
    }

    /// Handles one request; `span` (tracing on) is the request's: its plugin call and publish
    /// are its children, and the events it makes continue it.
    async fn submit_unbounded(
        &self,
        route: &IngressRoute,
        params: &[(String, String)],
        body: &[u8],
        span: Option<&EventSpan>,
    ) -> Reply {
        let started = Instant::now();
        let request = match self.parse(route, params, body) {
            Ok(request) => request,
            Err(reply) => return reply,
        };
        let key = request.key.as_str();
        let _guard = self.locks[stripe(key)].lock().await;
        let conflict = || {
            format!(
                "{} {} was already submitted with a different body",
                route.id_field, request.id
            )
        };
        if let Some(reply) = self.earlier_answer(key, &request.body_hash, conflict) {
            self.kpis.duplicate();
            answered_as_repeat(route, key, &reply);
            return reply;
        }
        let input = self.input_of(route, &request, params, body);
        let (records, version) = match self.run_plugin(&input, route, &request, span).await {
            Ok(made) => made,
            Err(reply) => return reply,
        };
        let events = records.len();
        let reply = accepted(params, &route.id_field, &request.id, &records);
        let answer = IngressRecord {
            body_hash: request.body_hash.clone(),
            status: reply.status,
            response: reply.body.to_string(),
            recorded_at_ms: unix_ms(SystemTime::now()),
        };
        let publishing = SystemTime::now();
        let refused = self
            .publish(key, records, answer, &request.body_hash, conflict)
            .await;
        if let Some(span) = span {
            span.child("publish", publishing, SystemTime::now());
        }
        if let Some(refused) = refused {
            answered_as_repeat(route, key, &refused);
            return refused;
        }
        self.kpis.processed(&version, events, started.elapsed());
        tracing::debug!(stage = %self.context.name, key, "accepted");
        reply
    }

    /// The stage's input for `request`: its path parameters become headers.
    fn input_of<'a>(
        &self,
        route: &IngressRoute,
        request: &'a Request,
        params: &[(String, String)],
        body: &'a [u8],
    ) -> Input<'a> {
        Input {
            id: cloudevents::ingress_id(&request.key),
            event_type: route.event_type.clone(),
            key: Some(&request.id),
            payload: body,
            headers: params
                .iter()
                .map(|(name, value)| (format!("{PATH_HEADER_PREFIX}{name}"), value.clone()))
                .collect(),
            origin: Origin {
                stage: self.context.name.to_string(),
                source_topic: crate::config::HTTP_INPUT.into(),
                partition: -1,
                offset: -1,
            },
        }
    }

    /// The request `body` to `route` with path parameters `params`, checked: valid JSON that
    /// fits the route's schema, with an id and an idempotency key it accepts; or the `400`.
    fn parse(
        &self,
        route: &IngressRoute,
        params: &[(String, String)],
        body: &[u8],
    ) -> Result<Request, Reply> {
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|error| Reply::error(400, format!("body is not valid JSON: {error}")))?;
        if let Err(error) = self.context.schemas.validate_ingress(&route.name, &value) {
            return Err(Reply::error(
                400,
                format!("body violates the schema of {}: {error}", route.name),
            ));
        }
        let id_field = route.id_field.as_str();
        let Some(id) = value
            .get(id_field)
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty())
        else {
            return Err(Reply::error(400, format!("{id_field} is missing or empty")));
        };
        if id.len() > self.max_id_bytes {
            return Err(Reply::error(
                400,
                format!(
                    "{id_field} is {} bytes long; at most {} are accepted (http.max_id_bytes)",
                    id.len(),
                    self.max_id_bytes
                ),
            ));
        }
        if let Some((name, _)) = params.iter().find(|(_, value)| value.is_empty()) {
            return Err(Reply::error(400, format!("path parameter {name} is empty")));
        }
        let key = route.key(id, params);
        if key.chars().any(char::is_control) {
            return Err(Reply::error(
                400,
                format!("{id_field} and path parameters must not contain control characters"),
            ));
        }
        Ok(Request {
            id: id.to_string(),
            key,
            body_hash: canonical_hash(&value),
        })
    }

    /// Runs the stage's plugin on `input`: the records to publish (continuing the request's
    /// `span`, whose child the call is) and the plugin's version; or the answer when the plugin
    /// refused the request (`400`) or failed (dead-lettered).
    async fn run_plugin(
        &self,
        input: &Input<'_>,
        route: &IngressRoute,
        request: &Request,
        span: Option<&EventSpan>,
    ) -> Result<(Vec<OutRecord>, String), Reply> {
        let called = SystemTime::now();
        let mut made = self.call_plugin(input, route, request).await;
        if let Some(span) = span {
            span.child("plugin", called, SystemTime::now());
            if let Ok((records, _)) = &mut made {
                records.iter_mut().for_each(|r| span.inject(&mut r.headers));
            }
        }
        made
    }

    async fn call_plugin(
        &self,
        input: &Input<'_>,
        route: &IngressRoute,
        request: &Request,
    ) -> Result<(Vec<OutRecord>, String), Reply> {
        // Off the async worker: a plugin's WASI I/O runs `block_on` (see the runner).
        let called = tokio::task::block_in_place(|| match self.instance.lock() {
            Ok(mut plugged) => {
                let instance = plugged.current();
                Some((
                    self.context.process(instance, input, false, None),
                    instance.version().to_string(),
                ))
            }
            Err(_) => None,
        });
        let Some((result, version)) = called else {
            return Err(Reply::error(
                500,
                "the stage's plugin instance is unavailable",
            ));
        };
        match result {
            Ok(processed) => Ok((processed.records, version)),
            Err(failure) if failure.is_client_error() => Err(Reply {
                status: 400,
                body: json!({ "error": failure.reason(), route.id_field.as_str(): request.id }),
            }),
            Err(failure) => Err(self
                .dead_letter(input, &failure, &version, &request.key)
                .await),
        }
    }

    /// Publishes the request's events with its `answer`; the answer to give instead when an
    /// earlier request with the key was answered first, or publishing failed (`503`).
    async fn publish(
        &self,
        key: &str,
        records: Vec<OutRecord>,
        answer: IngressRecord,
        body_hash: &str,
        conflict: impl FnOnce() -> String,
    ) -> Option<Reply> {
        match self.answers.publish(key, records, answer).await {
            Ok(Published::Accepted) => None,
            Ok(Published::Earlier(record)) => {
                self.kpis.duplicate();
                Some(earlier_reply(&record, body_hash, conflict))
            }
            Ok(Published::Conflict) => {
                self.kpis.duplicate();
                Some(Reply::error(409, conflict()))
            }
            Err(error) => {
                // Debug only: while Kafka is away every request fails the same way; the
                // ingress's readiness (`/readyz`, logged when it changes) says why.
                tracing::debug!(%error, key, "cannot publish an ingress event");
                Some(Reply::error(
                    503,
                    format!("could not publish the event; try again ({error})"),
                ))
            }
        }
    }

    /// The answer to give a request that was seen before: the first answer again for the same
    /// body, `409` with `conflict()` for another body, `503` if the answers cannot be read.
    /// `None` for a new request.
    fn earlier_answer(
        &self,
        key: &str,
        body_hash: &str,
        conflict: impl FnOnce() -> String,
    ) -> Option<Reply> {
        match self.answers.lookup(key) {
            Ok(Some(record)) => Some(earlier_reply(&record, body_hash, conflict)),
            Ok(None) => None,
            Err(error) => {
                // Debug only: the store logs its failure and recovery once, and `/readyz` names it.
                tracing::debug!(%error, "cannot read the idempotency store");
                Some(Reply::error(
                    503,
                    "the idempotency store is unavailable; try again",
                ))
            }
        }
    }

    /// Dead-letters the input the plugin failed on and answers the client without internals:
    /// a short message and the dead letter's id, which the host log (with the whole failure,
    /// escaped) and the dead letter carry too. The plugin refusing its stage's `config` is the
    /// operator's mistake: `503`, logged as such; any other failure `500`.
    async fn dead_letter(
        &self,
        input: &Input<'_>,
        failure: &Failure,
        version: &str,
        key: &str,
    ) -> Reply {
        let letter = self.context.dead_letter(input, failure, version, 1);
        let published = publish_all(
            &self.producer,
            std::slice::from_ref(&letter),
            PUBLISH_ROUNDS,
        )
        .await;
        self.kpis.dead_lettered(version);
        let (stage, dead_lettered) = (&self.context.name, published.is_ok());
        let (key, error) = (escaped(key), escaped(&failure.reason()));
        let id = letter.id;
        if failure.is_config_error() {
            tracing::error!(%stage, %key, %id, dead_lettered, %error,
                "the stage's plugin refuses its config table in pipeline.toml: an operator's mistake, not the client's; fix the config (stagehost check shows it), then replay the dead letters");
            return Reply {
                status: 503,
                body: json!({ "error": "the service is misconfigured; try again later", "id": id }),
            };
        }
        tracing::error!(%stage, %key, %id, dead_lettered, %error,
            "ingress stage failed; the client was answered 500 with this id");
        Reply {
            status: 500,
            body: json!({ "error": "internal error", "id": id }),
        }
    }
}

/// Reports `reply` to a request whose key was answered before: the earlier answer, or `409`
/// (`503` is no answer: the record could not be read or written).
fn answered_as_repeat(route: &IngressRoute, key: &str, reply: &Reply) {
    if reply.status != 503 {
        let path = route
            .name
            .split_once(' ')
            .map_or(route.name.as_str(), |(_, path)| path);
        RepeatRequest {
            route: path,
            key,
            conflict: reply.status == 409,
        }
        .emit();
    }
}

/// The answer to a request whose key was answered before: that answer again for the same
/// body, `409` with `conflict()` for another.
fn earlier_reply(
    record: &IngressRecord,
    body_hash: &str,
    conflict: impl FnOnce() -> String,
) -> Reply {
    if record.body_hash == body_hash {
        Reply {
            status: record.status,
            body: serde_json::from_str(&record.response).unwrap_or(json!({})),
        }
    } else {
        Reply::error(409, conflict())
    }
}

fn stripe(key: &str) -> usize {
    let digest = Sha256::digest(key.as_bytes());
    usize::from(digest[0]) % LOCK_STRIPES
}

/// SHA-256 of the body's canonical JSON (object keys sorted, no insignificant whitespace).
fn canonical_hash(value: &serde_json::Value) -> String {
    let canonical = serde_json::to_vec(value).unwrap_or_default();
    Sha256::digest(&canonical)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A request that passed its checks.
struct Request {
    /// Its id (the route's id field).
    id: String,
    /// Its idempotency key.
    key: String,
    /// The hash of its body, whatever the key order and whitespace.
    body_hash: String,
}

/// The `202` of an accepted request: its path parameters, its id, and its events' ids.
fn accepted(params: &[(String, String)], id_field: &str, id: &str, records: &[OutRecord]) -> Reply {
    let event_ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
    let mut body = serde_json::Map::new();
    for (name, value) in params {
        body.insert(name.clone(), json!(value));
    }
    body.insert(id_field.to_string(), json!(id));
    body.insert("status".into(), json!("accepted"));
    body.insert("event_ids".into(), json!(event_ids));
    Reply {
        status: 202,
        body: body.into(),
    }
}

/// A route bound to its stage's ingress: what the HTTP server hands a request to.
pub struct RouteIngress {
    /// The ingress of the route's stage (shared by every route of that stage).
    pub ingress: Arc<Ingress>,
    /// Schema, id field, idempotency key and event type of the route.
    pub route: IngressRoute,
}

impl Submit for RouteIngress {
    fn submit<'a>(
        &'a self,
        params: &'a [(String, String)],
        body: &'a [u8],
    ) -> BoxFuture<'a, Reply> {
        self.ingress.submit(&self.route, params, body).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_fill_parameters_and_the_id() {
        let route = IngressRoute {
            name: "POST /things/{thing}/refill".into(),
            id_field: "refill_id".into(),
            key_template: "refill/{thing}/{refill_id}".into(),
            event_type: "Refill".into(),
        };
        let params = [("thing".to_string(), "t-1".to_string())];
        assert_eq!(route.key("r-9", &params), "refill/t-1/r-9");
        let plain = IngressRoute {
            key_template: "{refill_id}".into(),
            ..route
        };
        assert_eq!(plain.key("r-9", &params), "r-9");
        let tricky = [("thing".to_string(), "{refill_id}".to_string())];
        let scoped = IngressRoute {
            key_template: "refill/{thing}/{refill_id}".into(),
            ..plain
        };
        assert_eq!(scoped.key("r-9", &tricky), "refill/{refill_id}/r-9");
    }

    #[test]
    fn canonical_hash_ignores_key_order_and_whitespace() {
        let a: serde_json::Value = serde_json::from_str(r#"{"a":1,"b":[1,2]}"#).unwrap();
        let b: serde_json::Value = serde_json::from_str("{ \"b\": [1, 2],\n \"a\": 1 }").unwrap();
        let c: serde_json::Value = serde_json::from_str(r#"{"a":2,"b":[1,2]}"#).unwrap();
        assert_eq!(canonical_hash(&a), canonical_hash(&b));
        assert_ne!(canonical_hash(&a), canonical_hash(&c));
    }
}
