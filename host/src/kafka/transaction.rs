//! The one Kafka transaction type of the host: begin, queue records, commit (with consumed
//! offsets, for a stage) or abort, with failures sorted into what the caller can do about them
//! ([`TxnErrorKind`]). Stages, the exactly-once ingress and the dead-letter replay all write
//! through it.
//!
//! The producer is behind [`TransactionalProducer`] (and its record side,
//! [`RecordQueue`](super::RecordQueue)), so what a transaction does on each failure is tested
//! without a broker.

use std::time::Duration;

use rdkafka::TopicPartitionList;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::types::RDKafkaErrorCode;

use super::publish::{Ack, FailedDelivery, OutRecord, RecordQueue, failed_acks};

/// How long a transactional call may block.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an abort may block before the producer is given up.
const ABORT_TIMEOUT: Duration = Duration::from_secs(10);

/// A producer that runs transactions.
pub trait TransactionalProducer: RecordQueue {
    /// What identifies the consumer group whose offsets a transaction commits.
    type Group;
    /// Opens a transaction.
    fn begin(&self) -> KafkaResult<()>;
    /// Adds the group's consumed `offsets` to the open transaction.
    fn send_offsets(&self, offsets: &TopicPartitionList, group: &Self::Group) -> KafkaResult<()>;
    /// Commits the open transaction (flushing what is queued).
    fn commit(&self) -> KafkaResult<()>;
    /// Aborts the open transaction.
    fn abort(&self) -> KafkaResult<()>;
}

impl TransactionalProducer for FutureProducer {
    type Group = ConsumerGroupMetadata;

    fn begin(&self) -> KafkaResult<()> {
        self.begin_transaction()
    }

    fn send_offsets(&self, offsets: &TopicPartitionList, group: &Self::Group) -> KafkaResult<()> {
        tokio::task::block_in_place(|| {
            self.send_offsets_to_transaction(offsets, group, TXN_TIMEOUT)
        })
    }

    fn commit(&self) -> KafkaResult<()> {
        tokio::task::block_in_place(|| self.commit_transaction(TXN_TIMEOUT))
    }

    fn abort(&self) -> KafkaResult<()> {
        tokio::task::block_in_place(|| self.abort_transaction(ABORT_TIMEOUT))
    }
}

/// What the writer can do after a failed transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnErrorKind {
    /// Another producer with the same `transactional.id` took over: this one can do nothing
    /// more, and nothing of its open transaction becomes visible.
    Fenced,
    /// The transaction was aborted: none of it is visible, and the same producer may do the
    /// work again in a new transaction.
    Retriable,
    /// The producer is unusable, or whether the transaction committed is not known (a commit
    /// that timed out may still complete): make a new producer, whose `init_transactions`
    /// settles what is open, and resume from what Kafka holds.
    Fatal,
}

/// A failed transaction.
#[derive(Debug, Clone)]
pub struct TxnError {
    /// What the writer can do about it.
    pub kind: TxnErrorKind,
    /// What failed, in words.
    pub message: String,
    /// Records that were not written, by the position they were queued at (empty when the
    /// failure was not a record's).
    pub failed: Vec<FailedDelivery>,
}

impl TxnError {
    fn new(kind: TxnErrorKind, message: String) -> Self {
        TxnError {
            kind,
            message,
            failed: Vec::new(),
        }
    }

    /// Whether the producer can run the next transaction.
    pub fn producer_usable(&self) -> bool {
        self.kind == TxnErrorKind::Retriable
    }
}

impl std::fmt::Display for TxnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TxnError {}

/// How a failed transactional call leaves the producer, from librdkafka's verdict on the error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallFailure {
    /// The error code.
    pub code: Option<RDKafkaErrorCode>,
    /// librdkafka: the producer can do nothing more.
    pub fatal: bool,
    /// librdkafka: the transaction must be aborted, after which the producer is usable.
    pub requires_abort: bool,
}

impl CallFailure {
    /// librdkafka's verdict on `error`.
    pub fn of(error: &KafkaError) -> Self {
        match error {
            KafkaError::Transaction(error) => CallFailure {
                code: Some(error.code()),
                fatal: error.is_fatal(),
                requires_abort: error.txn_requires_abort(),
            },
            other => CallFailure {
                code: other.rdkafka_error_code(),
                ..CallFailure::default()
            },
        }
    }

    /// The kind of a transaction whose call failed so: fenced by its code, a transaction to
    /// abort when librdkafka says so, anything else fatal (for a commit: its outcome is not
    /// known).
    pub fn kind(self) -> TxnErrorKind {
        let fenced = matches!(
            self.code,
            Some(
                RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
                    | RDKafkaErrorCode::FencedInstanceId
                    | RDKafkaErrorCode::InvalidProducerIdMapping
            )
        );
        if fenced {
            TxnErrorKind::Fenced
        } else if self.requires_abort && !self.fatal {
            TxnErrorKind::Retriable
        } else {
            TxnErrorKind::Fatal
        }
    }
}

