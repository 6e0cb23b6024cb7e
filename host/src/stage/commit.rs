//! The open work of a stage and how it ends: the committer.
//!
//! The consume loop hands every record it makes to the [`Committer`] and asks it when to
//! commit; it never looks at the processing mode. The committer works one of two ways:
//!
//! - **transactional** (`exactly_once`): records go into a [`Transaction`] of the stage's own
//!   producer, committed with the consumed offsets and the group's metadata as soon as the
//!   input is drained (outputs are invisible downstream until then);
//! - **acknowledging** (`at_least_once`): records go out on the shared producer at once; once
//!   per `commit_interval` the committer waits for every acknowledgement (queueing again what
//!   failed), then the stage records what is safe and the offsets are stored.
//!
//! A failed transaction is never patched up: the stage is rebuilt (a new producer settles
//! what is open, a new consumer resumes from the committed offsets). A dead letter the broker
//! refuses for good holds its input's partition (see [`super::stuck`]).
//!
//! Producer and consumer are behind [`TransactionalProducer`] and [`InputPositions`], so commit,
//! abort and rewind are tested here without a broker.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerGroupMetadata};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::retry::{RetryBook, TopicPartition};
use super::runner::{Fate, StageConsumer};
use super::stuck::StuckBook;
use crate::kafka::{
    Ack, FailedDelivery, OutRecord, Transaction, TransactionalProducer, failed_acks, publish_all,
    refused_for_good,
};

/// How long reading the committed offsets, or seeking to them, may block.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(15);
/// Rounds of queueing again before at-least-once outputs are given up.
const PUBLISH_ROUNDS: u32 = 8;

/// The consumer side of a stage, as the committer uses it.
pub trait InputPositions {
    /// What identifies the group in a transaction.
    type Group;
    /// The group's metadata, for committing offsets in a transaction.
    fn group(&self) -> anyhow::Result<Self::Group>;
    /// Stores offsets to be committed by the consumer (at-least-once).
    fn store(&self, offsets: &TopicPartitionList) -> KafkaResult<()>;
    /// Commits the stored offsets now (at-least-once, when the stage stops).
    fn commit_stored(&self) -> KafkaResult<()>;
    /// The partitions the consumer owns.
    fn assignment(&self) -> KafkaResult<TopicPartitionList>;
    /// The group's committed offsets of `partitions`.
    fn committed(&self, partitions: TopicPartitionList) -> KafkaResult<TopicPartitionList>;
    /// Sends each partition to its offset in `targets`; the result per partition.
    fn seek_to(&self, targets: TopicPartitionList) -> KafkaResult<TopicPartitionList>;
}

impl InputPositions for StageConsumer {
    type Group = ConsumerGroupMetadata;

    fn group(&self) -> anyhow::Result<ConsumerGroupMetadata> {
        self.group_metadata()
            .context("the consumer has no group metadata")
    }

    fn store(&self, offsets: &TopicPartitionList) -> KafkaResult<()> {
        self.store_offsets(offsets)
    }

    fn commit_stored(&self) -> KafkaResult<()> {
        match self.commit_consumer_state(CommitMode::Sync) {
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
            other => other,
        }
    }

    fn assignment(&self) -> KafkaResult<TopicPartitionList> {
        Consumer::assignment(self)
    }

    fn committed(&self, partitions: TopicPartitionList) -> KafkaResult<TopicPartitionList> {
        tokio::task::block_in_place(|| self.committed_offsets(partitions, COMMITTED_TIMEOUT))
    }

    fn seek_to(&self, targets: TopicPartitionList) -> KafkaResult<TopicPartitionList> {
        self.seek_partitions(targets, COMMITTED_TIMEOUT)
    }
}

/// The open work: what was handled since the last commit.
#[derive(Default)]
pub(super) struct OpenWork {
    /// Next offset to consume per partition: what to commit.
    pub(super) next: HashMap<TopicPartition, i64>,
    /// Fates of the inputs, counted once the work is committed.
    pub(super) fates: Vec<Fate>,
    /// When the work was opened.
    pub(super) opened: Option<Instant>,
    /// At-least-once: ids handled for the first time, recorded as processed when the work
    /// commits (and checked before then, so a repeat within the work is dropped).
    pub(super) fresh_ids: HashSet<String>,
    /// Dead letters of the work: their position among the queued records, and the input they
    /// stand for.
    dead_letters: Vec<(usize, TopicPartition, i64)>,
}

