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
//!   committed together (group commit) by one transactional producer. The local store keeps
//!   a copy of the topic (a [`Table`], caught up at start-up from its checkpoint, and written
//!   with each committed group), so a restarted instance knows every answer its predecessor
//!   committed and memory does not grow with them; answers older than
//!   `state.idempotency_retention` are forgotten (the topic deletes them, the table reads
//!   them as absent and prunes them). A new request first claims its key in the topic and
//!   goes on only if its claim is the first (see [`super::answer_log`]), so every instance
//!   gives a key the same one answer. The producer is supervised: after a fatal error,
//!   fencing, or a transaction that cannot be aborted it is rebuilt (a new
//!   `init_transactions`) with backoff, and requests meanwhile fail at once with `503`
//!   instead of waiting.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::{mpsc, oneshot};

use super::answer_log::{
    ANSWER_TYPE, AnswerLog, CLAIM_TYPE, Claim, EntryMaker, Standing, TAKEOVER_WAIT, standing,
};
use crate::event::cloudevents::CloudEvent;
use crate::health::Reporter;
use crate::kafka::{KafkaClients, OutRecord, Partitioner, Transaction, TxnError, publish_all};
use crate::state::catch_up;
use crate::store::{IngressRecord, LocalStore, Table, stamp, unix_ms};

/// Rounds of re-publishing before an at-least-once request fails.
const PUBLISH_ROUNDS: u32 = 3;
/// Most requests committed in one transaction.
const MAX_GROUP: usize = 512;

/// The ingress's memory of answers, and how events and answers are published.
pub enum Answers {
    /// At-least-once: answers in the local store, events through the shared producer.
    Local {
        /// The local store.
        store: LocalStore,
        /// The shared idempotent producer.
        producer: FutureProducer,
        /// The group-commit writer of answers.
        writer: mpsc::Sender<PendingAnswer>,
    },
    /// Exactly-once: answers in a compacted topic, in the events' transaction.
    Transactional(TransactionalAnswers),
}

/// What became of a request handed to [`Answers::publish`].
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

impl Answers {
    /// At-least-once answers in `store`, events through `producer`; starts the writer that
    /// records concurrent answers together.
    pub fn local(store: LocalStore, producer: FutureProducer) -> Self {
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
            Answers::Transactional(answers) => {
                anyhow::ensure!(
                    answers.restored.load(Ordering::Acquire),
                    "the ingress is still restoring its answers"
                );
                match standing(&answers.known, key).context("cannot read the ingress answers")? {
                    Standing::Answered(record) => Ok(Some(record)),
                    Standing::Claimed(_) | Standing::Open => Ok(None),
                }
            }
        }
    }

    /// Publishes the request's events and records its answer; both happen or neither does
    /// (exactly-once, and only if the request is the first to claim its key on any instance),
    /// or the answer is recorded only after the events are acknowledged.
    pub async fn publish(
        &self,
        key: &str,
        records: Vec<OutRecord>,
        answer: IngressRecord,
    ) -> Result<Published, String> {
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
                outcome
                    .map(|()| Published::Accepted)
                    .map_err(|error| format!("cannot record the answer ({error})"))
            }
            Answers::Transactional(answers) => answers.publish(key, records, answer).await,
        }
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

struct Submission {
    records: Vec<OutRecord>,
    answer: (String, IngressRecord),
    done: oneshot::Sender<Result<(), String>>,
}

/// Makes a transactional producer with its transactions initialised (blocking).
pub type ProducerFactory = Arc<dyn Fn() -> anyhow::Result<FutureProducer> + Send + Sync>;

/// Keys of requests handed to the committer and not finished yet.
type InFlightKeys = Arc<Mutex<HashSet<String>>>;