/// A transactional producer and its open transaction, if any.
pub struct Transaction<P: TransactionalProducer> {
    producer: P,
    open: bool,
    acks: Vec<Ack>,
    /// Whether a failed transaction is aborted here; otherwise the caller replaces the producer.
    aborts_failures: bool,
}

impl<P: TransactionalProducer> Transaction<P> {
    /// Runs transactions on `producer` (whose transactions are initialised). A failed
    /// transaction is aborted, so the producer can go on when the abort works.
    pub fn new(producer: P) -> Self {
        Transaction {
            producer,
            open: false,
            acks: Vec::new(),
            aborts_failures: true,
        }
    }

    /// Like [`Transaction::new`], for a caller that replaces the producer after any failure
    /// (a stage is rebuilt): a failed transaction is not aborted here, where the abort could
    /// block for as long as the broker is unreachable, but by the next producer's
    /// `init_transactions`. Every failure is then [`TxnErrorKind::Fatal`] (or `Fenced`).
    pub fn replaced_on_failure(producer: P) -> Self {
        Transaction {
            aborts_failures: false,
            ..Self::new(producer)
        }
    }

    /// Whether a transaction is open.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Opens a transaction unless one is open.
    pub fn begin(&mut self) -> Result<(), TxnError> {
        if self.open {
            return Ok(());
        }
        self.producer.begin().map_err(|error| {
            // A transaction that cannot begin leaves nothing open to abort.
            let kind = match CallFailure::of(&error).kind() {
                TxnErrorKind::Retriable => TxnErrorKind::Fatal,
                kind => kind,
            };
            TxnError::new(kind, format!("cannot begin a transaction ({error})"))
        })?;
        self.open = true;
        Ok(())
    }

    /// Queues `record` in the open transaction (opening one if needed); its position.
    pub async fn send(&mut self, record: &OutRecord) -> Result<usize, TxnError> {
        self.begin()?;
        match self.producer.queue(record).await {
            Ok(ack) => {
                self.acks.push(ack);
                Ok(self.acks.len() - 1)
            }
            Err(error) => Err(self.aborted(format!(
                "cannot send {} to {} ({error})",
                record.id, record.topic
            ))),
        }
    }

    /// Commits the open transaction, with the consumed `offsets` of `group` when given. Waits
    /// for every queued record first: if one was not written the transaction is aborted and
    /// the error names it. Committing with nothing open does nothing.
    pub async fn commit(
        &mut self,
        offsets: Option<(&TopicPartitionList, &P::Group)>,
    ) -> Result<(), TxnError> {
        if !self.open {
            return Ok(());
        }
        // Waiting for the acknowledgements first also spares the commit librdkafka's own
        // flush, which polls in slices of up to 100 ms.
        let failed = failed_acks(std::mem::take(&mut self.acks)).await;
        if let Some((_, _, error)) = failed.first() {
            let mut aborted = self.aborted(format!(
                "a record of the transaction was not written ({error})"
            ));
            aborted.failed = failed;
            return Err(aborted);
        }
        if let Some((offsets, group)) = offsets
            && offsets.count() > 0
            && let Err(error) = self.producer.send_offsets(offsets, group)
        {
            return Err(self.call_failed("cannot add the consumed offsets", &error));
        }
        let committed = self.producer.commit();
        match committed {
            Ok(()) => {
                self.open = false;
                Ok(())
            }
            Err(error) => Err(self.call_failed("the transaction did not commit", &error)),
        }
    }

    /// Aborts the open transaction, if any: nothing of it becomes visible.
    pub fn abort(&mut self) -> Result<(), TxnError> {
        if !self.open {
            return Ok(());
        }
        self.acks.clear();
        self.open = false;
        self.producer.abort().map_err(|error| {
            TxnError::new(
                match CallFailure::of(&error).kind() {
                    TxnErrorKind::Fenced => TxnErrorKind::Fenced,
                    _ => TxnErrorKind::Fatal,
                },
                format!("cannot abort the transaction ({error})"),
            )
        })
    }

    /// A transactional call failed: abort when librdkafka says the transaction must be
    /// aborted; otherwise the producer is given up (fenced, fatal, or an unknown outcome).
    fn call_failed(&mut self, what: &str, error: &KafkaError) -> TxnError {
        match CallFailure::of(error).kind() {
            TxnErrorKind::Retriable => self.aborted(format!("{what} ({error})")),
            kind => {
                self.open = false;
                self.acks.clear();
                TxnError::new(kind, format!("{what} ({error})"))
            }
        }
    }