/// How the committer gets records to Kafka.
enum Way<P: TransactionalProducer> {
    Transactional(Transaction<P>),
    Acknowledging {
        producer: P,
        /// Acknowledgements of the queued records, in the order of `records`.
        acks: Vec<Ack>,
        /// The queued records, to queue again those that fail.
        records: Vec<OutRecord>,
        /// State changelog records of the open work, held back until its outputs are
        /// acknowledged: a changelog that got ahead of the outputs would, after a crash, restore
        /// state saying an input was handled whose outputs never arrived.
        state: Vec<OutRecord>,
    },
}

/// Owns a stage's open work and ends it: commits, or abandons and rewinds.
pub struct Committer<P: TransactionalProducer> {
    way: Way<P>,
    work: OpenWork,
    stage: String,
    dead_letter_topic: String,
    stuck: StuckBook,
}

impl<P: TransactionalProducer> Committer<P> {
    /// Exactly-once: records go into transactions of `producer` (transactions initialised).
    pub fn transactional(
        producer: P,
        stage: &str,
        dead_letter_topic: &str,
        stuck: StuckBook,
    ) -> Self {
        Self::with(
            Way::Transactional(Transaction::replaced_on_failure(producer)),
            stage,
            dead_letter_topic,
            stuck,
        )
    }

    /// At-least-once: records go out on `producer` at once, acknowledged before committing.
    pub fn acknowledging(
        producer: P,
        stage: &str,
        dead_letter_topic: &str,
        stuck: StuckBook,
    ) -> Self {
        Self::with(
            Way::Acknowledging {
                producer,
                acks: Vec::new(),
                records: Vec::new(),
                state: Vec::new(),
            },
            stage,
            dead_letter_topic,
            stuck,
        )
    }

    fn with(way: Way<P>, stage: &str, dead_letter_topic: &str, stuck: StuckBook) -> Self {
        Committer {
            way,
            work: OpenWork::default(),
            stage: stage.to_string(),
            dead_letter_topic: dead_letter_topic.to_string(),
            stuck,
        }
    }

