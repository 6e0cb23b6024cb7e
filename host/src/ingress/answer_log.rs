//! The ingress answers topic read as a log by every instance: how one idempotency key gets one
//! answer on every instance, before and after restarts.
//!
//! Before a new request is committed, its instance appends a **claim** (the request key and
//! its body's hash, under a record key of its own) to the key's partition of the answers topic
//! and reads that partition up to the claim. Every instance reads the same log in the same
//! order, so they all agree that the **first claim of a key wins**: its instance commits the
//! events and the answer (in one transaction, as before); every other request with the key gets
//! the winner's answer (same body) or `409` (another body), whichever instance it reaches and
//! whenever it comes. A loser publishes nothing, so no event is dropped downstream unseen.
//!
//! Chosen over routing each key to an owning instance (which needs a membership protocol and
//! forwarding between instances) and over reporting a conflict back from the first stage (the
//! losing client would already have its `202`): the log decides, at the price of one
//! acknowledged write and one read before a new request's transaction (a repeat of an answered
//! request is answered from the local copy at once).
//!
//! A claim is a commitment: a request that won its claim and then failed to commit (Kafka
//! away, the instance killed) leaves the key to requests with the same body, which take over
//! after [`TAKEOVER_WAIT`] without an answer; another body gets `409`. Claims expire with the
//! answers (`state.idempotency_retention`).
//!
//! Each table entry is stamped (see [`stamp`]): an answer under the request key, the first
//! claim under [`claim_slot`] of it. An answer outranks any claim, so a claim that compaction
//! or retention left behind never overturns an answer.

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::event::cloudevents;
use crate::kafka::KafkaClients;
use crate::state::Entry;
use crate::store::{IngressRecord, Table, stamp, unstamp};

/// `ce_type` of a claim record.
pub const CLAIM_TYPE: &str = "IngressClaim";
/// `ce_type` of an answer record.
pub const ANSWER_TYPE: &str = "IngressAnswer";
/// How long a request waits for the answer of an earlier claim with the same body (another
/// instance committing it) before it takes the claim over and commits the request itself.
pub const TAKEOVER_WAIT: Duration = Duration::from_secs(2);
/// Records applied to the table in one batch while following the topic.
const FOLLOW_BATCH: usize = 1_000;
/// How long a reading thread waits for a record before it looks at its stop flag again. A
/// record ends the wait at once, so this only bounds how late a thread notices that its log
/// was dropped (after which it writes nothing more: [`Following::apply`] looks at the flag
/// first, and nobody waits for the thread to end). At 100 ms the two threads of an idle host
/// woke twenty times a second.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// A request's claim on its key: the first one in the log wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The request's idempotency key.
    pub key: String,
    /// SHA-256 of the request's canonical JSON body.
    pub body_hash: String,
    /// Unique per claim: the instance's random id and a sequence number.
    pub claim_id: String,
    /// When it was claimed (unix ms).
    pub recorded_at_ms: u64,
}

/// What the answers topic says of a request key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Answered: the first committed request's answer.
    Answered(IngressRecord),
    /// Claimed and not answered yet: the first claim.
    Claimed(Claim),
    /// Neither.
    Open,
}

/// The table key under which the first claim of `key` is kept. Request keys never hold
/// control characters (the ingress refuses them), so it cannot be a request key.
pub fn claim_slot(key: &str) -> Vec<u8> {
    let mut slot = b"\0claim\0".to_vec();
    slot.extend_from_slice(key.as_bytes());
    slot
}

/// What the table says of `key`: its answer, else its first claim, else nothing.
pub fn standing(table: &Table, key: &str) -> anyhow::Result<Standing> {
    if let Some(value) = table.get(0, key.as_bytes())? {
        let record = serde_json::from_slice(unstamp(&value))
            .with_context(|| format!("the stored answer to request {key} is damaged"))?;
        return Ok(Standing::Answered(record));
    }
    if let Some(value) = table.get(0, &claim_slot(key))? {
        let claim = serde_json::from_slice(unstamp(&value))
            .with_context(|| format!("the stored claim on request {key} is damaged"))?;
        return Ok(Standing::Claimed(claim));
    }
    Ok(Standing::Open)
}

/// The `ce_type` of a record of the answers topic.
fn record_kind(message: &BorrowedMessage<'_>) -> Option<String> {
    cloudevents::header_pairs(message.headers())
        .into_iter()
        .find(|(name, _)| name == cloudevents::TYPE)
        .map(|(_, value)| value)
}

/// Turns answers-topic records into table entries, keeping only the first claim of each key
/// (a later claim of a claimed key is skipped, whether the earlier one is in the table or
/// among the entries made since the last [`EntryMaker::applied`]).
pub struct EntryMaker<'t> {
    table: &'t Table,
    claimed: RefCell<HashSet<Vec<u8>>>,
}

impl<'t> EntryMaker<'t> {
    /// Entries for `table`.
    pub fn new(table: &'t Table) -> Self {
        Self {
            table,
            claimed: RefCell::new(HashSet::new()),
        }
    }

