//! The deduplicator: where a stage finds out that it processed an event id before, so a
//! repeat (an upstream at-least-once retry, the same request through two host instances, an
//! outside producer writing an id twice) is dropped instead of processed twice.
//!
//! - At-least-once: processed ids live in the local store ([`LocalStore`]); an input's id is
//!   recorded there once its outputs are acknowledged.
//! - Exactly-once: processed ids live in a compacted topic (`<group>-processed`, one partition
//!   per input partition number), written in the same transaction as the input's outputs and
//!   offsets, so an id is processed if and only if its transaction committed. The local store
//!   keeps a copy of the topic (a [`Table`], caught up from its checkpoint before a
//!   partition's first event, and written with each committed transaction), so the check
//!   moves with the partition and memory does not grow with the ids. Ids older than
//!   `state.idempotency_retention` are forgotten: the topic deletes them
//!   (`cleanup.policy=compact,delete`) and the table reads them as absent and prunes them. In
//!   the table an id is held as the first 128 bits of its SHA-256 (a collision is as unlikely
//!   as one of SHA-256 itself, so no crafted id can make a stage drop another).

use std::borrow::Cow;
use std::collections::HashSet;
use std::time::SystemTime;

use anyhow::Context;
use rdkafka::message::Message;

use crate::event::headers::RecordHeaders;
use crate::kafka::{KafkaClients, OutRecord};
use crate::state::catch_up;
use crate::store::{LocalStore, Table, stamp, unix_ms};

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

/// The processed-id check of one stage.
pub enum Deduplicator {
    /// At-least-once: the local store.
    Local {
        /// The host's store.
        store: LocalStore,
        /// The stage whose ids these are.
        stage: String,
    },
    /// Exactly-once: a compacted topic written in the stage's transactions.
    Transactional(ProcessedLog),
}

/// How an id is held in the table: the first 128 bits of its SHA-256.
type Digest = [u8; 16];

fn digest(id: &str) -> Digest {
    use sha2::{Digest as _, Sha256};
    let full = Sha256::digest(id.as_bytes());
    let mut short = [0u8; 16];
    short.copy_from_slice(&full[..16]);
    short
}

/// The compacted topic where an exactly-once stage of group `group` keeps its processed ids
/// (partition = input partition).
pub fn processed_topic(group: &str) -> String {
    format!("{group}-processed")
}

/// Processed ids of the partitions this instance owns: the committed ones in the local copy
/// of their topic, the open transaction's in memory.
pub struct ProcessedLog {
    /// The compacted topic.
    pub topic: String,
    /// Kafka clients, for catching up.
    pub kafka: KafkaClients,
    /// The local copy of the topic: id digest → when it was processed ([`stamp`]).
    table: Table,
    /// Partitions caught up with the topic since this instance took them.
    restored: HashSet<i32>,
    /// Ids of the open transaction.
    pending: Vec<(i32, Digest, u64)>,
}

impl ProcessedLog {
    /// A log of `topic` copied into `table` (an expiring, partition-scoped table); partitions
    /// are caught up when first seen.
    pub fn new(topic: String, kafka: KafkaClients, table: Table) -> Self {
        Self {
            topic,
            kafka,
            table,
            restored: HashSet::new(),
            pending: Vec::new(),
        }
    }