    /// `exactly_once` or `at_least_once`, for logs.
    pub fn mode_name(&self) -> &'static str {
        match self.way {
            Way::Transactional(_) => "exactly_once",
            Way::Acknowledging { .. } => "at_least_once",
        }
    }

    /// The open work.
    pub(super) fn work(&self) -> &OpenWork {
        &self.work
    }

    /// The open work, to add inputs to.
    pub(super) fn work_mut(&mut self) -> &mut OpenWork {
        &mut self.work
    }

    /// Whether there is open work to commit.
    pub fn is_open(&self) -> bool {
        self.work.opened.is_some() || self.in_transaction()
    }

    /// Whether a transaction is open: the loop then takes only what is already fetched, to
    /// commit without waiting for more input.
    pub fn in_transaction(&self) -> bool {
        matches!(&self.way, Way::Transactional(txn) if txn.is_open())
    }

    /// When the open work must be committed even if no input comes (acknowledging: its
    /// interval is over); `None` when only input or a drained batch commits it.
    pub fn deadline(&self, interval: Duration) -> Option<Instant> {
        match self.way {
            Way::Acknowledging { .. } => self.work.opened.map(|opened| opened + interval),
            Way::Transactional(_) => None,
        }
    }

    /// Whether the work is committed as soon as the input is drained (transactional: outputs
    /// are invisible downstream until then; acknowledged ones are already on their way).
    pub fn commits_when_drained(&self) -> bool {
        matches!(self.way, Way::Transactional(_))
    }

    /// Opens work for a batch (and, transactional, a transaction).
    pub fn open(&mut self) -> anyhow::Result<()> {
        if let Way::Transactional(txn) = &mut self.way {
            txn.begin()
                .map_err(|error| failed(&self.stage, "cannot begin a transaction", &error))?;
        }
        self.work.opened.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Queues a record of the open work; `dead_letter_of` names the input a dead letter
    /// stands for.
    pub async fn send(
        &mut self,
        record: OutRecord,
        dead_letter_of: Option<(TopicPartition, i64)>,
    ) -> anyhow::Result<()> {
        let position = match &mut self.way {
            Way::Transactional(txn) => txn
                .send(&record)
                .await
                .map_err(|error| failed(&self.stage, "cannot queue a record", &error))?,
            Way::Acknowledging {
                producer,
                acks,
                records,
                ..
            } => {
                let ack = producer
                    .queue(&record)
                    .await
                    .with_context(|| format!("cannot send {} to {}", record.id, record.topic))?;
                acks.push(ack);
                records.push(record);
                acks.len() - 1
            }
        };
        if let Some((partition, offset)) = dead_letter_of {
            self.work.dead_letters.push((position, partition, offset));
        }
        Ok(())
    }

    /// Queues a state changelog record of the open work. Transactional, it goes into the
    /// transaction like any record; acknowledging, it is published when the work commits,
    /// once every output of the work is acknowledged.
    pub async fn send_state(&mut self, record: OutRecord) -> anyhow::Result<()> {
        match &mut self.way {
            Way::Transactional(txn) => {
                txn.send(&record)
                    .await
                    .map_err(|error| failed(&self.stage, "cannot queue a state record", &error))?;
            }
            Way::Acknowledging { state, .. } => state.push(record),
        }
        Ok(())
    }

    /// Ids handled for the first time by the open work: recorded as processed when it commits
    /// (acknowledging; a transactional stage writes them into its transaction instead).
    pub fn remember_fresh(&mut self, ids: impl IntoIterator<Item = String>) {
        if let Way::Acknowledging { .. } = self.way {
            self.work.fresh_ids.extend(ids);
        }
    }

    /// Commits the open work and returns it.
    /// `on_safe` runs once the work's outputs are safe and before its inputs count as consumed
    /// elsewhere: transactional, after the commit (which took the offsets with it);
    /// acknowledging, after every acknowledgement and before the offsets are stored.
    pub(super) async fn commit<C: InputPositions<Group = P::Group>>(
        &mut self,
        positions: &C,
        retries: &RetryBook,
        on_safe: impl FnOnce(&OpenWork) -> anyhow::Result<()>,
    ) -> anyhow::Result<OpenWork> {
        match &mut self.way {
            Way::Transactional(txn) => {
                if !txn.is_open() {
                    return Ok(std::mem::take(&mut self.work));
                }
                let offsets = offsets_to_commit(&self.work, retries)?;
                let group = positions.group()?;
                let committing = Instant::now();
                let committed = txn.commit(Some((&offsets, &group))).await;
                tracing::debug!(stage = %self.stage, inputs = self.work.fates.len(), ok = committed.is_ok(),
                    commit_ms = committing.elapsed().as_secs_f64() * 1000.0, "transaction ended");
                if let Err(error) = committed {
                    hold_refused(
                        &self.stuck,
                        &self.stage,
                        &self.dead_letter_topic,
                        &self.work,
                        &error.failed,
                    );
                    self.work = OpenWork::default();
                    return Err(failed(&self.stage, "the transaction failed", &error));
                }
                on_safe(&self.work)?;
            }
            Way::Acknowledging {
                producer,
                acks,
                records,
                state,
            } => {
                let records = std::mem::take(records);
                let state = std::mem::take(state);
                let failed = failed_acks(std::mem::take(acks)).await;
                if hold_refused(
                    &self.stuck,
                    &self.stage,
                    &self.dead_letter_topic,
                    &self.work,
                    &failed,
                ) {
                    self.work = OpenWork::default();
                    anyhow::bail!(
                        "stage {}: the dead-letter topic refuses a dead letter for good; its partition is held and the stage rebuilt",
                        self.stage
                    );
                }
                if let Some((_, _, error)) = failed.last() {
                    tracing::warn!(stage = %self.stage, failed = failed.len(), %error,
                        "outputs were not acknowledged; publishing them again");
                    let again: Vec<OutRecord> = failed
                        .iter()
                        .map(|(position, _, _)| records[*position].clone())
                        .collect();
                    publish_all(producer, &again, PUBLISH_ROUNDS)
                        .await
                        .map_err(|error| {
                            anyhow::anyhow!("cannot publish the outputs of a batch: {error}")
                        })?;
                }
                // Only now may the state say the inputs were handled.
                if !state.is_empty() {
                    publish_all(producer, &state, PUBLISH_ROUNDS)
                        .await
                        .map_err(|error| {
                            anyhow::anyhow!(
                                "cannot publish the state changelog of a batch: {error}; its inputs are handled again"
                            )
                        })?;
                }
                on_safe(&self.work)?;
                let offsets = offsets_to_commit(&self.work, retries)?;
                if offsets.count() > 0
                    && let Err(error) = positions.store(&offsets)
                {
                    // A partition revoked meanwhile: its new owner reads these inputs again.
                    tracing::warn!(stage = %self.stage, %error, "cannot store the consumed offsets");
                }
            }
        }
        Ok(std::mem::take(&mut self.work))
    }

    /// Drops the open work (aborting its transaction): its inputs are handled again.
    pub fn abandon(&mut self) -> anyhow::Result<()> {
        self.work = OpenWork::default();
        match &mut self.way {
            Way::Transactional(txn) => {
                if txn.is_open() {
                    tracing::info!(stage = %self.stage, "aborting the open transaction");
                }
                txn.abort()
                    .map_err(|error| failed(&self.stage, "cannot abort the transaction", &error))
            }
            Way::Acknowledging {
                acks,
                records,
                state,
                ..
            } => {
                // Outputs already queued are repeats that the next stage drops.
                acks.clear();
                records.clear();
                state.clear();
                Ok(())
            }
        }
    }

    /// The stage stops: at-least-once offsets stored since the last automatic commit are
    /// committed now (a transactional stage committed its offsets with its last transaction).
    pub fn finish<C: InputPositions>(&self, positions: &C) {
        if let Way::Acknowledging { .. } = self.way
            && let Err(error) = positions.commit_stored()
        {
            tracing::warn!(stage = %self.stage, %error, "final commit failed");
        }
    }
}

