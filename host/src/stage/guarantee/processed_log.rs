//! The processed ids of an exactly-once stage. They live in a topic (`<group>-processed`, one
//! partition per input partition number), written in the same transaction as the work that
//! processed them, so an id is processed if and only if its transaction committed. A
//! transaction writes one record per input partition it read, listing every id it processed
//! there (`{"at": <unix ms>, "ids": [...]}`, split when it would pass [`MAX_BATCH_BYTES`]),
//! not one record per input: the broker's cost per order is mostly records. The local store
//! keeps a copy of the topic (a [`Table`] of single ids, caught up from its checkpoint before a
//! partition's first event and written with each committed transaction), so the check moves
//! with the partition and memory does not grow with the ids. Ids older than
//! `state.idempotency_retention` are forgotten: the topic deletes its records after that long
//! (`cleanup.policy=compact,delete`; a batch's key is unique, so compaction keeps every batch)
//! and the table reads them as absent and prunes them. In the table an id is held as the first
//! 128 bits of its SHA-256 (a collision is as unlikely as one of SHA-256 itself, so no crafted
//! id can make a stage drop another). Records of the earlier layout (the id as key, the time
//! as payload) are still read.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::time::SystemTime;

use anyhow::Context;
use rdkafka::message::Message;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::contract::ProcessedIds;
use crate::event::headers::RecordHeaders;
use crate::kafka::{KafkaClients, OutRecord};
use crate::state::{Entry, catch_up};
use crate::store::{Table, stamp, unix_ms};

/// The largest payload of one record of processed ids (about 2,000 ids of 20 bytes); a
/// transaction's ids of one partition take as many records as they need.
pub const MAX_BATCH_BYTES: usize = 64 * 1024;

/// How an id is held in the table: the first 128 bits of its SHA-256.
type Digest = [u8; 16];

fn digest(id: &str) -> Digest {
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

/// One record of the topic: ids processed by one transaction in one partition.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct IdBatch<'a> {
    /// When they were processed (unix ms).
    at: u64,
    /// The ids.
    #[serde(borrow)]
    ids: Vec<Cow<'a, str>>,
}

/// The key of a batch: a digest of its ids, so two batches never share a key (compaction
/// would drop the older) unless they hold the same ids.
fn batch_key(ids: &[String]) -> String {
    let mut hasher = Sha256::new();
    for id in ids {
        hasher.update((id.len() as u64).to_le_bytes());
        hasher.update(id.as_bytes());
    }
    let full = hasher.finalize();
    let hex: String = full[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("ids:{hex}")
}

/// The table entries a record of the topic stands for: each id of a batch, or the one id of
/// a record of the earlier layout (id as key, time as payload; a tombstone deletes it).
fn entries_of(key: Option<&[u8]>, payload: Option<&[u8]>) -> Vec<Entry> {
    let Some(payload) = payload else {
        return key
            .and_then(|key| std::str::from_utf8(key).ok())
            .map(|id| vec![(digest(id).to_vec(), None)])
            .unwrap_or_default();
    };
    if let Ok(batch) = serde_json::from_slice::<IdBatch<'_>>(payload) {
        let value = stamp(batch.at, &[]);
        return batch
            .ids
            .iter()
            .map(|id| (digest(id).to_vec(), Some(value.clone())))
            .collect();
    }
    let single = key.and_then(|key| std::str::from_utf8(key).ok()).zip(
        std::str::from_utf8(payload)
            .ok()
            .and_then(|at| at.parse::<u64>().ok()),
    );
    single
        .map(|(id, at)| vec![(digest(id).to_vec(), Some(stamp(at, &[])))])
        .unwrap_or_default()
}

