//! Exactly-once answers of the HTTP ingress: in a compacted Kafka topic, written in the same
//! transaction as the events (by [`super::group_commit`]), so an answer exists if and only if
//! its events were committed. The local store keeps a copy of the topic (a [`Table`], caught
//! up at start-up from its checkpoint, and written with each committed group), so a restarted
//! instance knows every answer its predecessor committed and memory does not grow with them;
//! answers older than `state.idempotency_retention` are forgotten (the topic deletes them, the
//! table reads them as absent and prunes them). A new request first claims its key in the
//! topic and goes on only if its claim is the first (see [`super::answer_log`]), so every
//! instance gives a key the same one answer.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use futures::FutureExt;
use futures::future::BoxFuture;
use rdkafka::producer::FutureProducer;
use tokio::sync::{mpsc, oneshot};

use super::answer_book::{AnswerBook, Published};
use super::answer_log::{
    ANSWER_TYPE, AnswerLog, CLAIM_TYPE, Claim, EntryMaker, Standing, TAKEOVER_WAIT, standing,
};
use super::group_commit::{
    IN_FLIGHT, InFlightKeys, IngressPool, PoolParts, Submission, commit_loop, lock, make_producers,
};
use crate::config::MAX_INGRESS_PRODUCERS;
use crate::event::cloudevents::CloudEvent;
use crate::health::Reporter;
use crate::kafka::{KafkaClients, OutRecord, Partitioner, publish_all};
use crate::state::catch_up;
use crate::store::{IngressRecord, Table, unix_ms};
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

impl TransactionalAnswers {
    /// Makes the pool's transactional producers (fencing the ids of a
    /// predecessor's other ones; slot 0 must be made), then, in the background, catches
    /// `known` (an expiring, topic-scoped table) up with every committed answer and claim of
    /// `topic` (all its partitions), follows the topic from there on, and starts the committer
    /// on them (see [`super::group_commit`]), which reports
    /// to `health`. Until the answers are caught up (a failing store is tried again every
    /// second) lookups fail, so requests get `503`, and the ingress is unready. Claims are
    /// written with `claims`.
    pub async fn start(
        kafka: &KafkaClients,
        topic: &str,
        pool: IngressPool,
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
        let IngressPool {
            make,
            producers,
            in_process,
        } = pool;
        let mut others =
            tokio::task::block_in_place(|| make_producers(&make, producers, MAX_INGRESS_PRODUCERS));
        let producer = others.remove(0)?;
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
                let parts = PoolParts {
                    make,
                    in_process,
                    health,
                    known,
                    in_flight,
                };
                commit_loop(producer, others, parts, receiver).await;
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

    async fn claim_and_publish(
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
        if let Some(earlier) = self.first_claim(key, &answer.body_hash, partition).await? {
            return Ok(earlier);
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

    /// Whether this request may commit the key: `None` when its claim (or an earlier one of
    /// this instance with the same body, or one of another instance left unanswered) is the
    /// first; otherwise what became of the request (answered earlier, or claimed by another
    /// body).
    async fn first_claim(
        &self,
        key: &str,
        body_hash: &str,
        partition: i32,
    ) -> Result<Option<Published>, String> {
        // The first claim of a key never changes, so what the local copy already knows of it
        // is final; only a key without a claim here needs one (a retry must not claim again).
        let known = standing(&self.known, key).map_err(|e| format!("{e:#}"))?;
        let standing = match known {
            Standing::Open => {
                let Claimed { claim, standing } = self.claim(key, body_hash, partition).await?;
                match standing {
                    Standing::Claimed(first) if first.claim_id == claim.claim_id => {
                        return Ok(None);
                    }
                    Standing::Open => {
                        return Err(format!(
                            "the claim {} on request {key} was not found in the answers topic",
                            claim.claim_id
                        ));
                    }
                    other => other,
                }
            }
            other => other,
        };
        match standing {
            Standing::Answered(record) => Ok(Some(Published::Earlier(record))),
            Standing::Claimed(first) if first.body_hash != body_hash => {
                tracing::info!(key, first = %first.claim_id,
                    "request refused: its key was claimed first by a request with another body");
                Ok(Some(Published::Conflict))
            }
            // The same body claimed first by another instance: it may be committing it; wait a
            // while for its answer, then commit it here (the same event ids: the next stage
            // drops a repeat). By this instance: that try failed (it is not in flight), so it
            // is committed now.
            Standing::Claimed(first) if !first.claim_id.starts_with(&self.claimant) => {
                if let Some(record) = self.answer_within_takeover(key).await? {
                    return Ok(Some(Published::Earlier(record)));
                }
                tracing::info!(key, first = %first.claim_id,
                    "an earlier claim with the same body on another instance was not answered in time; committing the request here");
                Ok(None)
            }
            Standing::Claimed(_) => Ok(None),
            Standing::Open => unreachable!("an open key is claimed above"),
        }
    }
}

impl AnswerBook for TransactionalAnswers {
    fn lookup(&self, key: &str) -> anyhow::Result<Option<IngressRecord>> {
        anyhow::ensure!(
            self.restored.load(Ordering::Acquire),
            "the ingress is still restoring its answers"
        );
        match standing(&self.known, key).context("cannot read the ingress answers")? {
            Standing::Answered(record) => Ok(Some(record)),
            Standing::Claimed(_) | Standing::Open => Ok(None),
        }
    }

    fn publish<'a>(
        &'a self,
        key: &'a str,
        records: Vec<OutRecord>,
        answer: IngressRecord,
    ) -> BoxFuture<'a, Result<Published, String>> {
        self.claim_and_publish(key, records, answer).boxed()
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