    /// The entry `message` stands for, if any: an answer (or a tombstone) under its key, a
    /// claim under [`claim_slot`] of its request key when it is the first.
    pub fn entry(&self, message: &BorrowedMessage<'_>) -> Option<Entry> {
        let kind = record_kind(message);
        self.entry_of(message.key()?, message.payload(), kind.as_deref())
    }

    /// The entry of a record with `key`, `payload` and `ce_type` `kind`.
    fn entry_of(&self, key: &[u8], payload: Option<&[u8]>, kind: Option<&str>) -> Option<Entry> {
        let Some(payload) = payload else {
            return Some((key.to_vec(), None));
        };
        if kind == Some(CLAIM_TYPE) {
            let claim: Claim = serde_json::from_slice(payload).ok()?;
            let slot = claim_slot(&claim.key);
            let taken = self.claimed.borrow().contains(&slot)
                || matches!(self.table.get(0, &slot), Ok(Some(_)));
            if taken {
                return None;
            }
            self.claimed.borrow_mut().insert(slot.clone());
            return Some((slot, Some(stamp(claim.recorded_at_ms, payload))));
        }
        let answer: IngressRecord = serde_json::from_slice(payload).ok()?;
        Some((key.to_vec(), Some(stamp(answer.recorded_at_ms, payload))))
    }

    /// The entries made so far are in the table now.
    pub fn applied(&self) {
        self.claimed.borrow_mut().clear();
    }
}

/// Follows the answers topic into the table, from the table's checkpoints, for as long as it
/// lives, and tells waiters how far it has read.
///
/// Two readers follow it. Claims are written outside transactions and read at once
/// (`read_uncommitted`): a transaction left open on a partition (an instance killed while it
/// committed) holds committed readers back for up to the transaction timeout, and deciding a
/// claim must not wait for it. Answers are read committed (an aborted answer was never given),
/// and their reader moves the table's checkpoints.
pub struct AnswerLog {
    /// Per partition: the next offset the claims reader has not read.
    positions: Arc<Vec<AtomicI64>>,
    read: Arc<Notify>,
    stop: Arc<AtomicBool>,
    topic: String,
}

/// Which records a reader of the answers topic takes into the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reads {
    /// Claims, read uncommitted; no checkpoint.
    Claims,
    /// Answers (and tombstones), read committed; moves the checkpoints.
    Answers,
}

impl AnswerLog {
    /// Starts following `topic` (all `partitions`) into `table` on two threads of its own.
    pub fn follow(
        kafka: &KafkaClients,
        topic: &str,
        partitions: i32,
        table: Table,
    ) -> anyhow::Result<Self> {
        let mut assignment = TopicPartitionList::new();
        let mut positions = Vec::with_capacity(partitions.max(0) as usize);
        for partition in 0..partitions {
            let checkpoint = table.checkpoint(partition)?;
            let offset = checkpoint.map_or(Offset::Beginning, Offset::Offset);
            assignment.add_partition_offset(topic, partition, offset)?;
            positions.push(AtomicI64::new(checkpoint.unwrap_or(0)));
        }
        let log = Self {
            positions: Arc::new(positions),
            read: Arc::new(Notify::new()),
            stop: Arc::new(AtomicBool::new(false)),
            topic: topic.to_string(),
        };
        for reads in [Reads::Claims, Reads::Answers] {
            // Followers: they read for the ingress's lifetime, mostly with nothing to read.
            let consumer: BaseConsumer = match reads {
                Reads::Answers => kafka.follower("stagehost-reader").create(),
                Reads::Claims => kafka
                    .follower("stagehost-reader")
                    .set("isolation.level", "read_uncommitted")
                    .create(),
            }
            .context("cannot create a Kafka reader")?;
            consumer.assign(&assignment)?;
            let following = Following {
                consumer,
                reads,
                table: table.clone(),
                positions: log.positions.clone(),
                read: log.read.clone(),
                stop: log.stop.clone(),
                topic: topic.to_string(),
            };
            std::thread::Builder::new()
                .name(format!("answer-log-{reads:?}").to_lowercase())
                .spawn(move || following.run())
                .context("cannot start the answers reader")?;
        }
        Ok(log)
    }

    /// Waits until the table holds `partition` up to and including `offset`.
    pub async fn read_past(
        &self,
        partition: i32,
        offset: i64,
        patience: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + patience;
        loop {
            let read = self.read.notified();
            tokio::pin!(read);
            read.as_mut().enable();
            let position = self
                .positions
                .get(partition as usize)
                .map_or(i64::MIN, |p| p.load(Ordering::Acquire));
            if position > offset {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, read).await.is_err() {
                return Err(format!(
                    "the answers topic {}/{partition} was not read up to offset {offset} within {patience:?}",
                    self.topic
                ));
            }
        }
    }

    /// Waits until more of the topic is read, or `patience` passes.
    pub async fn read_more(&self, patience: Duration) {
        tokio::time::timeout(patience, self.read.notified())
            .await
            .ok();
    }
}

impl Drop for AnswerLog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// A reading thread.
struct Following {
    consumer: BaseConsumer,
    reads: Reads,
    table: Table,
    positions: Arc<Vec<AtomicI64>>,
    read: Arc<Notify>,
    stop: Arc<AtomicBool>,
    topic: String,
}

