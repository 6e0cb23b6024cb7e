//! Exactly-once: outputs, state changelog records, dead letters, processed ids and the consumed
//! offsets of a batch go into one Kafka transaction of the stage's own transactional producer;
//! readers downstream use `read_committed`. A crash or a lost partition aborts the transaction
//! and the inputs are processed again from the last committed offsets, with the state they saw
//! the first time. Committing offsets with the group's metadata fences zombie instances. The
//! processed ids are [`super::ProcessedLog`]'s.

use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;

use super::contract::{Guarantee, Settle};
use crate::kafka::{OutRecord, Transaction, TransactionalProducer, TxnError};
use crate::observe::{HostEvent, TransactionAborted};
use crate::stage::fenced::FencedOut;
use crate::stage::positions::InputPositions;

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

    fn defers_skipped_work(&self) -> bool {
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