    /// Aborts after `cause`: retriable if the abort worked, else what the abort says. Without
    /// aborting failures here, the transaction is left to the next producer.
    fn aborted(&mut self, cause: String) -> TxnError {
        if !self.aborts_failures {
            self.open = false;
            self.acks.clear();
            return TxnError::new(
                TxnErrorKind::Fatal,
                format!("{cause}; left open for the next producer to abort"),
            );
        }
        match self.abort() {
            Ok(()) => TxnError::new(TxnErrorKind::Retriable, cause),
            Err(failed) => TxnError::new(failed.kind, format!("{cause}; {}", failed.message)),
        }
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A producer without a broker: records every call, fails the calls it is told to.

    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use futures::FutureExt;

    use super::*;
    use crate::kafka::publish::Delivery;

    /// One call made on the fake producer.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Call {
        Begin,
        Queue(String),
        /// The acknowledgement of a queued record came (listed by `history` only).
        Acked(String),
        SendOffsets(Vec<(String, i32, i64)>),
        Commit,
        Abort,
    }

    /// What the fake producer does.
    #[derive(Default)]
    pub struct Script {
        /// Calls in order.
        pub calls: Vec<Call>,
        /// Record ids whose acknowledgement fails, with the error code (once each).
        pub failing_acks: HashMap<String, RDKafkaErrorCode>,
        /// Record ids whose acknowledgement always fails, with the error code.
        pub refused: HashMap<String, RDKafkaErrorCode>,
        /// The error the next commit returns.
        pub commit_error: Option<KafkaError>,
        /// Whether aborts fail.
        pub abort_fails: bool,
        /// Commits wait at this gate (after being recorded) until it opens.
        pub commit_gate: Option<Arc<Gate>>,
    }

    /// A gate that blocks until it is opened.
    #[derive(Default)]
    pub struct Gate {
        open: Mutex<bool>,
        opened: std::sync::Condvar,
    }

    impl Gate {
        /// Lets every waiter (and every later one) through.
        pub fn open(&self) {
            *self.open.lock().unwrap() = true;
            self.opened.notify_all();
        }

