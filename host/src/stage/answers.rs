//! Where the HTTP ingress remembers its answers, so a repeated request is answered again
//! without publishing again.
//!
//! - At-least-once: in the local store (`fjall`), written after the events are acknowledged;
//!   concurrent requests' answers share one durable write (group commit) off the async
//!   workers. The ingress never waits for a failed store: while it is down (a full or failing
//!   `state.dir`, until it is reopened) the lookup fails and the request gets `503` before
//!   anything is published, and an answer that cannot be written turns its `202` into a `503`.
//! - Exactly-once: in a compacted Kafka topic, written in the same transaction as the events,
//!   so an answer exists if and only if its events were committed. Concurrent requests are
//!   committed together (group commit) by one transactional producer. The topic is read back
//!   at start-up, so a restarted instance knows every answer its predecessor committed. The
//!   producer is supervised: after a fatal error, fencing, or a transaction that cannot be
//!   aborted it is rebuilt (a new `init_transactions`) with backoff, and requests meanwhile
//!   fail at once with `503` instead of waiting.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rdkafka::producer::{FutureProducer, Producer};
use tokio::sync::{mpsc, oneshot};

use crate::event::cloudevents::CloudEvent;
use crate::health::Reporter;
use crate::kafka::{KafkaClients, OutRecord, acknowledged, enqueue, publish_all};
use crate::state::restore;
use crate::store::{IngressRecord, StateStore};

/// Rounds of re-publishing before an at-least-once request fails.
const PUBLISH_ROUNDS: u32 = 3;
/// Most requests committed in one transaction.
const MAX_GROUP: usize = 512;
/// How long a transactional call may block.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an abort may block before the producer is rebuilt instead.
const ABORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The ingress's memory of answers, and how events and answers are published.
pub enum Answers {
    /// At-least-once: answers in the local store, events through the shared producer.
    Local {
        /// The local store.
        store: StateStore,
        /// The shared idempotent producer.
        producer: FutureProducer,
        /// The group-commit writer of answers.
        writer: mpsc::Sender<PendingAnswer>,
    },
    /// Exactly-once: answers in a compacted topic, in the events' transaction.
    Transactional(TransactionalAnswers),
}

/// An answer waiting for its durable write, and who to tell when it is done.
pub struct PendingAnswer {
    key: String,
    answer: IngressRecord,
    done: oneshot::Sender<Result<(), String>>,
}

impl Answers {
    /// At-least-once answers in `store`, events through `producer`; starts the writer that
    /// records concurrent answers together.
    pub fn local(store: StateStore, producer: FutureProducer) -> Self {
        let (writer, pending) = mpsc::channel(MAX_GROUP * 4);
        tokio::spawn(write_answers(store.clone(), pending));
        Answers::Local {
            store,
            producer,
            writer,
        }
    }

    /// The recorded answer to request `key`.
    pub fn lookup(&self, key: &str) -> anyhow::Result<Option<IngressRecord>> {
        match self {
            Answers::Local { store, .. } => Ok(store.ingress_record(key)?),
            Answers::Transactional(answers) => Ok(answers
                .known
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(key)
                .cloned()),
        }
    }

    /// Publishes the request's events and records its answer; both happen or neither does
    /// (exactly-once), or the answer is recorded only after the events are acknowledged.
    pub async fn publish(
        &self,
        key: &str,
        records: Vec<OutRecord>,
        answer: IngressRecord,
    ) -> Result<(), String> {
        match self {
            Answers::Local {
                producer, writer, ..
            } => {
                publish_all(producer, &records, PUBLISH_ROUNDS).await?;
                let (done, written) = oneshot::channel();
                let pending = PendingAnswer {
                    key: key.to_string(),
                    answer,
                    done,
                };
                let outcome = match writer.send(pending).await {
                    Ok(()) => written
                        .await
                        .unwrap_or_else(|_| Err("the answer writer stopped".into())),
                    Err(_) => Err("the answer writer stopped".into()),
                };
                // The events are out but a repeat would not be answered from the record: say so
                // (never a 202 that was not recorded). A repeat publishes the same ids again,
                // which the next stage drops.
                outcome.map_err(|error| format!("cannot record the answer ({error})"))
            }
            Answers::Transactional(answers) => answers.publish(key, records, answer).await,
        }
    }
}