/// Answers kept in a compacted topic and committed with the events.
pub struct TransactionalAnswers {
    /// Committed answers by request key: the local copy of the answers topic.
    known: Table,
    /// Whether `known` has caught up with the topic since start.
    restored: Arc<AtomicBool>,
    /// Requests handed to the committer and not finished yet: a repeat of one of them (a
    /// client retrying after a timeout while the first try is still being committed) is
    /// refused instead of publishing the request a second time.
    in_flight: InFlightKeys,
    topic: String,
    /// The topic's partition count: where a key's claim and answer go.
    partitions: i32,
    /// The topic followed into `known`, once it is restored.
    log: Arc<OnceLock<AnswerLog>>,
    /// The shared idempotent producer, which writes claims (outside transactions, so every
    /// instance reads them at once).
    claims: FutureProducer,
    /// Random id of this instance's claims, and how many it made.
    claimant: String,
    claims_made: AtomicU64,
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
    /// Makes the first producer with `make`, then, in the background, catches `known` (an
    /// expiring, topic-scoped table) up with every committed answer and claim of `topic` (all
    /// its partitions), follows the topic from there on, and starts the committer, which
    /// reports to `health`. Until the answers are caught up (a failing store is tried again
    /// every second) lookups fail, so requests get `503`, and the ingress is unready. Claims
    /// are written with `claims`.
    pub async fn start(
        kafka: &KafkaClients,
        topic: &str,
        make: ProducerFactory,
        claims: FutureProducer,
        health: Reporter,
        known: Table,
    ) -> anyhow::Result<Self> {
        let partitions = {
            let (kafka, topic) = (kafka.clone(), topic.to_string());
            tokio::task::spawn_blocking(move || {
                crate::kafka::partition_count_of_new(&kafka, &topic)
            })
            .await??
        };
        let producer = tokio::task::block_in_place(|| make())?;
        let restored = Arc::new(AtomicBool::new(false));
        let in_flight = Arc::new(Mutex::new(HashSet::new()));
        let log = Arc::new(OnceLock::new());
        let (submissions, receiver) = mpsc::channel(4096);
        let restoring = Restoring {
            kafka: kafka.clone(),
            topic: topic.to_string(),
            partitions,
            restored: restored.clone(),
        };
        tokio::spawn({
            let (known, in_flight, log) = (known.clone(), in_flight.clone(), log.clone());
            async move {
                restoring.run(&known, &log, &health).await;
                commit_loop(producer, make, health, known, in_flight, receiver).await;
            }
        });
        Ok(Self {
            known,
            restored,
            in_flight,
            topic: topic.to_string(),
            partitions,
            log,
            claims,
            claimant: uuid::Uuid::new_v4().simple().to_string(),
            claims_made: AtomicU64::new(0),
            submissions,
        })
    }

    /// The headers of a record of the answers topic.
    fn headers(kind: &str, id: &str) -> crate::event::headers::RecordHeaders {
        CloudEvent {
            id: id.to_string(),
            event_type: kind.into(),
            source: "/stagehost/ingress".into(),
            time: crate::event::cloudevents::now_rfc3339(),
            plugin_version: None,
        }
        .to_headers([])
    }

    /// Claims `key` for a request with `body_hash` and reads the topic up to the claim: what
    /// the topic says of the key then.
    async fn claim(&self, key: &str, body_hash: &str, partition: i32) -> Result<Claimed, String> {
        let log = self
            .log
            .get()
            .ok_or("the ingress is still restoring its answers")?;
        let claim = Claim {
            key: key.to_string(),
            body_hash: body_hash.to_string(),
            claim_id: format!(
                "{}-{}",
                self.claimant,
                self.claims_made.fetch_add(1, Ordering::Relaxed)
            ),
            recorded_at_ms: unix_ms(SystemTime::now()),
        };
        let record = OutRecord {
            topic: self.topic.clone(),
            partition: Some(partition),
            key: Some(claim.claim_id.clone()),
            payload: Some(serde_json::to_vec(&claim).map_err(|e| e.to_string())?),
            headers: Self::headers(CLAIM_TYPE, &claim.claim_id),
            id: claim.claim_id.clone(),
        };
        let landed = publish_all(&self.claims, std::slice::from_ref(&record), 1)
            .await
            .map_err(|error| format!("cannot claim the request key ({error})"))?;
        let offset = landed.first().map_or(i64::MAX, |d| d.offset);
        log.read_past(partition, offset, CLAIM_PATIENCE).await?;
        let standing = standing(&self.known, key).map_err(|e| format!("{e:#}"))?;
        Ok(Claimed { claim, standing })
    }

