//! The deduplicator: where a stage finds out that it processed an event id before, so a
//! repeat (an upstream at-least-once retry, the same request through two host instances, an
//! outside producer writing an id twice) is dropped instead of processed twice.
//!
//! - At-least-once: processed ids live in the local store ([`StateStore`]); an input's id is
//!   recorded there once its outputs are acknowledged.
//! - Exactly-once: processed ids live in a compacted topic (`<group>-processed`, one partition
//!   per input partition number), written in the same transaction as the input's outputs and
//!   offsets, so an id is processed if and only if its transaction committed. An instance that
//!   takes a partition over restores its ids from the topic before handling the partition's
//!   first event, so the check moves with the partition. Ids older than
//!   `state.idempotency_retention` are forgotten: the topic deletes them
//!   (`cleanup.policy=compact,delete`) and memory drops them. In memory an id is held as the
//!   first 128 bits of its SHA-256 (about 33 bytes an id instead of about 100; a collision is
//!   as unlikely as one of SHA-256 itself, so no crafted id can make a stage drop another).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;

use crate::kafka::{KafkaClients, OutRecord};
use crate::state::restore;
use crate::store::{StateStore, unix_ms};

/// Longest id kept as it is; a longer one (which a stage dead-letters) is kept as its digest.
const MAX_KEPT_ID_BYTES: usize = 512;

/// The key under which the deduplicator keeps `id`: the id itself, or `sha256:<hex>` of an
/// id too long to keep (a record key or store key of its size would not fit).
pub fn dedup_key(id: &str) -> Cow<'_, str> {
    use sha2::{Digest, Sha256};
    if id.len() <= MAX_KEPT_ID_BYTES {
        return Cow::Borrowed(id);
    }
    let digest: String = Sha256::digest(id.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Cow::Owned(format!("sha256:{digest}"))
}

/// How often the in-memory ids are scanned for expired ones.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The processed-id check of one stage.
pub enum Deduplicator {
    /// At-least-once: the local store.
    Local {
        /// The host's store.
        store: StateStore,
        /// The stage whose ids these are.
        stage: String,
    },
    /// Exactly-once: a compacted topic written in the stage's transactions.
    Transactional(ProcessedLog),
}

/// How an id is held in memory: the first 128 bits of its SHA-256.
type Digest = [u8; 16];

fn digest(id: &str) -> Digest {
    use sha2::{Digest as _, Sha256};
    let full = Sha256::digest(id.as_bytes());
    let mut short = [0u8; 16];
    short.copy_from_slice(&full[..16]);
    short
}

/// Processed ids of the partitions this instance owns, with their committed topic.
pub struct ProcessedLog {
    /// The compacted topic.
    pub topic: String,
    /// Kafka clients, for restoring.
    pub kafka: KafkaClients,
    /// How long an id is remembered.
    pub retention: Duration,
    /// Committed ids (their [`Digest`]) per input partition number, with when they were
    /// processed (unix ms).
    committed: HashMap<i32, HashMap<Digest, u64>>,
    /// Ids of the open transaction.
    pending: Vec<(i32, Digest, u64)>,
    last_prune: Instant,
}

impl ProcessedLog {
    /// An empty log for `topic`; partitions are restored when first seen.
    pub fn new(topic: String, kafka: KafkaClients, retention: Duration) -> Self {
        Self {
            topic,
            kafka,
            retention,
            committed: HashMap::new(),
            pending: Vec::new(),
            last_prune: Instant::now(),
        }
    }

    fn ensure_restored(&mut self, partition: i32) -> anyhow::Result<()> {
        if self.committed.contains_key(&partition) {
            return Ok(());
        }
        let started = Instant::now();
        let values = tokio::task::block_in_place(|| restore(&self.kafka, &self.topic, partition))
            .with_context(|| {
            format!(
                "cannot restore the processed ids of partition {partition} from {}",
                self.topic
            )
        })?;
        let oldest = self.oldest_kept();
        let ids: HashMap<Digest, u64> = values
            .into_iter()
            .filter_map(|(id, value)| {
                let at = std::str::from_utf8(&value).ok()?.parse::<u64>().ok()?;
                (at >= oldest).then(|| (digest(&id), at))
            })
            .collect();
        tracing::info!(topic = %self.topic, partition, ids = ids.len(),
            elapsed_ms = started.elapsed().as_millis() as u64, "processed ids restored");
        self.committed.insert(partition, ids);
        Ok(())
    }

    fn oldest_kept(&self) -> u64 {
        unix_ms(SystemTime::now()).saturating_sub(self.retention.as_millis() as u64)
    }

    fn prune(&mut self) {
        if self.last_prune.elapsed() < PRUNE_EVERY {
            return;
        }
        self.last_prune = Instant::now();
        let oldest = self.oldest_kept();
        for ids in self.committed.values_mut() {
            ids.retain(|_, at| *at >= oldest);
        }
    }
}