    fn ensure_restored(&mut self, partition: i32) -> anyhow::Result<()> {
        if self.restored.contains(&partition) {
            return Ok(());
        }
        let caught_up = tokio::task::block_in_place(|| {
            catch_up(
                &self.kafka,
                &self.topic,
                partition,
                &self.table,
                |message| {
                    let id = std::str::from_utf8(message.key()?).ok()?;
                    let value = match message.payload() {
                        Some(at) => {
                            let at = std::str::from_utf8(at).ok()?.parse::<u64>().ok()?;
                            Some(stamp(at, &[]))
                        }
                        None => None,
                    };
                    Some((digest(id).to_vec(), value))
                },
            )
        })
        .with_context(|| {
            format!(
                "cannot restore the processed ids of partition {partition} from {}",
                self.topic
            )
        })?;
        tracing::info!(topic = %self.topic, partition, records = caught_up.records,
            from = ?caught_up.from, to = caught_up.to,
            elapsed_ms = caught_up.elapsed.as_millis() as u64, "processed ids caught up");
        self.restored.insert(partition);
        Ok(())
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
                let open: HashSet<(i32, Digest)> = log
                    .pending
                    .iter()
                    .map(|(partition, id, _)| (*partition, *id))
                    .collect();
                inputs
                    .iter()
                    .map(|(partition, id)| {
                        let id = digest(id);
                        if open.contains(&(*partition, id)) {
                            return Ok(true);
                        }
                        Ok(log
                            .table
                            .get(*partition, &id)
                            .context("cannot read the processed ids")?
                            .is_some())
                    })
                    .collect()
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
            headers: RecordHeaders::new(),
            id: format!("processed:{id}"),
        })
    }

    /// The open work is safe: its ids are processed. At-least-once writes `fresh` (the ids it
    /// handled for the first time) into the store, and fails when it cannot (the offsets are
    /// then not stored, so the work is handled again). Exactly-once, the ids committed with the
    /// transaction go into the local copy; one that cannot take them is caught up from the
    /// topic (which has them) before it is read again.
    pub fn commit(&mut self, fresh: &HashSet<String>) -> anyhow::Result<()> {
        if let Deduplicator::Local { store, stage } = self
            && !fresh.is_empty()
        {
            tokio::task::block_in_place(|| {
                store.mark_processed(stage, fresh.iter().map(String::as_str))
            })
            .context("cannot write the idempotency store")?;
        }
        if let Deduplicator::Transactional(log) = self {
            let pending = std::mem::take(&mut log.pending);
            let mut by_partition: std::collections::BTreeMap<i32, Vec<(Digest, Vec<u8>)>> =
                Default::default();
            for (partition, id, at) in pending {
                by_partition
                    .entry(partition)
                    .or_default()
                    .push((id, stamp(at, &[])));
            }
            for (partition, ids) in by_partition {
                let writes = ids
                    .iter()
                    .map(|(id, value)| (&id[..], Some(value.as_slice())));
                if let Err(error) = log.table.apply(partition, writes, None) {
                    tracing::warn!(topic = %log.topic, %error,
                        "cannot write processed ids into the local store; they are read back from the topic");
                    log.restored.clear();
                }
            }
        }
        Ok(())
    }

    /// The open work was dropped: its ids were not processed.
    pub fn rollback(&mut self) {
        if let Deduplicator::Transactional(log) = self {
            log.pending.clear();
        }
    }

    /// Forgets a partition this instance no longer owns (its ids stay on disk, caught up from
    /// their checkpoint if the partition comes back).
    pub fn forget(&mut self, partition: i32) {
        if let Deduplicator::Transactional(log) = self {
            log.restored.remove(&partition);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Scope;
    use std::time::Duration;

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

    /// A transactional deduplicator whose partitions 0 and 1 count as caught up, holding
    /// `ids` (id, processed at) in partition 0.
    fn log_with(store: &LocalStore, ids: &[(&str, u64)]) -> Deduplicator {
        let table = Table::expiring(
            store,
            "processed:t",
            Scope::Partition,
            Duration::from_secs(3600),
        );
        let values: Vec<([u8; 16], Vec<u8>)> = ids
            .iter()
            .map(|(id, at)| (digest(id), stamp(*at, &[])))
            .collect();
        table
            .apply(
                0,
                values.iter().map(|(id, v)| (&id[..], Some(v.as_slice()))),
                None,
            )
            .unwrap();
        let mut log = ProcessedLog::new("t".into(), KafkaClients::plain("unused"), table);
        log.restored.extend([0, 1]);
        Deduplicator::Transactional(log)
    }

    #[test]
    fn an_id_is_seen_once_its_transaction_commits_and_not_after_a_rollback() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let now = unix_ms(SystemTime::now());
        let mut dedup = log_with(&store, &[("old", now)]);
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
        dedup.commit(&HashSet::new()).unwrap();
        assert_eq!(dedup.seen(&keys(&[(0, "new")])).unwrap(), [true]);
    }

    #[test]
    fn ids_are_kept_per_partition() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let now = unix_ms(SystemTime::now());
        let mut dedup = log_with(&store, &[("a", now)]);
        assert_eq!(dedup.seen(&keys(&[(1, "a")])).unwrap(), [false]);
        dedup.record(1, "b");
        assert_eq!(
            dedup.seen(&keys(&[(0, "b")])).unwrap(),
            [false],
            "open work is per partition too"
        );
    }

    #[test]
    fn expired_ids_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let now = unix_ms(SystemTime::now());
        let mut dedup = log_with(&store, &[("expired", now - 7_200_000), ("fresh", now)]);
        assert_eq!(
            dedup.seen(&keys(&[(0, "expired"), (0, "fresh")])).unwrap(),
            [false, true]
        );
    }
}