    /// Waits up to [`TAKEOVER_WAIT`] for the answer to `key`.
    async fn answer_within_takeover(&self, key: &str) -> Result<Option<IngressRecord>, String> {
        let deadline = std::time::Instant::now() + TAKEOVER_WAIT;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            if let Standing::Answered(record) =
                standing(&self.known, key).map_err(|e| format!("{e:#}"))?
            {
                return Ok(Some(record));
            }
            if let Some(log) = self.log.get() {
                log.read_more(left.min(Duration::from_millis(100))).await;
            }
        }
        Ok(None)
    }

    async fn publish(
        &self,
        key: &str,
        mut records: Vec<OutRecord>,
        answer: IngressRecord,
    ) -> Result<Published, String> {
        let mut marked = InFlight {
            keys: self.in_flight.clone(),
            key: key.to_string(),
            handed_over: false,
        };
        if !lock(&self.in_flight).insert(key.to_string()) {
            marked.handed_over = true; // not ours to unmark
            return Err(IN_FLIGHT.to_string());
        }
        let partition = Partitioner::default().partition(Some(key), key, self.partitions);
        // The first claim of a key never changes, so what the local copy already knows of it
        // is final; only a key without a claim here needs one (a retry must not claim again).
        let known = standing(&self.known, key).map_err(|e| format!("{e:#}"))?;
        let standing = match known {
            Standing::Open => {
                let Claimed { claim, standing } =
                    self.claim(key, &answer.body_hash, partition).await?;
                match standing {
                    Standing::Claimed(first) if first.claim_id == claim.claim_id => None,
                    Standing::Open => {
                        return Err(format!(
                            "the claim {} on request {key} was not found in the answers topic",
                            claim.claim_id
                        ));
                    }
                    other => Some(other),
                }
            }
            other => Some(other),
        };
        match standing {
            None => {}
            Some(Standing::Answered(record)) => return Ok(Published::Earlier(record)),
            Some(Standing::Claimed(first)) if first.body_hash != answer.body_hash => {
                tracing::info!(key, first = %first.claim_id,
                    "request refused: its key was claimed first by a request with another body");
                return Ok(Published::Conflict);
            }
            // The same body claimed first by another instance: it may be committing it; wait a
            // while for its answer, then commit it here (the same event ids: the next stage
            // drops a repeat). By this instance: that try failed (it is not in flight), so it
            // is committed now.
            Some(Standing::Claimed(first)) if !first.claim_id.starts_with(&self.claimant) => {
                if let Some(record) = self.answer_within_takeover(key).await? {
                    return Ok(Published::Earlier(record));
                }
                tracing::info!(key, first = %first.claim_id,
                    "an earlier claim with the same body on another instance was not answered in time; committing the request here");
            }
            Some(Standing::Claimed(_)) => {}
            Some(Standing::Open) => unreachable!("an open key is claimed above"),
        }
        let payload = serde_json::to_vec(&answer).map_err(|e| e.to_string())?;
        let id = format!("answer:{key}");
        records.push(OutRecord {
            topic: self.topic.clone(),
            partition: Some(partition),
            key: Some(key.to_string()),
            payload: Some(payload),
            headers: Self::headers(ANSWER_TYPE, &id),
            id,
        });
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
            .map(|()| Published::Accepted)
    }
}

/// A claim, and what the answers topic said of its key once read up to it.
struct Claimed {
    claim: Claim,
    standing: Standing,
}

/// How long a request waits for the answers topic to be read up to its claim.
const CLAIM_PATIENCE: Duration = Duration::from_secs(5);

/// Catching the answers table up with the answers topic at start.
struct Restoring {
    kafka: KafkaClients,
    topic: String,
    partitions: i32,
    /// Set once every partition is caught up.
    restored: Arc<AtomicBool>,
}