/// Holds the partitions of `work`'s inputs whose dead letter is among the records refused for
/// good in `failed` (see [`super::stuck`]); whether there was one.
fn hold_refused(
    stuck: &StuckBook,
    stage: &str,
    dead_letter_topic: &str,
    work: &OpenWork,
    failed: &[FailedDelivery],
) -> bool {
    let mut held = false;
    for (position, code, error) in failed {
        if !refused_for_good(*code) {
            continue;
        }
        if let Some((_, (topic, partition), offset)) =
            work.dead_letters.iter().find(|(at, _, _)| at == position)
        {
            let reason = format!(
                "the dead-letter topic {dead_letter_topic} refuses its dead letter: {error}"
            );
            stuck.hold(stage, topic, *partition, *offset, &reason);
            held = true;
        }
    }
    held
}

/// The error that ends this incarnation of the stage after a failed transaction, so the
/// supervisor rebuilds it: a new producer (`init_transactions` fences and aborts what is left
/// open), a new consumer at the committed offsets, state restored from the changelog.
fn failed(stage: &str, what: &str, error: &crate::kafka::TxnError) -> anyhow::Error {
    let message = format!(
        "stage {stage}: {what} ({error}; {:?}); rebuilding the stage to resume from its last committed offsets and state",
        error.kind
    );
    if error.kind == crate::kafka::TxnErrorKind::Fenced {
        anyhow::Error::new(super::FencedOut {
            by_same_member: false,
            detail: error.to_string(),
        })
        .context(message)
    } else {
        anyhow::anyhow!(message)
    }
}

/// The offsets the open work commits (or stores): the next input of each partition, with the
/// attempt count of the event parked there, if any.
fn offsets_to_commit(work: &OpenWork, retries: &RetryBook) -> anyhow::Result<TopicPartitionList> {
    let mut offsets = TopicPartitionList::new();
    for (partition, next) in &work.next {
        let mut element = offsets.add_partition(&partition.0, partition.1);
        element.set_offset(Offset::Offset(*next))?;
        if let Some(metadata) = retries.metadata(partition, *next) {
            element.set_metadata(metadata);
        }
    }
    Ok(offsets)
}

