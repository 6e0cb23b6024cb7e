//! Exactly-once: outputs, state changelog records, dead letters, processed ids and the consumed
//! offsets of a batch go into one Kafka transaction of the stage's own transactional producer;
//! readers downstream use `read_committed`. A crash or a lost partition aborts the transaction
//! and the inputs are processed again from the last committed offsets, with the state they saw
//! the first time. Committing offsets with the group's metadata fences zombie instances.
//!
//! Processed ids live in a compacted topic (`<group>-processed`, one partition per input
//! partition number), written in the same transaction, so an id is processed if and only if
//! its transaction committed. The local store keeps a copy of the topic (a [`Table`], caught
//! up from its checkpoint before a partition's first event, and written with each committed
//! transaction), so the check moves with the partition and memory does not grow with the ids.
//! Ids older than `state.idempotency_retention` are forgotten: the topic deletes them
//! (`cleanup.policy=compact,delete`) and the table reads them as absent and prunes them. In
//! the table an id is held as the first 128 bits of its SHA-256 (a collision is as unlikely as
//! one of SHA-256 itself, so no crafted id can make a stage drop another).

use std::borrow::Cow;
use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use futures::FutureExt;
use futures::future::BoxFuture;
use rdkafka::message::Message;

use super::contract::{Guarantee, ProcessedIds, Settle};
use crate::event::headers::RecordHeaders;
use crate::kafka::{KafkaClients, OutRecord, Transaction, TransactionalProducer, TxnError};
use crate::observe::{HostEvent, TransactionAborted};
use crate::stage::fenced::FencedOut;
use crate::stage::positions::InputPositions;
use crate::state::catch_up;
use crate::store::{Table, stamp, unix_ms};

/// The exactly-once way of a stage: transactions of its own producer.
pub struct ExactlyOnce<P: TransactionalProducer> {
    txn: Transaction<P>,
    stage: String,
}

impl<P: TransactionalProducer> ExactlyOnce<P> {
    /// Transactions of `producer` (transactions initialised) for `stage`. A failed
    /// transaction is not aborted in place: the stage is rebuilt and its next producer's
    /// `init_transactions` settles it.
    pub fn new(producer: P, stage: &str) -> Self {
        Self {
            txn: Transaction::replaced_on_failure(producer),
            stage: stage.to_string(),
        }
    }
}

impl<P> Guarantee<P::Group> for ExactlyOnce<P>
where
    P: TransactionalProducer + Send + Sync,
    P::Group: Send + Sync,
{
    fn name(&self) -> &'static str {
        "exactly_once"
    }

    fn begin(&mut self) -> anyhow::Result<()> {
        self.txn
            .begin()
            .map_err(|error| failed(&self.stage, "cannot begin a transaction", &error))
    }

    fn send(&mut self, record: OutRecord) -> BoxFuture<'_, anyhow::Result<usize>> {
        async move {
            self.txn
                .send(&record)
                .await
                .map_err(|error| failed(&self.stage, "cannot queue a record", &error))
        }
        .boxed()
    }

    fn send_state(&mut self, record: OutRecord) -> BoxFuture<'_, anyhow::Result<()>> {
        async move {
            self.txn
                .send(&record)
                .await
                .map(|_| ())
                .map_err(|error| failed(&self.stage, "cannot queue a state record", &error))
        }
        .boxed()
    }

    fn in_transaction(&self) -> bool {
        self.txn.is_open()
    }

    fn deadline(&self, _opened: Instant, _interval: Duration) -> Option<Instant> {
        None
    }

    fn commits_when_drained(&self) -> bool {
        true
    }

    fn commit<'a>(&'a mut self, settle: Settle<'a, P::Group>) -> BoxFuture<'a, anyhow::Result<()>> {
        async move {
            if !self.txn.is_open() {
                return Ok(());
            }
            let group = settle.positions.group()?;
            let committing = Instant::now();
            let committed = self.txn.commit(Some((&settle.offsets, &group))).await;
            tracing::debug!(stage = %self.stage, ok = committed.is_ok(),
                commit_ms = committing.elapsed().as_secs_f64() * 1000.0, "transaction ended");
            if let Err(error) = committed {
                (settle.hold_refused)(&error.failed);
                return Err(failed(&self.stage, "the transaction failed", &error));
            }
            (settle.on_safe)()
        }
        .boxed()
    }

    fn abandon(&mut self) -> anyhow::Result<()> {
        if self.txn.is_open() {
            TransactionAborted { stage: &self.stage }.emit();
        }
        self.txn
            .abort()
            .map_err(|error| failed(&self.stage, "cannot abort the transaction", &error))
    }

    fn finish(&self, _positions: &(dyn InputPositions<Group = P::Group> + Sync)) {
        // The offsets went with the last transaction.
    }
}

/// The error that ends this incarnation of the stage after a failed transaction, so the
/// supervisor rebuilds it: a new producer (`init_transactions` fences and aborts what is left
/// open), a new consumer at the committed offsets, state restored from the changelog.
fn failed(stage: &str, what: &str, error: &TxnError) -> anyhow::Error {
    let message = format!(
        "stage {stage}: {what} ({error}; {:?}); rebuilding the stage to resume from its last committed offsets and state",
        error.kind
    );
    if error.kind == crate::kafka::TxnErrorKind::Fenced {
        anyhow::Error::new(FencedOut {
            by_same_member: false,
            detail: error.to_string(),
        })
        .context(message)
    } else {
        anyhow::anyhow!(message)
    }
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
    topic: String,
    /// Kafka clients, for catching up.
    kafka: KafkaClients,
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

    fn record(&mut self, partition: i32, id: &str) -> Option<OutRecord> {
        let at = unix_ms(SystemTime::now());
        self.pending.push((partition, digest(id), at));
        Some(OutRecord {
            topic: self.topic.clone(),
            partition: Some(partition),
            key: Some(id.to_string()),
            payload: Some(at.to_string().into_bytes()),
            headers: RecordHeaders::new(),
            id: format!("processed:{id}"),
        })
    }

    /// The ids committed with the transaction go into the local copy; one that cannot take
    /// them is caught up from the topic (which has them) before it is read again.
    fn commit(&mut self) -> anyhow::Result<()> {
        let pending = std::mem::take(&mut self.pending);
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
        dedup.commit().unwrap();
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