impl Restoring {
    /// Catches `known` up with every partition, then follows the topic into it (`log`), trying
    /// again every second while it fails.
    async fn run(self, known: &Table, log: &OnceLock<AnswerLog>, health: &Reporter) {
        let started = std::time::Instant::now();
        let mut failures = 0u32;
        loop {
            let (kafka, topic, partitions, table) = (
                self.kafka.clone(),
                self.topic.clone(),
                self.partitions,
                known.clone(),
            );
            let caught_up = tokio::task::spawn_blocking(move || {
                let mut records = 0;
                for partition in 0..partitions {
                    let maker = EntryMaker::new(&table);
                    records += catch_up(&kafka, &topic, partition, &table, |m| maker.entry(m))
                        .with_context(|| {
                            format!("cannot read the ingress answers in {topic}/{partition}")
                        })?
                        .records;
                }
                let following = AnswerLog::follow(&kafka, &topic, partitions, table)?;
                anyhow::Ok((records, following))
            })
            .await
            .unwrap_or_else(|error| Err(anyhow::anyhow!("catching up panicked: {error}")));
            match caught_up {
                Ok((records, following)) => {
                    tracing::info!(topic = %self.topic, records,
                        elapsed_ms = started.elapsed().as_millis() as u64, "ingress answers caught up");
                    log.set(following).ok();
                    self.restored.store(true, Ordering::Release);
                    return;
                }
                Err(error) => {
                    failures += 1;
                    let error = format!("{error:#}");
                    if failures == 1 {
                        tracing::warn!(topic = %self.topic, %error, "cannot restore the ingress answers yet; trying again");
                    }
                    health.unready(format!("restoring its answers: {error}"));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// Why a repeat of a request still being committed is refused.
const IN_FLIGHT: &str =
    "an earlier request with this key is still being committed; try again shortly";

/// The committer's producer: working, or being rebuilt in the background.
enum Link {
    Up(Transaction<FutureProducer>),
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
    known: Table,
    in_flight: InFlightKeys,
    mut receiver: mpsc::Receiver<Submission>,
) {
    health.ok();
    let mut link = Link::Up(Transaction::new(producer));
    loop {
        match &mut link {
            Link::Up(txn) => {
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
                let committing = std::time::Instant::now();
                let result = commit_group(txn, &group).await;
                health.idle();
                tracing::debug!(
                    requests = group.len(),
                    commit_ms = committing.elapsed().as_secs_f64() * 1000.0,
                    "ingress transaction ended"
                );
                let outcome = match result {
                    Ok(()) => {
                        remember(&known, &group).await;
                        Ok(())
                    }
                    Err(failure) => {
                        tracing::warn!(error = %failure.message, kind = ?failure.kind, requests = group.len(), "ingress transaction failed");
                        if needs_new_producer(&failure) {
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
                            link = Link::Up(Transaction::new(producer));
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

/// Writes the answers of a committed group into the local copy of the answers topic. One
/// that cannot be written is only missing locally: a repeat of its request is published again
/// (with the same event ids, which the stages downstream drop).
async fn remember(known: &Table, group: &[Submission]) {
    let entries: Vec<(Vec<u8>, Vec<u8>)> = group
        .iter()
        .filter_map(|submission| {
            let (key, answer) = &submission.answer;
            let json = serde_json::to_vec(answer).ok()?;
            Some((key.as_bytes().to_vec(), stamp(answer.recorded_at_ms, &json)))
        })
        .collect();
    let table = known.clone();
    let written = tokio::task::spawn_blocking(move || {
        table.apply(
            0,
            entries
                .iter()
                .map(|(key, value)| (key.as_slice(), Some(value.as_slice()))),
            None,
        )
    })
    .await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, requests = group.len(),
            "cannot write committed ingress answers into the local store; a repeat of these requests is published again and dropped downstream"),
        Err(error) => tracing::warn!(%error, "writing ingress answers panicked"),
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

/// Whether the ingress replaces its producer after `failure`: when librdkafka says it cannot
/// go on, and also when records of the transaction timed out. An aborted transaction leaves
/// the producer usable by the book, but one whose records could not reach their leaders for
/// the whole transaction timeout keeps failing the same way: after a broker restart under load
/// (`make chaos`, two instances) both instances' ingress producers timed out every
/// transaction for five minutes while every stage, which starts a new producer after any
/// failed transaction, was back within seconds. A new producer reads fresh metadata; a record
/// the broker refused (too large, say) does not need one.
fn needs_new_producer(failure: &TxnError) -> bool {
    !failure.producer_usable()
        || failure
            .failed
            .iter()
            .any(|(_, code, _)| *code == Some(RDKafkaErrorCode::MessageTimedOut))
}

/// Publishes the events of a group of requests in one transaction.
async fn commit_group(
    txn: &mut Transaction<FutureProducer>,
    group: &[Submission],
) -> Result<(), TxnError> {
    for record in group.iter().flat_map(|s| &s.records) {
        txn.send(record).await?;
    }
    txn.commit(None).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::TxnErrorKind;

    fn failure(kind: TxnErrorKind, codes: &[RDKafkaErrorCode]) -> TxnError {
        TxnError {
            kind,
            message: "failed".into(),
            failed: codes
                .iter()
                .enumerate()
                .map(|(at, code)| (at, Some(*code), code.to_string()))
                .collect(),
        }
    }

    #[test]
    fn the_producer_is_replaced_when_it_cannot_go_on_or_its_records_timed_out() {
        assert!(needs_new_producer(&failure(TxnErrorKind::Fatal, &[])));
        assert!(needs_new_producer(&failure(TxnErrorKind::Fenced, &[])));
        assert!(needs_new_producer(&failure(
            TxnErrorKind::Retriable,
            &[RDKafkaErrorCode::MessageTimedOut]
        )));
        assert!(!needs_new_producer(&failure(
            TxnErrorKind::Retriable,
            &[RDKafkaErrorCode::MessageSizeTooLarge]
        )));
        assert!(!needs_new_producer(&failure(TxnErrorKind::Retriable, &[])));
    }
}