/// Sends every partition `positions` owns back to its committed offset (the beginning when
/// none was committed), so nothing consumed but not committed is skipped: neither the open
/// work nor a batch that was dropped. Fails, and so rebuilds the stage, when the committed
/// offsets cannot be read or a seek fails.
pub(super) fn rewind<C: InputPositions>(positions: &C, stage: &str) -> anyhow::Result<()> {
    let assignment = positions
        .assignment()
        .context("cannot read the consumer's assignment")?;
    if assignment.count() == 0 {
        return Ok(());
    }
    let committed = positions.committed(assignment).with_context(|| {
        format!("stage {stage} cannot read its committed offsets to resume from them")
    })?;
    let mut targets = TopicPartitionList::new();
    for element in committed.elements() {
        let offset = match element.offset() {
            Offset::Offset(offset) => Offset::Offset(offset),
            _ => Offset::Beginning,
        };
        targets.add_partition_offset(element.topic(), element.partition(), offset)?;
    }
    let sought = positions
        .seek_to(targets)
        .with_context(|| format!("stage {stage} cannot rewind its partitions"))?;
    for element in sought.elements() {
        element.error().with_context(|| {
            format!(
                "stage {stage} cannot rewind {}/{} to its committed offset",
                element.topic(),
                element.partition()
            )
        })?;
    }
    tracing::info!(
        stage,
        partitions = sought.count(),
        "resuming from the committed offsets"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use rdkafka::error::KafkaError;

    use super::*;
    use crate::health::Health;
    use crate::kafka::fake::{Call, FakeProducer, record};

    /// A consumer without a broker: its assignment, committed offsets, and what was stored
    /// and sought.
    #[derive(Default)]
    struct FakePositions {
        owned: Vec<(String, i32)>,
        committed: HashMap<(String, i32), i64>,
        stored: Mutex<Vec<(String, i32, i64)>>,
        sought: Mutex<Vec<(String, i32, Offset)>>,
        seek_fails: bool,
    }

    fn list(offsets: &TopicPartitionList) -> Vec<(String, i32, Offset)> {
        let mut out: Vec<_> = offsets
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition(), e.offset()))
            .collect();
        out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        out
    }

    impl InputPositions for FakePositions {
        type Group = ();

        fn group(&self) -> anyhow::Result<()> {
            Ok(())
        }

        fn store(&self, offsets: &TopicPartitionList) -> KafkaResult<()> {
            let mut stored = self.stored.lock().unwrap();
            for (topic, partition, offset) in list(offsets) {
                let Offset::Offset(offset) = offset else {
                    panic!("stored a non-numeric offset")
                };
                stored.push((topic, partition, offset));
            }
            Ok(())
        }

        fn commit_stored(&self) -> KafkaResult<()> {
            Ok(())
        }

        fn assignment(&self) -> KafkaResult<TopicPartitionList> {
            let mut owned = TopicPartitionList::new();
            for (topic, partition) in &self.owned {
                owned.add_partition(topic, *partition);
            }
            Ok(owned)
        }

        fn committed(&self, partitions: TopicPartitionList) -> KafkaResult<TopicPartitionList> {
            let mut committed = TopicPartitionList::new();
            for (topic, partition, _) in list(&partitions) {
                let offset = match self.committed.get(&(topic.clone(), partition)) {
                    Some(offset) => Offset::Offset(*offset),
                    None => Offset::Invalid,
                };
                committed.add_partition_offset(&topic, partition, offset)?;
            }
            Ok(committed)
        }

        fn seek_to(&self, targets: TopicPartitionList) -> KafkaResult<TopicPartitionList> {
            if self.seek_fails {
                return Err(KafkaError::Seek("broker gone".into()));
            }
            self.sought.lock().unwrap().extend(list(&targets));
            Ok(targets)
        }
    }

    fn book() -> StuckBook {
        StuckBook::new(Health::default())
    }

    fn input(partition: i32) -> TopicPartition {
        ("in".to_string(), partition)
    }

    /// Handles inputs `offsets` of partition 0, each making one record named after it.
    async fn handle(committer: &mut Committer<FakeProducer>, offsets: &[i64]) {
        committer.open().unwrap();
        for offset in offsets {
            committer
                .send(record(&format!("out-{offset}")), None)
                .await
                .unwrap();
            committer.work_mut().fates.push(Fate::Duplicate);
            committer.work_mut().next.insert(input(0), offset + 1);
        }
    }

    /// Commits work that must fail: nothing of it may count as safe.
    async fn failed_commit(committer: &mut Committer<FakeProducer>) -> anyhow::Error {
        committer
            .commit(&FakePositions::default(), &RetryBook::default(), |_| {
                panic!("the work is not safe")
            })
            .await
            .err()
            .expect("the commit fails")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_transactional_commit_takes_outputs_and_offsets_in_one_transaction() {
        let producer = FakeProducer::default();
        let mut committer = Committer::transactional(producer.clone(), "s", "DLQ", book());
        handle(&mut committer, &[4, 5]).await;
        assert!(committer.in_transaction());
        assert!(committer.commits_when_drained());
        assert_eq!(committer.deadline(Duration::from_secs(1)), None);
        let calls_at_safe = Mutex::new(Vec::new());
        let work = committer
            .commit(&FakePositions::default(), &RetryBook::default(), |work| {
                assert_eq!(work.fates.len(), 2);
                *calls_at_safe.lock().unwrap() = producer.calls();
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(work.fates.len(), 2);
        assert!(!committer.is_open());
        let expected = vec![
            Call::Begin,
            Call::Queue("out-4".into()),
            Call::Queue("out-5".into()),
            Call::SendOffsets(vec![("in".into(), 0, 6)]),
            Call::Commit,
        ];
        assert_eq!(producer.calls(), expected);
        // State and processed ids become committed only after the transaction is.
        assert_eq!(*calls_at_safe.lock().unwrap(), expected);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_failed_commit_rebuilds_the_stage_and_nothing_counts_as_safe() {
        let producer = FakeProducer::default();
        producer.script().commit_error = Some(KafkaError::MessageProduction(
            RDKafkaErrorCode::RequestTimedOut,
        ));
        let mut committer = Committer::transactional(producer.clone(), "s", "DLQ", book());
        handle(&mut committer, &[0]).await;
        let error = failed_commit(&mut committer).await;
        assert!(
            error.to_string().contains("rebuilding the stage"),
            "{error}"
        );
        assert!(error.to_string().contains("Fatal"), "{error}");
        // An unknown outcome is not aborted in place: the next producer settles it.
        assert!(!producer.calls().contains(&Call::Abort));
        assert!(!committer.is_open());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_dead_letter_refused_for_good_holds_its_input_partition() {
        let producer = FakeProducer::default();
        producer
            .script()
            .failing_acks
            .insert("letter".into(), RDKafkaErrorCode::MessageSizeTooLarge);
        let stuck = book();
        let mut committer = Committer::transactional(producer.clone(), "s", "DLQ", stuck.clone());
        handle(&mut committer, &[0]).await;
        committer
            .send(record("letter"), Some((input(2), 17)))
            .await
            .unwrap();
        let error = failed_commit(&mut committer).await;
        assert!(error.to_string().contains("not written"), "{error}");
        assert!(stuck.is_held("s", "in", 2));
        assert!(!stuck.is_held("s", "in", 0));
        // The rebuilt stage's producer aborts it.
        assert!(!producer.calls().contains(&Call::Abort));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn an_acknowledging_commit_queues_failures_again_before_storing_offsets() {
        let producer = FakeProducer::default();
        producer
            .script()
            .failing_acks
            .insert("out-8".into(), RDKafkaErrorCode::RequestTimedOut);
        let mut committer = Committer::acknowledging(producer.clone(), "s", "DLQ", book());
        handle(&mut committer, &[7, 8]).await;
        committer.remember_fresh(["id-7".to_string()]);
        assert!(!committer.in_transaction());
        assert!(!committer.commits_when_drained());
        assert!(committer.deadline(Duration::from_secs(1)).is_some());
        let positions = FakePositions::default();
        let work = committer
            .commit(&positions, &RetryBook::default(), |work| {
                assert!(work.fresh_ids.contains("id-7"));
                assert!(positions.stored.lock().unwrap().is_empty());
                // Every output was acknowledged before: out-8 went out twice.
                assert_eq!(
                    producer.calls(),
                    [
                        Call::Queue("out-7".into()),
                        Call::Queue("out-8".into()),
                        Call::Queue("out-8".into())
                    ]
                );
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(work.fates.len(), 2);
        assert_eq!(*positions.stored.lock().unwrap(), [("in".into(), 0, 9)]);
        assert!(!committer.is_open());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn an_acknowledging_commit_publishes_state_only_after_every_output_is_acknowledged() {
        let producer = FakeProducer::default();
        producer
            .script()
            .failing_acks
            .insert("out-2".into(), RDKafkaErrorCode::RequestTimedOut);
        let mut committer = Committer::acknowledging(producer.clone(), "s", "DLQ", book());
        committer.open().unwrap();
        committer.send(record("out-1"), None).await.unwrap();
        committer.send_state(record("state:a")).await.unwrap();
        committer.send(record("out-2"), None).await.unwrap();
        committer.send_state(record("state:b")).await.unwrap();
        committer.work_mut().next.insert(input(0), 3);
        // Nothing of the state goes out with the outputs.
        assert_eq!(
            producer.calls(),
            [Call::Queue("out-1".into()), Call::Queue("out-2".into())]
        );
        let positions = FakePositions::default();
        committer
            .commit(&positions, &RetryBook::default(), |_| Ok(()))
            .await
            .unwrap();
        let history = producer.history();
        let at = |call: Call| history.iter().position(|c| *c == call).unwrap();
        let last_output_ack = history
            .iter()
            .rposition(|c| matches!(c, Call::Acked(id) if id.starts_with("out-")))
            .unwrap();
        // out-2 failed once, went out again, and was acknowledged before any state was queued.
        assert_eq!(
            history
                .iter()
                .filter(|c| **c == Call::Queue("out-2".into()))
                .count(),
            2
        );
        assert!(
            at(Call::Queue("state:a".into())) > last_output_ack,
            "{history:?}"
        );
        assert!(at(Call::Queue("state:a".into())) < at(Call::Queue("state:b".into())));
        assert!(history.contains(&Call::Acked("state:b".into())));
        assert_eq!(*positions.stored.lock().unwrap(), [("in".into(), 0, 3)]);
    }

    #[tokio::test(start_paused = true)]
    async fn state_that_cannot_be_published_stores_no_offsets_and_is_not_safe() {
        let producer = FakeProducer::default();
        let mut committer = Committer::acknowledging(producer.clone(), "s", "DLQ", book());
        committer.open().unwrap();
        committer.send(record("out-1"), None).await.unwrap();
        committer.send_state(record("state:a")).await.unwrap();
        committer.work_mut().next.insert(input(0), 1);
        producer
            .script()
            .refused
            .insert("state:a".into(), RDKafkaErrorCode::RequestTimedOut);
        let positions = FakePositions::default();
        let error = committer
            .commit(&positions, &RetryBook::default(), |_| {
                panic!("the state is not published: the work is not safe")
            })
            .await
            .err()
            .expect("the commit fails");
        assert!(error.to_string().contains("state changelog"), "{error}");
        assert!(positions.stored.lock().unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_store_that_fails_keeps_the_offsets_unstored() {
        let producer = FakeProducer::default();
        let mut committer = Committer::acknowledging(producer.clone(), "s", "DLQ", book());
        handle(&mut committer, &[1]).await;
        let positions = FakePositions::default();
        committer
            .commit(&positions, &RetryBook::default(), |_| {
                anyhow::bail!("the store is down")
            })
            .await
            .err()
            .expect("the commit fails");
        assert!(positions.stored.lock().unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn abandoning_aborts_the_transaction_and_rewinds_to_the_committed_offsets() {
        let producer = FakeProducer::default();
        let mut committer = Committer::transactional(producer.clone(), "s", "DLQ", book());
        handle(&mut committer, &[3]).await;
        committer.abandon().unwrap();
        assert!(!committer.is_open());
        assert!(committer.work().next.is_empty());
        assert_eq!(producer.calls().last(), Some(&Call::Abort));
        let positions = FakePositions {
            owned: vec![input(0), input(1)],
            committed: HashMap::from([(input(0), 3)]),
            ..FakePositions::default()
        };
        rewind(&positions, "s").unwrap();
        assert_eq!(
            *positions.sought.lock().unwrap(),
            [
                ("in".into(), 0, Offset::Offset(3)),
                ("in".into(), 1, Offset::Beginning)
            ]
        );
        // Nothing open: abandoning again aborts nothing.
        committer.abandon().unwrap();
        assert_eq!(
            producer
                .calls()
                .iter()
                .filter(|c| **c == Call::Abort)
                .count(),
            1
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_rewind_that_cannot_seek_fails_the_stage() {
        let positions = FakePositions {
            owned: vec![input(0)],
            seek_fails: true,
            ..FakePositions::default()
        };
        let error = rewind(&positions, "s").unwrap_err();
        assert!(format!("{error:#}").contains("cannot rewind"), "{error:#}");
        // Owning nothing, there is nothing to rewind.
        rewind(&FakePositions::default(), "s").unwrap();
    }
}