/// Writes the answers that queue up while the previous write runs, in one transaction each.
async fn write_answers(store: StateStore, mut pending: mpsc::Receiver<PendingAnswer>) {
    while let Some(first) = pending.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match pending.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let entries: Vec<(String, IngressRecord)> = group
            .iter()
            .map(|p| (p.key.clone(), p.answer.clone()))
            .collect();
        let writing = store.clone();
        let result = match tokio::task::spawn_blocking(move || {
            writing.put_ingress_records(&entries)
        })
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(format!("{error:#}")),
            Err(error) => Err(format!("the answer write panicked: {error}")),
        };
        for answer in group {
            answer.done.send(result.clone()).ok();
        }
    }
}

struct Submission {
    records: Vec<OutRecord>,
    answer: (String, IngressRecord),
    done: oneshot::Sender<Result<(), String>>,
}

/// Makes a transactional producer with its transactions initialised (blocking).
pub type ProducerFactory = Arc<dyn Fn() -> anyhow::Result<FutureProducer> + Send + Sync>;

/// Committed answers by request key.
type KnownAnswers = Arc<Mutex<HashMap<String, IngressRecord>>>;
/// Keys of requests handed to the committer and not finished yet.
type InFlightKeys = Arc<Mutex<HashSet<String>>>;

/// Answers kept in a compacted topic and committed with the events.
pub struct TransactionalAnswers {
    known: KnownAnswers,
    /// Requests handed to the committer and not finished yet: a repeat of one of them (a
    /// client retrying after a timeout while the first try is still being committed) is
    /// refused instead of publishing the order a second time.
    in_flight: InFlightKeys,
    topic: String,
    submissions: mpsc::Sender<Submission>,
}