/// `ids` in runs whose batch payload stays within `max_bytes` (an id larger than that on its
/// own still gets a run).
fn runs(ids: Vec<String>, max_bytes: usize) -> Vec<Vec<String>> {
    let mut runs: Vec<Vec<String>> = Vec::new();
    let mut bytes = 0;
    for id in ids {
        // Quotes, a comma and a little room for escapes.
        let size = id.len() + 4;
        match runs.last_mut() {
            Some(run) if bytes + size <= max_bytes => run.push(id),
            _ => {
                runs.push(vec![id]);
                bytes = 0;
            }
        }
        bytes += size;
    }
    runs
}

/// Processed ids of the partitions this instance owns: the committed ones in the local copy
/// of their topic, the open transaction's in memory.
pub struct ProcessedLog {
    /// The compacted topic.
    topic: String,
    /// Kafka clients, for catching up.
    kafka: KafkaClients,
    /// The local copy of the topic: id digest → when it was processed ([`stamp`]).
    table: Table,
    /// Partitions caught up with the topic since this instance took them.
    restored: HashSet<i32>,
    /// Ids of the open transaction.
    pending: Vec<(i32, Digest, u64)>,
    /// Ids of the open transaction not in a record yet, by partition.
    unwritten: BTreeMap<i32, Vec<String>>,
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
            unwritten: BTreeMap::new(),
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
                |message| entries_of(message.key(), message.payload()),
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

impl ProcessedIds for ProcessedLog {
    fn seen(&mut self, inputs: &[(i32, Cow<'_, str>)]) -> anyhow::Result<Vec<bool>> {
        for (partition, _) in inputs {
            self.ensure_restored(*partition)?;
        }
        let open: HashSet<(i32, Digest)> = self
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
                Ok(self
                    .table
                    .get(*partition, &id)
                    .context("cannot read the processed ids")?
                    .is_some())
            })
            .collect()
    }

    fn record(&mut self, partition: i32, id: &str) {
        let at = unix_ms(SystemTime::now());
        self.pending.push((partition, digest(id), at));
        self.unwritten
            .entry(partition)
            .or_default()
            .push(id.to_string());
    }

    /// One record per partition (more past [`MAX_BATCH_BYTES`]) with the open work's ids.
    fn closing_records(&mut self) -> Vec<OutRecord> {
        let at = unix_ms(SystemTime::now());
        let mut records = Vec::new();
        for (partition, ids) in std::mem::take(&mut self.unwritten) {
            for run in runs(ids, MAX_BATCH_BYTES) {
                let key = batch_key(&run);
                let batch = IdBatch {
                    at,
                    ids: run.iter().map(|id| Cow::Borrowed(id.as_str())).collect(),
                };
                records.push(OutRecord {
                    topic: self.topic.clone(),
                    partition: Some(partition),
                    id: format!("processed:{key}"),
                    key: Some(key),
                    payload: Some(serde_json::to_vec(&batch).expect("ids serialize")),
                    headers: RecordHeaders::new(),
                });
            }
        }
        records
    }

    /// The ids committed with the transaction go into the local copy; one that cannot take
    /// them is caught up from the topic (which has them) before it is read again.
    fn commit(&mut self) -> anyhow::Result<()> {
        self.unwritten.clear();
        let pending = std::mem::take(&mut self.pending);
        let mut by_partition: BTreeMap<i32, Vec<(Digest, Vec<u8>)>> = BTreeMap::new();
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
            if let Err(error) = self.table.apply(partition, writes, None) {
                tracing::warn!(topic = %self.topic, %error,
                    "cannot write processed ids into the local store; they are read back from the topic");
                self.restored.clear();
            }
        }
        Ok(())
    }

    fn rollback(&mut self) {
        self.pending.clear();
        self.unwritten.clear();
    }

    /// Its ids stay on disk, caught up from their checkpoint if the partition comes back.
    fn forget(&mut self, partition: i32) {
        self.restored.remove(&partition);
    }

