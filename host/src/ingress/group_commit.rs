//! The exactly-once ingress's commit loop: requests queued while a transaction runs are
//! committed together in the next one (group commit), events and answers in one transaction
//! of one transactional producer. The producer is supervised: after a fatal error, fencing,
//! or a transaction that cannot be aborted it is rebuilt (a new `init_transactions`) with
//! backoff, and requests meanwhile fail at once with `503` instead of waiting.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::{mpsc, oneshot};

use crate::health::Reporter;
use crate::kafka::{OutRecord, Transaction, TxnError};
use crate::observe::{HostEvent, IngressCommitted};
use crate::store::{IngressRecord, Table, stamp};

/// Most requests committed in one transaction.
const MAX_GROUP: usize = 512;

/// Makes a transactional producer with its transactions initialised (blocking).
pub type ProducerFactory = Arc<dyn Fn() -> anyhow::Result<FutureProducer> + Send + Sync>;

/// Keys of requests handed to the committer and not finished yet.
pub(super) type InFlightKeys = Arc<Mutex<HashSet<String>>>;

/// The guarded value, even if a holder panicked.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// A request handed to the commit loop: its events, its answer, who to tell.
pub(super) struct Submission {
    pub(super) records: Vec<OutRecord>,
    pub(super) answer: (String, IngressRecord),
    pub(super) done: oneshot::Sender<Result<(), String>>,
}

/// Why a repeat of a request still being committed is refused.
pub(super) const IN_FLIGHT: &str =
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
pub(super) async fn commit_loop(
    producer: FutureProducer,
    make: ProducerFactory,
    health: Reporter,
    known: Table,
    in_flight: InFlightKeys,
    receiver: mpsc::Receiver<Submission>,
) {
    health.ok();
    let mut committer = GroupCommitter {
        make,
        health,
        known,
        in_flight,
        receiver,
    };
    let mut link = Link::Up(Transaction::new(producer));
    loop {
        let next = match link {
            Link::Up(txn) => committer.commit_next(txn).await,
            Link::Down {
                rebuilding,
                failures,
            } => committer.while_down(rebuilding, failures).await,
        };
        match next {
            Some(next) => link = next,
            None => break,
        }
    }
}

/// What the commit loop works with besides its producer.
struct GroupCommitter {
    /// Makes a new producer after one fails.
    make: ProducerFactory,
    /// The ingress's readiness.
    health: Reporter,
    /// Committed answers (the local copy of the answers topic).
    known: Table,
    /// Requests handed over and not finished yet.
    in_flight: InFlightKeys,
    /// Requests to commit.
    receiver: mpsc::Receiver<Submission>,
}

impl GroupCommitter {
    /// Commits every request waiting (after waiting for the first) in one transaction of
    /// `txn`; the link after it (down when the producer must be replaced), `None` when no
    /// request can come any more.
    async fn commit_next(&mut self, mut txn: Transaction<FutureProducer>) -> Option<Link> {
        let first = self.receiver.recv().await?;
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match self.receiver.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        self.health.busy();
        let committing = std::time::Instant::now();
        let result = commit_group(&mut txn, &group).await;
        self.health.idle();
        IngressCommitted {
            requests: group.len(),
            committed: result.is_ok(),
            took: committing.elapsed(),
        }
        .emit();
        let (outcome, link) = match result {
            Ok(()) => {
                remember(&self.known, &group).await;
                (Ok(()), Link::Up(txn))
            }
            Err(failure) => {
                tracing::warn!(error = %failure.message, kind = ?failure.kind, requests = group.len(), "ingress transaction failed");
                let link = if needs_new_producer(&failure) {
                    self.health
                        .unready(format!("cannot publish: {}; reconnecting", failure.message));
                    tokio::task::spawn_blocking(move || drop(txn));
                    Link::Down {
                        rebuilding: rebuild(self.make.clone(), 0),
                        failures: 0,
                    }
                } else {
                    Link::Up(txn)
                };
                (Err(failure.message), link)
            }
        };
        let mut flying = lock(&self.in_flight);
        for submission in group {
            flying.remove(&submission.answer.0);
            submission.done.send(outcome.clone()).ok();
        }
        Some(link)
    }

    /// While the producer is rebuilt, requests are refused at once; the link once the rebuild
    /// ends (up, or down with the next attempt), `None` when no request can come any more.
    async fn while_down(
        &mut self,
        mut rebuilding: tokio::task::JoinHandle<anyhow::Result<FutureProducer>>,
        failures: u32,
    ) -> Option<Link> {
        tokio::select! {
            built = &mut rebuilding => Some(match built {
                Ok(Ok(producer)) => {
                    tracing::info!("ingress producer rebuilt");
                    self.health.ok();
                    Link::Up(Transaction::new(producer))
                }
                Ok(Err(error)) => self.rebuild_failed(format!("{error:#}"), failures + 1),
                Err(error) => self.rebuild_failed(error.to_string(), failures + 1),
            }),
            submission = self.receiver.recv() => {
                let submission = submission?;
                lock(&self.in_flight).remove(&submission.answer.0);
                submission
                    .done
                    .send(Err("the ingress is reconnecting to Kafka; try again".to_string()))
                    .ok();
                Some(Link::Down { rebuilding, failures })
            }
        }
    }

    /// The producer could not be rebuilt (the `failures`th time in a row): try again later.
    fn rebuild_failed(&self, error: String, failures: u32) -> Link {
        tracing::warn!(%error, failures, "cannot rebuild the ingress producer yet");
        self.health
            .unready(format!("cannot publish: {error}; reconnecting"));
        Link::Down {
            rebuilding: rebuild(self.make.clone(), failures),
            failures,
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