impl Following {
    fn run(self) {
        let maker = EntryMaker::new(&self.table);
        let mut warned = false;
        while !self.stop.load(Ordering::Acquire) {
            // Per partition: its entries and the next offset, in the order read.
            let mut batch: Vec<(i32, Vec<Entry>, i64)> = Vec::new();
            let mut records = 0;
            let mut wait = IDLE_WAIT;
            while records < FOLLOW_BATCH {
                match self.consumer.poll(wait) {
                    Some(Ok(message)) => {
                        records += 1;
                        let partition = message.partition();
                        let next = message.offset() + 1;
                        let claim = record_kind(&message).as_deref() == Some(CLAIM_TYPE);
                        let entry = if claim == (self.reads == Reads::Claims) {
                            maker.entry(&message)
                        } else {
                            None
                        };
                        match batch.iter_mut().find(|(p, _, _)| *p == partition) {
                            Some((_, entries, at)) => {
                                entries.extend(entry);
                                *at = next;
                            }
                            None => batch.push((partition, entry.into_iter().collect(), next)),
                        }
                    }
                    Some(Err(error)) => {
                        if !warned {
                            tracing::warn!(topic = %self.topic, %error, "cannot read the ingress answers topic; trying again");
                            warned = true;
                        }
                        break;
                    }
                    None => break,
                }
                wait = Duration::ZERO;
            }
            if batch.is_empty() {
                continue;
            }
            warned = false;
            for (partition, entries, next) in &batch {
                let checkpoint = (self.reads == Reads::Answers).then_some(*next);
                self.apply(*partition, entries, checkpoint);
                if self.reads == Reads::Claims
                    && let Some(position) = self.positions.get(*partition as usize)
                {
                    position.store(*next, Ordering::Release);
                }
            }
            maker.applied();
            self.read.notify_waiters();
        }
    }

    /// Writes `entries` of `partition` (and its checkpoint, when given), trying again while the
    /// store fails (a store that does not come back restarts the pipeline, and this thread with
    /// it).
    fn apply(&self, partition: i32, entries: &[Entry], checkpoint: Option<i64>) {
        let mut failures = 0u32;
        while !self.stop.load(Ordering::Acquire) {
            let writes = entries.iter().map(|(k, v)| (k.as_slice(), v.as_deref()));
            match self.table.apply(partition, writes, checkpoint) {
                Ok(()) => return,
                Err(error) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(topic = %self.topic, partition, %error, "cannot write the ingress answers into the local store; trying again");
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{LocalStore, Scope, unix_ms};

    fn claim(key: &str, hash: &str, id: &str) -> Vec<u8> {
        serde_json::to_vec(&Claim {
            key: key.into(),
            body_hash: hash.into(),
            claim_id: id.into(),
            recorded_at_ms: unix_ms(std::time::SystemTime::now()),
        })
        .unwrap()
    }

    fn answer(hash: &str) -> Vec<u8> {
        serde_json::to_vec(&IngressRecord {
            body_hash: hash.into(),
            status: 202,
            response: "{}".into(),
            recorded_at_ms: unix_ms(std::time::SystemTime::now()),
        })
        .unwrap()
    }

    fn apply(table: &Table, entries: Vec<Entry>) {
        let writes = entries.iter().map(|(k, v)| (k.as_slice(), v.as_deref()));
        table.apply(0, writes, None).unwrap();
    }

    #[test]
    fn the_first_claim_wins_within_a_batch_and_across_batches_and_an_answer_outranks_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let table = Table::new(&store, "answers:test", Scope::Topic);
        let maker = EntryMaker::new(&table);
        let first = maker.entry_of(b"c1", Some(&claim("k", "A", "c1")), Some(CLAIM_TYPE));
        let second = maker.entry_of(b"c2", Some(&claim("k", "B", "c2")), Some(CLAIM_TYPE));
        assert!(first.is_some());
        assert_eq!(second, None, "a later claim in the same batch is skipped");
        apply(&table, first.into_iter().collect());
        maker.applied();
        let third = maker.entry_of(b"c3", Some(&claim("k", "B", "c3")), Some(CLAIM_TYPE));
        assert_eq!(third, None, "a later claim in a later batch is skipped");
        match standing(&table, "k").unwrap() {
            Standing::Claimed(claim) => assert_eq!(claim.claim_id, "c1"),
            other => panic!("expected the first claim, got {other:?}"),
        }
        let answered = maker.entry_of(b"k", Some(&answer("A")), Some(ANSWER_TYPE));
        apply(&table, answered.into_iter().collect());
        match standing(&table, "k").unwrap() {
            Standing::Answered(record) => assert_eq!(record.body_hash, "A"),
            other => panic!("expected the answer, got {other:?}"),
        }
        assert_eq!(standing(&table, "other").unwrap(), Standing::Open);
    }

    #[test]
    fn a_claim_slot_is_never_a_request_key() {
        assert!(claim_slot("k").starts_with(b"\0claim\0"));
        assert_ne!(claim_slot("k"), b"k".to_vec());
    }
}