impl Deduplicator {
    /// For each `(partition, id)` of a batch, whether the stage processed that id before (in
    /// committed work, or earlier in the open work). Restores partitions seen for the first
    /// time.
    pub fn seen(&mut self, inputs: &[(i32, Cow<'_, str>)]) -> anyhow::Result<Vec<bool>> {
        match self {
            Deduplicator::Local { store, stage } => {
                let ids: Vec<&str> = inputs.iter().map(|(_, id)| id.as_ref()).collect();
                store
                    .processed_among(stage, &ids)
                    .context("cannot read the idempotency store")
            }
            Deduplicator::Transactional(log) => {
                for (partition, _) in inputs {
                    log.ensure_restored(*partition)?;
                }
                let open: HashSet<&Digest> = log.pending.iter().map(|(_, id, _)| id).collect();
                Ok(inputs
                    .iter()
                    .map(|(partition, id)| {
                        let id = digest(id);
                        open.contains(&id)
                            || log
                                .committed
                                .get(partition)
                                .is_some_and(|ids| ids.contains_key(&id))
                    })
                    .collect())
            }
        }
    }

    /// Records that the open work processed `id` (read from input partition `partition`):
    /// exactly-once returns the record that makes it durable with the transaction.
    pub fn record(&mut self, partition: i32, id: &str) -> Option<OutRecord> {
        let Deduplicator::Transactional(log) = self else {
            return None;
        };
        let at = unix_ms(SystemTime::now());
        log.pending.push((partition, digest(id), at));
        Some(OutRecord {
            topic: log.topic.clone(),
            partition: Some(partition),
            key: Some(id.to_string()),
            payload: Some(at.to_string().into_bytes()),
            headers: rdkafka::message::OwnedHeaders::new(),
            id: format!("processed:{id}"),
        })
    }

    /// The open transaction committed: its ids are processed.
    pub fn commit(&mut self) {
        if let Deduplicator::Transactional(log) = self {
            for (partition, id, at) in std::mem::take(&mut log.pending) {
                if let Some(ids) = log.committed.get_mut(&partition) {
                    ids.insert(id, at);
                }
            }
            log.prune();
        }
    }

    /// The open work was dropped: its ids were not processed.
    pub fn rollback(&mut self) {
        if let Deduplicator::Transactional(log) = self {
            log.pending.clear();
        }
    }

    /// Forgets a partition this instance no longer owns (its next owner restores it).
    pub fn forget(&mut self, partition: i32) {
        if let Deduplicator::Transactional(log) = self {
            log.committed.remove(&partition);
        }
    }

    /// How many ids are held in memory (exactly-once), for reports.
    pub fn held(&self) -> usize {
        match self {
            Deduplicator::Local { .. } => 0,
            Deduplicator::Transactional(log) => log.committed.values().map(HashMap::len).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys<'a>(pairs: &[(i32, &'a str)]) -> Vec<(i32, Cow<'a, str>)> {
        pairs
            .iter()
            .map(|(p, id)| (*p, Cow::Borrowed(*id)))
            .collect()
    }

    #[test]
    fn long_ids_are_kept_as_a_digest() {
        assert_eq!(dedup_key("short"), "short");
        let long = "x".repeat(10_000);
        let key = dedup_key(&long);
        assert!(key.starts_with("sha256:") && key.len() == 7 + 64, "{key}");
        assert_ne!(key, dedup_key(&"y".repeat(10_000)));
    }

    fn log_with(partition: i32, ids: &[(&str, u64)]) -> Deduplicator {
        let mut log = ProcessedLog::new(
            "t".into(),
            KafkaClients::plain("unused"),
            Duration::from_secs(3600),
        );
        log.committed.insert(
            partition,
            ids.iter().map(|(id, at)| (digest(id), *at)).collect(),
        );
        Deduplicator::Transactional(log)
    }

    #[test]
    fn an_id_is_seen_once_its_transaction_commits_and_not_after_a_rollback() {
        let now = unix_ms(SystemTime::now());
        let mut dedup = log_with(0, &[("old", now)]);
        assert_eq!(
            dedup.seen(&keys(&[(0, "old"), (0, "new")])).unwrap(),
            [true, false]
        );
        let record = dedup.record(0, "new").unwrap();
        assert_eq!(record.partition, Some(0));
        assert_eq!(record.key.as_deref(), Some("new"));
        assert_eq!(
            dedup.seen(&keys(&[(0, "new")])).unwrap(),
            [true],
            "repeat within the open work"
        );
        dedup.rollback();
        assert_eq!(
            dedup.seen(&keys(&[(0, "new")])).unwrap(),
            [false],
            "aborted: not processed"
        );
        dedup.record(0, "new");
        dedup.commit();
        assert_eq!(dedup.seen(&keys(&[(0, "new")])).unwrap(), [true]);
        assert_eq!(dedup.held(), 2);
        dedup.forget(0);
        assert_eq!(dedup.held(), 0);
    }

    #[test]
    fn ids_are_kept_per_partition() {
        let now = unix_ms(SystemTime::now());
        let mut dedup = log_with(0, &[("a", now)]);
        if let Deduplicator::Transactional(log) = &mut dedup {
            log.committed.insert(1, HashMap::new());
        }
        assert_eq!(dedup.seen(&keys(&[(1, "a")])).unwrap(), [false]);
    }

    #[test]
    fn expired_ids_are_pruned() {
        let now = unix_ms(SystemTime::now());
        let mut dedup = log_with(0, &[("expired", now - 7_200_000), ("fresh", now)]);
        if let Deduplicator::Transactional(log) = &mut dedup {
            log.last_prune = Instant::now() - PRUNE_EVERY * 2;
        }
        dedup.commit();
        assert_eq!(
            dedup.seen(&keys(&[(0, "expired"), (0, "fresh")])).unwrap(),
            [false, true]
        );
    }
}
