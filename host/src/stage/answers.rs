//! Where the HTTP ingress remembers its answers, so a repeated request is answered again
//! without publishing again.
//!
//! - At-least-once: in the local store (`fjall`), written after the events are acknowledged;
//!   concurrent requests' answers share one durable write (group commit) off the async
//!   workers.
//! - Exactly-once: in a compacted Kafka topic, written in the same transaction as the events,
//!   so an answer exists if and only if its events were committed. Concurrent requests are
//!   committed together (group commit) by one transactional producer. The topic is read back
//!   at start-up, so a restarted instance knows every answer its predecessor committed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use rdkafka::producer::{FutureProducer, Producer};
use tokio::sync::{mpsc, oneshot};

use crate::event::cloudevents::CloudEvent;
use crate::kafka::{OutRecord, acknowledged, enqueue, publish_all};
use crate::state::restore;
use crate::store::{IngressRecord, StateStore};

/// Rounds of re-publishing before an at-least-once request fails.
const PUBLISH_ROUNDS: u32 = 3;
/// Most requests committed in one transaction.
const MAX_GROUP: usize = 512;
/// How long a transactional call may block.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

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
            Answers::Local { store, .. } => store.ingress_record(key),
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
                if let Err(error) = outcome {
                    // The events are out; a repeat would publish the same ids, which are dropped.
                    tracing::warn!(%error, order_id = key, "cannot record the ingress answer");
                }
                Ok(())
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
    done: oneshot::Sender<Result<(), String>>,
}

/// Answers kept in a compacted topic and committed with the events.
pub struct TransactionalAnswers {
    known: Mutex<HashMap<String, IngressRecord>>,
    topic: String,
    submissions: mpsc::Sender<Submission>,
}

impl TransactionalAnswers {
    /// Reads every committed answer of `topic` (all `partitions`), then starts the committer
    /// with `producer`, whose transactions are already initialised.
    pub async fn start(
        brokers: &str,
        topic: &str,
        partitions: i32,
        producer: FutureProducer,
    ) -> anyhow::Result<Self> {
        let mut known = HashMap::new();
        for partition in 0..partitions {
            let values = tokio::task::block_in_place(|| restore(brokers, topic, partition))
                .with_context(|| {
                    format!("cannot read the ingress answers in {topic}/{partition}")
                })?;
            for (key, value) in values {
                if let Ok(record) = serde_json::from_slice::<IngressRecord>(&value) {
                    known.insert(key, record);
                }
            }
        }
        tracing::info!(topic, answers = known.len(), "ingress answers restored");
        let (submissions, receiver) = mpsc::channel(4096);
        tokio::spawn(commit_loop(producer, receiver));
        Ok(Self {
            known: Mutex::new(known),
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
        let (done, result) = oneshot::channel();
        self.submissions
            .send(Submission { records, done })
            .await
            .map_err(|_| "the ingress committer has stopped".to_string())?;
        result
            .await
            .map_err(|_| "the ingress committer has stopped".to_string())??;
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_string(), answer);
        Ok(())
    }
}

/// Commits queued requests together: one transaction for everything waiting.
async fn commit_loop(producer: FutureProducer, mut receiver: mpsc::Receiver<Submission>) {
    while let Some(first) = receiver.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match receiver.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let result = commit_group(&producer, &group).await;
        if let Err(error) = &result {
            tracing::warn!(%error, requests = group.len(), "ingress transaction failed");
        }
        for submission in group {
            submission.done.send(result.clone()).ok();
        }
    }
}

async fn commit_group(producer: &FutureProducer, group: &[Submission]) -> Result<(), String> {
    producer.begin_transaction().map_err(|e| e.to_string())?;
    let mut deliveries = Vec::new();
    for record in group.iter().flat_map(|s| &s.records) {
        match enqueue(producer, record).await {
            Ok(delivery) => deliveries.push(delivery),
            Err(error) => {
                abort(producer);
                return Err(error.to_string());
            }
        }
    }
    if let Err(error) = acknowledged(deliveries).await {
        abort(producer);
        return Err(error);
    }
    match tokio::task::block_in_place(|| producer.commit_transaction(TXN_TIMEOUT)) {
        Ok(()) => Ok(()),
        Err(error) => {
            abort(producer);
            Err(format!("could not commit the events ({error})"))
        }
    }
}

/// Aborts the open transaction, trying again while the broker is unreachable.
fn abort(producer: &FutureProducer) {
    for attempt in 1.. {
        match tokio::task::block_in_place(|| producer.abort_transaction(TXN_TIMEOUT)) {
            Ok(()) => return,
            Err(error) if attempt < 20 => {
                tracing::warn!(%error, attempt, "cannot abort the ingress transaction yet");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(error) => {
                tracing::error!(%error, "cannot abort the ingress transaction; giving up");
                return;
            }
        }
    }
}