/// A request key marked in flight; unmarked on drop unless the committer took it over.
struct InFlight {
    keys: InFlightKeys,
    key: String,
    handed_over: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.handed_over {
            lock(&self.keys).remove(&self.key);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl TransactionalAnswers {
    /// Reads every committed answer of `topic` (all `partitions`), then starts the committer,
    /// which makes its producers with `make` and reports to `health`.
    pub async fn start(
        kafka: &KafkaClients,
        topic: &str,
        partitions: i32,
        make: ProducerFactory,
        health: Reporter,
        retention: Duration,
    ) -> anyhow::Result<Self> {
        let mut known = HashMap::new();
        for partition in 0..partitions {
            let values = tokio::task::block_in_place(|| restore(kafka, topic, partition))
                .with_context(|| {
                    format!("cannot read the ingress answers in {topic}/{partition}")
                })?;
            for (key, value) in values {
                if let Ok(record) = serde_json::from_slice::<IngressRecord>(&value) {
                    known.insert(key, record);
                }
            }
        }
        forget_expired(&mut known, retention);
        tracing::info!(topic, answers = known.len(), "ingress answers restored");
        let producer = tokio::task::block_in_place(|| make())?;
        let known = Arc::new(Mutex::new(known));
        let in_flight = Arc::new(Mutex::new(HashSet::new()));
        let (submissions, receiver) = mpsc::channel(4096);
        tokio::spawn(commit_loop(
            producer,
            make,
            health,
            (known.clone(), retention),
            in_flight.clone(),
            receiver,
        ));
        Ok(Self {
            known,
            in_flight,
            topic: topic.to_string(),
            submissions,
        })
    }

    async fn publish(
        &self,
        key: &str,
        mut records: Vec<OutRecord>,
        answer: IngressRecord,
    ) -> Result<(), String> {
        let payload = serde_json::to_vec(&answer).map_err(|e| e.to_string())?;
        records.push(OutRecord {
            topic: self.topic.clone(),
            partition: None,
            key: Some(key.to_string()),
            payload: Some(payload),
            headers: CloudEvent {
                id: format!("answer:{key}"),
                event_type: "IngressAnswer".into(),
                source: "/stagehost/ingress".into(),
                time: crate::event::cloudevents::now_rfc3339(),
                plugin_version: None,
            }
            .to_headers([]),
            id: format!("answer:{key}"),
        });
        let mut marked = InFlight {
            keys: self.in_flight.clone(),
            key: key.to_string(),
            handed_over: false,
        };
        if !lock(&self.in_flight).insert(key.to_string()) {
            marked.handed_over = true; // not ours to unmark
            return Err(IN_FLIGHT.to_string());
        }
        let (done, result) = oneshot::channel();
        let submission = Submission {
            records,
            answer: (key.to_string(), answer),
            done,
        };
        self.submissions
            .send(submission)
            .await
            .map_err(|_| "the ingress committer has stopped".to_string())?;
        marked.handed_over = true;
        result
            .await
            .map_err(|_| "the ingress committer has stopped".to_string())?
    }
}

/// How often the committer forgets answers older than the retention.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Forgets the answers recorded more than `retention` ago (`state.idempotency_retention`; the
/// answers topic deletes them too), so the map does not grow with every order ever taken. A
/// repeat of a forgotten request is taken as a new one.
fn forget_expired(known: &mut HashMap<String, IngressRecord>, retention: Duration) {
    let oldest = crate::store::unix_ms(std::time::SystemTime::now())
        .saturating_sub(retention.as_millis() as u64);
    known.retain(|_, answer| answer.recorded_at_ms >= oldest);
}

/// Why a repeat of a request still being committed is refused.
const IN_FLIGHT: &str =
    "an earlier request with this key is still being committed; try again shortly";

/// The committer's producer: working, or being rebuilt in the background.
enum Link {
    Up(FutureProducer),
    Down {
        rebuilding: tokio::task::JoinHandle<anyhow::Result<FutureProducer>>,
        failures: u32,
    },
}

/// Commits queued requests together: one transaction for everything waiting. A transaction
/// that fails and cannot be cleanly aborted (or a fatal, fenced producer) takes the producer
/// down; it is rebuilt with backoff while requests are refused at once.
async fn commit_loop(
    producer: FutureProducer,
    make: ProducerFactory,
    health: Reporter,
    (known, retention): (KnownAnswers, Duration),
    in_flight: InFlightKeys,
    mut receiver: mpsc::Receiver<Submission>,
) {
    health.ok();
    let mut link = Link::Up(producer);
    let mut last_prune = std::time::Instant::now();
    loop {
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = std::time::Instant::now();
            forget_expired(&mut lock(&known), retention);
        }
        match &mut link {
            Link::Up(producer) => {
                let Some(first) = receiver.recv().await else {
                    break;
                };
                let mut group = vec![first];
                while group.len() < MAX_GROUP {
                    match receiver.try_recv() {
                        Ok(next) => group.push(next),
                        Err(_) => break,
                    }
                }
                health.busy();
                let result = commit_group(producer, &group).await;
                health.idle();
                let outcome = match result {
                    Ok(()) => {
                        let mut known = known.lock().unwrap_or_else(|p| p.into_inner());
                        for submission in &group {
                            known.insert(submission.answer.0.clone(), submission.answer.1.clone());
                        }
                        Ok(())
                    }
                    Err(failure) => {
                        tracing::warn!(error = %failure.message, requests = group.len(), usable = failure.usable, "ingress transaction failed");
                        if !failure.usable {
                            health.unready(format!(
                                "cannot publish: {}; reconnecting",
                                failure.message
                            ));
                            let Link::Up(broken) = std::mem::replace(
                                &mut link,
                                Link::Down {
                                    rebuilding: rebuild(make.clone(), 0),
                                    failures: 0,
                                },
                            ) else {
                                unreachable!("the link was up")
                            };
                            tokio::task::spawn_blocking(move || drop(broken));
                        }
                        Err(failure.message)
                    }
                };
                let mut flying = lock(&in_flight);
                for submission in group {
                    flying.remove(&submission.answer.0);
                    submission.done.send(outcome.clone()).ok();
                }
            }
            Link::Down {
                rebuilding,
                failures,
            } => {
                tokio::select! {
                    built = &mut *rebuilding => match built {
                        Ok(Ok(producer)) => {
                            tracing::info!("ingress producer rebuilt");
                            health.ok();
                            link = Link::Up(producer);
                        }
                        result => {
                            let error = match result {
                                Ok(Err(error)) => format!("{error:#}"),
                                Err(error) => error.to_string(),
                                Ok(Ok(_)) => unreachable!("handled above"),
                            };
                            *failures += 1;
                            tracing::warn!(%error, failures = *failures, "cannot rebuild the ingress producer yet");
                            health.unready(format!("cannot publish: {error}; reconnecting"));
                            *rebuilding = rebuild(make.clone(), *failures);
                        }
                    },
                    submission = receiver.recv() => match submission {
                        Some(submission) => {
                            lock(&in_flight).remove(&submission.answer.0);
                            submission.done.send(Err(
                                "the ingress is reconnecting to Kafka; try again".to_string(),
                            )).ok();
                        }
                        None => break,
                    },
                }
            }
        }
    }
}

/// Makes a new producer in the background, after a backoff that grows with `failures`.
fn rebuild(
    make: ProducerFactory,
    failures: u32,
) -> tokio::task::JoinHandle<anyhow::Result<FutureProducer>> {
    let pause = crate::backoff::jittered(
        Duration::from_millis(200),
        Duration::from_secs(10),
        failures,
    );
    tokio::spawn(async move {
        tokio::time::sleep(pause).await;
        tokio::task::spawn_blocking(move || make())
            .await
            .map_err(|error| anyhow::anyhow!("building the producer panicked: {error}"))?
    })
}

/// Why a group's transaction failed, and whether the producer can run the next one.
struct GroupFailure {
    message: String,
    /// The transaction was aborted cleanly: the producer is still usable.
    usable: bool,
}

async fn commit_group(producer: &FutureProducer, group: &[Submission]) -> Result<(), GroupFailure> {
    let unusable = |message: String| GroupFailure {
        message,
        usable: false,
    };
    producer
        .begin_transaction()
        .map_err(|e| unusable(format!("cannot begin a transaction ({e})")))?;
    let mut deliveries = Vec::new();
    for record in group.iter().flat_map(|s| &s.records) {
        match enqueue(producer, record).await {
            Ok(delivery) => deliveries.push(delivery),
            Err(error) => return Err(abort(producer, error.to_string())),
        }
    }
    if let Err(error) = acknowledged(deliveries).await {
        return Err(abort(producer, error));
    }
    match tokio::task::block_in_place(|| producer.commit_transaction(TXN_TIMEOUT)) {
        Ok(()) => Ok(()),
        Err(error) => Err(abort(
            producer,
            format!("could not commit the events ({error})"),
        )),
    }
}

/// Aborts the open transaction after `cause`; the producer stays usable only if that worked.
fn abort(producer: &FutureProducer, cause: String) -> GroupFailure {
    match tokio::task::block_in_place(|| producer.abort_transaction(ABORT_TIMEOUT)) {
        Ok(()) => GroupFailure {
            message: cause,
            usable: true,
        },
        Err(error) => GroupFailure {
            message: format!("{cause}; the transaction cannot be aborted ({error})"),
            usable: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(recorded_at_ms: u64) -> IngressRecord {
        IngressRecord {
            body_hash: "h".into(),
            status: 202,
            response: "{}".into(),
            recorded_at_ms,
        }
    }

    #[test]
    fn answers_older_than_the_retention_are_forgotten() {
        let now = crate::store::unix_ms(std::time::SystemTime::now());
        let mut known = HashMap::from([
            ("old".to_string(), answer(now - 7_200_000)),
            ("new".to_string(), answer(now)),
        ]);
        forget_expired(&mut known, Duration::from_secs(3600));
        assert!(known.contains_key("new"));
        assert!(!known.contains_key("old"));
    }
}