    fn knows_every_partition(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{LocalStore, Scope};
    use std::time::Duration;

    fn keys<'a>(pairs: &[(i32, &'a str)]) -> Vec<(i32, Cow<'a, str>)> {
        pairs
            .iter()
            .map(|(p, id)| (*p, Cow::Borrowed(*id)))
            .collect()
    }

    /// A transactional deduplicator whose partitions 0 and 1 count as caught up, holding
    /// `ids` (id, processed at) in partition 0.
    fn log_with(store: &LocalStore, ids: &[(&str, u64)]) -> ProcessedLog {
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
        log
    }

    /// The ids a record of the topic stands for, as the table would hold them.
    fn ids_in(record: &OutRecord) -> Vec<Vec<u8>> {
        entries_of(
            record.key.as_deref().map(str::as_bytes),
            record.payload.as_deref(),
        )
        .into_iter()
        .map(|(id, value)| {
            assert!(value.is_some());
            id
        })
        .collect()
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
        dedup.record(0, "new");
        assert_eq!(
            dedup.seen(&keys(&[(0, "new")])).unwrap(),
            [true],
            "repeat within the open work"
        );
        dedup.rollback();
        assert!(
            dedup.closing_records().is_empty(),
            "aborted: nothing to write"
        );
        assert_eq!(
            dedup.seen(&keys(&[(0, "new")])).unwrap(),
            [false],
            "aborted: not processed"
        );
        dedup.record(0, "new");
        let records = dedup.closing_records();
        assert_eq!(records.len(), 1);
        assert_eq!(ids_in(&records[0]), [digest("new").to_vec()]);
        dedup.commit().unwrap();
        assert_eq!(dedup.seen(&keys(&[(0, "new")])).unwrap(), [true]);
    }

    #[test]
    fn a_transaction_writes_one_record_per_partition_with_every_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let mut dedup = log_with(&store, &[]);
        for (partition, id) in [(0, "a"), (1, "b"), (0, "c\nforged line"), (0, "d\"")] {
            dedup.record(partition, id);
        }
        let records = dedup.closing_records();
        assert_eq!(
            records.iter().map(|r| r.partition).collect::<Vec<_>>(),
            [Some(0), Some(1)]
        );
        assert_eq!(
            ids_in(&records[0]),
            ["a", "c\nforged line", "d\""].map(|id| digest(id).to_vec())
        );
        assert_eq!(ids_in(&records[1]), [digest("b").to_vec()]);
        assert_ne!(records[0].key, records[1].key);
        assert!(dedup.closing_records().is_empty(), "written once");
    }

    #[test]
    fn many_ids_are_split_into_records_within_the_size_limit() {
        let ids: Vec<String> = (0..5000).map(|n| format!("order-{n:06}")).collect();
        let runs = runs(ids.clone(), MAX_BATCH_BYTES);
        assert!(runs.len() > 1);
        assert_eq!(runs.concat(), ids, "every id once, in order");
        for run in &runs {
            let batch = IdBatch {
                at: 1,
                ids: run.iter().map(|id| Cow::Borrowed(id.as_str())).collect(),
            };
            assert!(serde_json::to_vec(&batch).unwrap().len() <= MAX_BATCH_BYTES + 32);
        }
        let huge = "x".repeat(MAX_BATCH_BYTES * 2);
        assert_eq!(
            runs_of_one(&huge),
            1,
            "an id larger than a run still gets one"
        );
    }

    fn runs_of_one(id: &str) -> usize {
        runs(vec![id.to_string()], MAX_BATCH_BYTES).len()
    }

    #[test]
    fn records_of_the_earlier_layout_are_still_read() {
        assert_eq!(
            entries_of(Some(b"order-1"), Some(b"1700000000000")),
            [(
                digest("order-1").to_vec(),
                Some(stamp(1_700_000_000_000, &[]))
            )]
        );
        assert_eq!(
            entries_of(Some(b"order-1"), None),
            [(digest("order-1").to_vec(), None)]
        );
        assert!(entries_of(None, Some(b"garbage")).is_empty());
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