        /// Blocks until the gate is open.
        fn wait(&self) {
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.opened.wait(open).unwrap();
            }
        }
    }

    /// The fake producer (clones share the script).
    #[derive(Clone, Default)]
    pub struct FakeProducer(pub Arc<Mutex<Script>>);

    impl FakeProducer {
        /// The calls made so far.
        pub fn calls(&self) -> Vec<Call> {
            let mut calls = self.history();
            calls.retain(|call| !matches!(call, Call::Acked(_)));
            calls
        }

        /// The calls made so far, with the acknowledgements in the order they came.
        pub fn history(&self) -> Vec<Call> {
            self.script().calls.clone()
        }

        /// The script, to change what comes next.
        pub fn script(&self) -> std::sync::MutexGuard<'_, Script> {
            self.0.lock().unwrap()
        }

        fn call(&self, call: Call) {
            self.script().calls.push(call);
        }
    }

    impl RecordQueue for FakeProducer {
        async fn queue(&self, record: &OutRecord) -> KafkaResult<Ack> {
            self.call(Call::Queue(record.id.clone()));
            let failure = {
                let mut script = self.script();
                let once = script.failing_acks.remove(&record.id);
                once.or_else(|| script.refused.get(&record.id).copied())
            };
            let (script, id) = (self.clone(), record.id.clone());
            Ok(async move {
                script.call(Call::Acked(id));
                match failure {
                    Some(code) => Err((Some(code), format!("broker refused: {code:?}"))),
                    None => Ok(Delivery {
                        partition: 0,
                        offset: 0,
                    }),
                }
            }
            .boxed())
        }
    }

    impl TransactionalProducer for FakeProducer {
        type Group = ();

        fn begin(&self) -> KafkaResult<()> {
            self.call(Call::Begin);
            Ok(())
        }

        fn send_offsets(&self, offsets: &TopicPartitionList, _: &()) -> KafkaResult<()> {
            let offsets = offsets
                .elements()
                .iter()
                .map(|e| {
                    let offset = match e.offset() {
                        rdkafka::Offset::Offset(offset) => offset,
                        _ => -1,
                    };
                    (e.topic().to_string(), e.partition(), offset)
                })
                .collect();
            self.call(Call::SendOffsets(offsets));
            Ok(())
        }

        fn commit(&self) -> KafkaResult<()> {
            self.call(Call::Commit);
            let gate = self.script().commit_gate.clone();
            if let Some(gate) = gate {
                tokio::task::block_in_place(|| gate.wait());
            }
            match self.script().commit_error.take() {
                Some(error) => Err(error),
                None => Ok(()),
            }
        }

        fn abort(&self) -> KafkaResult<()> {
            self.call(Call::Abort);
            if self.script().abort_fails {
                Err(KafkaError::MessageProduction(RDKafkaErrorCode::Fail))
            } else {
                Ok(())
            }
        }
    }

    /// A record with this id.
    pub fn record(id: &str) -> OutRecord {
        OutRecord {
            topic: "out".into(),
            partition: None,
            key: None,
            payload: Some(b"{}".to_vec()),
            headers: crate::event::headers::RecordHeaders::new(),
            id: id.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{Call, FakeProducer, record};
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_transaction_queues_then_sends_offsets_then_commits() {
        let producer = FakeProducer::default();
        let mut txn = Transaction::new(producer.clone());
        assert_eq!(txn.send(&record("a")).await.unwrap(), 0);
        assert_eq!(txn.send(&record("b")).await.unwrap(), 1);
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset("in", 0, rdkafka::Offset::Offset(5))
            .unwrap();
        txn.commit(Some((&offsets, &()))).await.unwrap();
        assert!(!txn.is_open());
        assert_eq!(
            producer.calls(),
            [
                Call::Begin,
                Call::Queue("a".into()),
                Call::Queue("b".into()),
                Call::SendOffsets(vec![("in".into(), 0, 5)]),
                Call::Commit
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_record_not_written_aborts_the_transaction_and_is_named() {
        let producer = FakeProducer::default();
        producer
            .script()
            .failing_acks
            .insert("b".into(), RDKafkaErrorCode::MessageSizeTooLarge);
        let mut txn = Transaction::new(producer.clone());
        txn.send(&record("a")).await.unwrap();
        txn.send(&record("b")).await.unwrap();
        let error = txn.commit(None).await.unwrap_err();
        assert_eq!(error.kind, TxnErrorKind::Retriable);
        assert_eq!(error.failed.len(), 1);
        assert_eq!(error.failed[0].0, 1);
        assert_eq!(
            error.failed[0].1,
            Some(RDKafkaErrorCode::MessageSizeTooLarge)
        );
        assert_eq!(producer.calls().last(), Some(&Call::Abort));
        assert!(!producer.calls().contains(&Call::Commit));
        assert!(!txn.is_open());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn an_abort_that_fails_makes_the_producer_unusable() {
        let producer = FakeProducer::default();
        producer.script().abort_fails = true;
        producer
            .script()
            .failing_acks
            .insert("a".into(), RDKafkaErrorCode::RequestTimedOut);
        let mut txn = Transaction::new(producer.clone());
        txn.send(&record("a")).await.unwrap();
        let error = txn.commit(None).await.unwrap_err();
        assert_eq!(error.kind, TxnErrorKind::Fatal);
        assert!(!error.producer_usable());
        assert!(error.message.contains("cannot abort"), "{}", error.message);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_transaction_replaced_on_failure_is_not_aborted_in_place() {
        let producer = FakeProducer::default();
        producer
            .script()
            .failing_acks
            .insert("a".into(), RDKafkaErrorCode::RequestTimedOut);
        let mut txn = Transaction::replaced_on_failure(producer.clone());
        txn.send(&record("a")).await.unwrap();
        let error = txn.commit(None).await.unwrap_err();
        assert_eq!(error.kind, TxnErrorKind::Fatal);
        assert_eq!(error.failed.len(), 1);
        assert!(!producer.calls().contains(&Call::Abort));
        assert!(!txn.is_open());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_commit_with_nothing_open_does_nothing() {
        let producer = FakeProducer::default();
        let mut txn = Transaction::new(producer.clone());
        txn.commit(None).await.unwrap();
        txn.abort().unwrap();
        assert!(producer.calls().is_empty());
    }

    #[test]
    fn failures_are_sorted_by_what_the_writer_can_do() {
        let call = |code, fatal, requires_abort| CallFailure {
            code: Some(code),
            fatal,
            requires_abort,
        };
        assert_eq!(
            call(RDKafkaErrorCode::ProducerFenced, true, false).kind(),
            TxnErrorKind::Fenced
        );
        assert_eq!(
            call(RDKafkaErrorCode::InvalidProducerEpoch, false, true).kind(),
            TxnErrorKind::Fenced
        );
        assert_eq!(
            call(RDKafkaErrorCode::MessageSizeTooLarge, false, true).kind(),
            TxnErrorKind::Retriable
        );
        // A commit that timed out may still complete: its outcome is not known.
        assert_eq!(
            call(RDKafkaErrorCode::RequestTimedOut, false, false).kind(),
            TxnErrorKind::Fatal
        );
        assert_eq!(
            call(RDKafkaErrorCode::Fail, true, true).kind(),
            TxnErrorKind::Fatal
        );
        let plain = CallFailure::of(&KafkaError::Canceled);
        assert_eq!(plain.kind(), TxnErrorKind::Fatal);
    }
}
