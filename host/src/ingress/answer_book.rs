//! Where the HTTP ingress remembers its answers, so a repeated request is answered again
//! without publishing again: the [`AnswerBook`] its guarantee gives it.
//!
//! - At-least-once ([`LocalAnswers`]): in the local store (`fjall`), written after the events
//!   are acknowledged; concurrent requests' answers share one durable write (group commit)
//!   off the async workers. The ingress never waits for a failed store: while it is down (a
//!   full or failing `state.dir`, until it is reopened) the lookup fails and the request gets
//!   `503` before anything is published, and an answer that cannot be written turns its `202`
//!   into a `503`.
//! - Exactly-once ([`super::TransactionalAnswers`]): in a compacted Kafka topic, written in
//!   the same transaction as the events (see [`super::group_commit`]).

use futures::FutureExt;
use futures::future::BoxFuture;
use rdkafka::producer::FutureProducer;
use tokio::sync::{mpsc, oneshot};

use crate::kafka::{OutRecord, publish_all};
use crate::store::{IngressRecord, LocalStore};

/// Rounds of re-publishing before an at-least-once request fails.
const PUBLISH_ROUNDS: u32 = 3;
/// Most answers written at once.
const MAX_GROUP: usize = 512;

/// The ingress's memory of answers, and how a request's events and answer are published.
pub trait AnswerBook: Send + Sync {
    /// The recorded answer to request `key`.
    fn lookup(&self, key: &str) -> anyhow::Result<Option<IngressRecord>>;

    /// Publishes the request's events and records its answer; both happen or neither does
    /// (exactly-once, and only if the request is the first to claim its key on any instance),
    /// or the answer is recorded only after the events are acknowledged (at-least-once).
    fn publish<'a>(
        &'a self,
        key: &'a str,
        records: Vec<OutRecord>,
        answer: IngressRecord,
    ) -> BoxFuture<'a, Result<Published, String>>;
}

/// What became of a request handed to [`AnswerBook::publish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// Its events are published and its answer recorded.
    Accepted,
    /// An earlier request with the key was answered first: its answer (the same body gets it
    /// again, another body `409`). Nothing was published.
    Earlier(IngressRecord),
    /// An earlier request with the key and another body claimed it first. Nothing was
    /// published.
    Conflict,
}

/// An answer waiting for its durable write, and who to tell when it is done.
pub struct PendingAnswer {
    key: String,
    answer: IngressRecord,
    done: oneshot::Sender<Result<(), String>>,
}

/// At-least-once answers: in the local store, events through the shared producer.
pub struct LocalAnswers {
    /// The local store.
    store: LocalStore,
    /// The shared idempotent producer.
    producer: FutureProducer,
    /// The group-commit writer of answers.
    writer: mpsc::Sender<PendingAnswer>,
}

impl LocalAnswers {
    /// Answers in `store`, events through `producer`; starts the writer that records
    /// concurrent answers together.
    pub fn new(store: LocalStore, producer: FutureProducer) -> Self {
        let (writer, pending) = mpsc::channel(MAX_GROUP * 4);
        tokio::spawn(write_answers(store.clone(), pending));
        Self {
            store,
            producer,
            writer,
        }
    }
}

impl AnswerBook for LocalAnswers {
    fn lookup(&self, key: &str) -> anyhow::Result<Option<IngressRecord>> {
        Ok(self.store.ingress_record(key)?)
    }

    fn publish<'a>(
        &'a self,
        key: &'a str,
        records: Vec<OutRecord>,
        answer: IngressRecord,
    ) -> BoxFuture<'a, Result<Published, String>> {
        async move {
            publish_all(&self.producer, &records, PUBLISH_ROUNDS).await?;
            let (done, written) = oneshot::channel();
            let pending = PendingAnswer {
                key: key.to_string(),
                answer,
                done,
            };
            let outcome = match self.writer.send(pending).await {
                Ok(()) => written
                    .await
                    .unwrap_or_else(|_| Err("the answer writer stopped".into())),
                Err(_) => Err("the answer writer stopped".into()),
            };
            // The events are out but a repeat would not be answered from the record: say so
            // (never a 202 that was not recorded). A repeat publishes the same ids again,
            // which the next stage drops.
            outcome
                .map(|()| Published::Accepted)
                .map_err(|error| format!("cannot record the answer ({error})"))
        }
        .boxed()
    }
}

/// Writes the answers that queue up while the previous write runs, in one transaction each.
async fn write_answers(store: LocalStore, mut pending: mpsc::Receiver<PendingAnswer>) {
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
