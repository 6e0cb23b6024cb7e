//! The exactly-once ingress's commit loop: a pool of transactional producers
//! (`http.ingress_producers`), each running one transaction at a time. A free producer takes
//! every request queued (after waiting for the first) and commits their events and answers in
//! one transaction (group commit); while it commits, the requests that arrive go to the next
//! free producer instead of waiting for it, so closed-loop clients are not serialized behind
//! one commit. A request is answered only after its own transaction committed. Each producer is
//! supervised: after a fatal error, fencing, or a transaction that cannot be aborted it is
//! rebuilt (a new `init_transactions` under the same `transactional.id`) with backoff while the
//! others go on; a producer that is down takes no request. The ingress is ready while at least
//! one producer is up; when none is, requests fail at once with `503` instead of waiting.
//!
//! Each producer's transactions also run the stages fused into the ingress (see
//! [`crate::stage::fusion`]): the stages reading the ingress's topics handle its events in
//! process, and their outputs and processed ids are committed with the requests, so an event
//! crosses one transaction fewer. The stages' own workers skip what was handled here.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::FutureExt;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::health::Reporter;
use crate::kafka::{OutRecord, Transaction, TransactionalProducer, TxnError, TxnErrorKind};
use crate::observe::{HostEvent, IngressCommitted};
use crate::stage::{Committed, InProcess};
use crate::store::{IngressRecord, Table, stamp};

/// Most requests committed in one transaction.
const MAX_GROUP: usize = 512;

/// Makes the transactional producer of pool slot `n` (each slot has its own stable
/// `transactional.id`) with its transactions initialised (blocking).
pub type ProducerFactory = Factory<FutureProducer>;

/// [`ProducerFactory`] for any transactional producer.
pub type Factory<P> = Arc<dyn Fn(usize) -> anyhow::Result<P> + Send + Sync>;

/// Makes a slot's share of the stages fused into the ingress (its own instances of their
/// plugins); [`crate::stage::NothingInProcess`] when none is.
pub type InProcessFactory = Arc<dyn Fn() -> Box<dyn InProcess> + Send + Sync>;

/// The ingress's transactional producers and what runs in their transactions.
pub struct IngressPool {
    /// Makes slot `n`'s producer.
    pub make: ProducerFactory,
    /// How many producers run transactions at once (`http.ingress_producers`).
    pub producers: usize,
    /// Makes a slot's share of the stages fused into the ingress.
    pub in_process: InProcessFactory,
}

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

/// What a transactional producer needs to run in the pool.
pub(super) trait PoolProducer:
    TransactionalProducer<Group: Sync> + Send + Sync + 'static
{
}
impl<P: TransactionalProducer<Group: Sync> + Send + Sync + 'static> PoolProducer for P {}

/// Makes the producers of slots `0..producers` with `make`, all at once (blocking), and one
/// for each of slots `producers..fence_below`, dropped at once: ids a predecessor with more
/// producers may have used, whose open transaction this aborts (instead of `read_committed`
/// readers waiting for its timeout). Each `init_transactions` also aborts what the slot's
/// predecessor left open, so once this returns no transaction of a killed predecessor holds
/// readers back. The producers (or why one could not be made) by slot.
pub(super) fn make_producers<P: Send>(
    make: &Factory<P>,
    producers: usize,
    fence_below: usize,
) -> Vec<anyhow::Result<P>> {
    let mut made: Vec<anyhow::Result<P>> = std::thread::scope(|scope| {
        let making: Vec<_> = (0..producers.max(fence_below))
            .map(|n| scope.spawn(move || make(n)))
            .collect();
        making
            .into_iter()
            .map(|made| {
                made.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("building the producer panicked")))
            })
            .collect()
    });
    for (n, fenced) in made.drain(producers..).enumerate() {
        if let Err(error) = fenced {
            tracing::warn!(
                slot = producers + n,
                error = format!("{error:#}"),
                "cannot fence an ingress transactional id this host no longer uses; a transaction left open under it ends at its timeout"
            );
        }
    }
    made
}

/// What the commit loop works with besides its producers.
pub(super) struct PoolParts<P> {
    /// Makes a slot's producer (again, after it failed).
    pub(super) make: Factory<P>,
    /// Makes a slot's share of the stages fused into the ingress.
    pub(super) in_process: InProcessFactory,
    /// The ingress's readiness.
    pub(super) health: Reporter,
    /// Committed answers (the local copy of the answers topic).
    pub(super) known: Table,
    /// Requests handed over and not finished yet.
    pub(super) in_flight: InFlightKeys,
}

/// Runs the ingress's transactions until no request can come any more: slot 0 with `first`,
/// the slots after it with `others` (a producer that could not be made is built again in the
/// background with `parts.make`, as is any producer that fails later).
pub(super) async fn commit_loop<P: PoolProducer>(
    first: P,
    others: Vec<anyhow::Result<P>>,
    parts: PoolParts<P>,
    receiver: mpsc::Receiver<Submission>,
) {
    let PoolParts {
        make,
        in_process,
        health,
        known,
        in_flight,
    } = parts;
    health.ok();
    let mut pool = Pool {
        make,
        idle: vec![Slot {
            n: 0,
            txn: Transaction::new(first),
            work: in_process(),
        }],
        in_process,
        health,
        known,
        in_flight,
        receiver,
        committing: JoinSet::new(),
        started: vec![None; others.len() + 1],
        rebuilding: JoinSet::new(),
    };
    for (n, producer) in (1..).zip(others) {
        pool.built(Built {
            n,
            failures: 0,
            producer,
        });
    }
    pool.run().await;
}

/// One producer of the pool and the transactions it runs.
struct Slot<P: PoolProducer> {
    /// Its place in the pool (and so its `transactional.id`).
    n: usize,
    txn: Transaction<P>,
    /// The stages fused into the ingress, as this slot runs them.
    work: Box<dyn InProcess>,
}

/// A slot whose transaction ended, and how it failed if it did.
struct Finished<P: PoolProducer> {
    slot: Slot<P>,
    failure: Option<TxnError>,
}

/// A slot's producer (re)built, or why not; the failures in a row before this attempt.
struct Built<P> {
    n: usize,
    failures: u32,
    producer: anyhow::Result<P>,
}

/// The producers, the queue they take requests from, and what they work with.
struct Pool<P: PoolProducer> {
    /// Makes a slot's producer.
    make: Factory<P>,
    /// Makes a slot's share of the fused stages.
    in_process: InProcessFactory,
    /// The ingress's readiness.
    health: Reporter,
    /// Committed answers (the local copy of the answers topic).
    known: Table,
    /// Requests handed over and not finished yet.
    in_flight: InFlightKeys,
    /// Requests to commit.
    receiver: mpsc::Receiver<Submission>,
    /// Producers that are up and free.
    idle: Vec<Slot<P>>,
    /// Producers running a transaction.
    committing: JoinSet<Finished<P>>,
    /// By slot: when its running transaction began.
    started: Vec<Option<Instant>>,
    /// Producers being (re)built.
    rebuilding: JoinSet<Built<P>>,
}

impl<P: PoolProducer> Pool<P> {
    /// Hands queued requests to free producers, takes back those whose transaction ended, and
    /// the ones rebuilt; refuses requests at once while no producer is up. When no request
    /// can come any more, waits for the transactions running and returns.
    async fn run(&mut self) {
        loop {
            // With every producer up busy, requests wait in the queue (and are committed
            // together by the first producer free); with none up, they are refused.
            let take = !self.idle.is_empty() || self.committing.is_empty();
            tokio::select! {
                Some(finished) = self.committing.join_next(), if !self.committing.is_empty() => {
                    match finished {
                        Ok(finished) => self.finished(finished),
                        Err(error) => tracing::error!(%error, "an ingress transaction task failed"),
                    }
                }
                Some(built) = self.rebuilding.join_next(), if !self.rebuilding.is_empty() => {
                    match built {
                        Ok(built) => self.built(built),
                        Err(error) => tracing::error!(%error, "building an ingress producer failed"),
                    }
                }
                submission = self.receiver.recv(), if take => {
                    let Some(first) = submission else { break };
                    match self.idle.pop() {
                        Some(slot) => self.start(slot, first),
                        None => self.refuse(first),
                    }
                }
            }
        }
        while let Some(finished) = self.committing.join_next().await {
            if let Ok(finished) = finished {
                tokio::task::spawn_blocking(move || drop(finished.slot));
            }
        }
    }

    /// Producers up: free or running a transaction.
    fn up(&self) -> usize {
        self.idle.len() + self.committing.len()
    }

    /// Commits `first` and every request queued after it (up to [`MAX_GROUP`]) in one
    /// transaction of `slot`, in the background; each request is answered when it ends.
    fn start(&mut self, mut slot: Slot<P>, first: Submission) {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match self.receiver.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        self.started[slot.n] = Some(Instant::now());
        self.report_busy();
        let (known, in_flight) = (self.known.clone(), self.in_flight.clone());
        self.committing.spawn(async move {
            let failure = AssertUnwindSafe(commit_and_answer(&mut slot, group, &known, &in_flight))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    Some(TxnError {
                        kind: TxnErrorKind::Fatal,
                        message: "committing the ingress transaction panicked".into(),
                        failed: Vec::new(),
                    })
                });
            Finished { slot, failure }
        });
    }

    /// The stall watch: busy since the oldest running transaction began, idle without one.
    fn report_busy(&self) {
        match self.started.iter().flatten().min() {
            Some(oldest) => self.health.busy_from(*oldest),
            None => self.health.idle(),
        }
    }

    /// A slot's transaction ended: it is free again, or replaced when its producer cannot go
    /// on.
    fn finished(&mut self, Finished { slot, failure }: Finished<P>) {
        self.started[slot.n] = None;
        self.report_busy();
        match failure {
            Some(failure) if needs_new_producer(&failure) => {
                let n = slot.n;
                tokio::task::spawn_blocking(move || drop(slot));
                self.down(n, &failure.message);
                self.rebuilding
                    .spawn(rebuild(self.make.clone(), n, 0, backoff(0)));
            }
            _ => self.idle.push(slot),
        }
    }

    /// A slot's producer is down for `reason`: the ingress is unready when no other is up.
    fn down(&self, n: usize, reason: &str) {
        if self.up() == 0 {
            self.health
                .unready(format!("cannot publish: {reason}; reconnecting"));
        } else {
            tracing::warn!(slot = n, up = self.up(), %reason,
                "an ingress producer is down; the others take the requests while it is rebuilt");
        }
    }

    /// A slot's producer was (re)built, or could not be: it takes requests, or is tried
    /// again after a backoff.
    fn built(
        &mut self,
        Built {
            n,
            failures,
            producer,
        }: Built<P>,
    ) {
        match producer {
            Ok(producer) => {
                tracing::info!(slot = n, "ingress producer ready");
                self.idle.push(Slot {
                    n,
                    txn: Transaction::new(producer),
                    work: (self.in_process)(),
                });
                self.health.ok();
            }
            Err(error) => {
                let failures = failures + 1;
                let error = format!("{error:#}");
                tracing::warn!(slot = n, %error, failures, "cannot build an ingress producer yet");
                self.down(n, &error);
                self.rebuilding
                    .spawn(rebuild(self.make.clone(), n, failures, backoff(failures)));
            }
        }
    }

    /// Refuses `submission` at once: no producer is up.
    fn refuse(&self, submission: Submission) {
        lock(&self.in_flight).remove(&submission.answer.0);
        submission
            .done
            .send(Err(
                "the ingress is reconnecting to Kafka; try again".to_string()
            ))
            .ok();
    }
}

/// Commits `group` in one transaction of `slot`, writes its answers into `known` when it
/// committed, and answers every request of it; how it failed, if it did.
async fn commit_and_answer<P: PoolProducer>(
    slot: &mut Slot<P>,
    mut group: Vec<Submission>,
    known: &Table,
    in_flight: &InFlightKeys,
) -> Option<TxnError> {
    let n = slot.n;
    let committing = Instant::now();
    let result = commit_group(&mut slot.txn, &mut *slot.work, &mut group).await;
    settle_in_process(&mut *slot.work, &result, committing);
    IngressCommitted {
        producer: n,
        requests: group.len(),
        committed: result.is_ok(),
        took: committing.elapsed(),
    }
    .emit();
    let outcome = match &result {
        Ok(()) => {
            remember(known, &group).await;
            Ok(())
        }
        Err(failure) => {
            tracing::warn!(slot = n, error = %failure.message, kind = ?failure.kind,
                requests = group.len(), "ingress transaction failed");
            Err(failure.message.clone())
        }
    };
    let mut flying = lock(in_flight);
    for submission in group {
        flying.remove(&submission.answer.0);
        submission.done.send(outcome.clone()).ok();
    }
    result.err()
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

/// The pause before rebuilding a producer after `failures` failed attempts in a row.
fn backoff(failures: u32) -> Duration {
    crate::backoff::jittered(
        Duration::from_millis(200),
        Duration::from_secs(10),
        failures,
    )
}

/// Makes slot `n`'s producer in the background after `pause`.
async fn rebuild<P: PoolProducer>(
    make: Factory<P>,
    n: usize,
    failures: u32,
    pause: Duration,
) -> Built<P> {
    tokio::time::sleep(pause).await;
    let producer = tokio::task::spawn_blocking(move || make(n))
        .await
        .unwrap_or_else(|error| Err(anyhow::anyhow!("building the producer panicked: {error}")));
    Built {
        n,
        failures,
        producer,
    }
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

/// Publishes the events of a group of requests in one transaction (taken out of the requests,
/// which keep their answers), with what the stages fused into the ingress made of them
/// (`work`).
async fn commit_group<P: PoolProducer>(
    txn: &mut Transaction<P>,
    work: &mut dyn InProcess,
    group: &mut [Submission],
) -> Result<(), TxnError> {
    let mut spans = Vec::new();
    let events = group
        .iter_mut()
        .flat_map(|s| std::mem::take(&mut s.records))
        .collect();
    let records = work.expand(events, &mut spans);
    let mut sent = Ok(());
    for record in records.iter().chain(&work.closing_records()) {
        sent = txn.send(record).await.map(drop);
        if sent.is_err() {
            break;
        }
    }
    let started_at = SystemTime::now();
    let committed = match sent {
        Ok(()) => txn.commit(None).await,
        Err(error) => Err(error),
    };
    let ended_at = SystemTime::now();
    for mut span in spans {
        span.child("commit", started_at, ended_at);
        if let Err(error) = &committed {
            span.fail(&error.message);
        }
        span.end(ended_at);
    }
    committed
}

/// Tells the fused stages' share of the slot's work how its transaction (opened at `opened`)
/// ended: their processed ids and counts are kept when it committed, dropped when it did not.
fn settle_in_process(work: &mut dyn InProcess, result: &Result<(), TxnError>, opened: Instant) {
    if result.is_err() {
        work.on_dropped(&[]);
        return;
    }
    if let Err(error) = work.on_safe() {
        tracing::warn!(
            error = format!("{error:#}"),
            "cannot keep the ids the stages fused into the ingress processed in the local store; an outside repeat of one of them on their input is processed again on this host"
        );
    }
    work.on_committed(&Committed {
        fates: Vec::new(),
        latency: opened.elapsed(),
    });
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::health::Health;
    use crate::kafka::TxnErrorKind;
    use crate::kafka::fake::{Call, FakeProducer, Gate, record};
    use crate::stage::NothingInProcess;
    use crate::store::{LocalStore, Scope};

    /// A pool of fake producers running in the background, and what it is watched through.
    struct Running {
        submissions: mpsc::Sender<Submission>,
        health: Health,
        in_flight: InFlightKeys,
        known: Table,
        _dir: tempfile::TempDir,
    }

    /// Starts a pool of `producers` slots: slot 0 with `first`, the others (and rebuilds)
    /// made by `make`.
    fn pool(first: FakeProducer, producers: usize, make: Factory<FakeProducer>) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let known = Table::expiring(&store, "answers:t", Scope::Topic, Duration::from_secs(3600));
        let health = Health::default();
        let reporter = health.reporter("ingress:order", "starting");
        let in_flight: InFlightKeys = Arc::default();
        let (submissions, receiver) = mpsc::channel(16);
        let others = make_producers(&make, producers, producers).split_off(1);
        let parts = PoolParts {
            make,
            in_process: Arc::new(|| Box::new(NothingInProcess)),
            health: reporter,
            known: known.clone(),
            in_flight: in_flight.clone(),
        };
        tokio::spawn(commit_loop(first, others, parts, receiver));
        Running {
            submissions,
            health,
            in_flight,
            known,
            _dir: dir,
        }
    }

    impl Running {
        /// Hands the request `key` (one record with the same id) to the pool.
        async fn submit(&self, key: &str) -> oneshot::Receiver<Result<(), String>> {
            lock(&self.in_flight).insert(key.to_string());
            let (done, answered) = oneshot::channel();
            let answer = IngressRecord {
                body_hash: "h".into(),
                status: 202,
                response: "{}".into(),
                recorded_at_ms: crate::store::unix_ms(std::time::SystemTime::now()),
            };
            let submission = Submission {
                records: vec![record(key)],
                answer: (key.to_string(), answer),
                done,
            };
            assert!(self.submissions.send(submission).await.is_ok());
            answered
        }

        /// Whether the answer of `key` is in the local copy.
        fn remembered(&self, key: &str) -> bool {
            self.known.get(0, key.as_bytes()).unwrap().is_some()
        }
    }

    /// Waits (up to 10 s) until `condition` holds.
    async fn until(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Commits begun (including those still waiting at their gate) across `producers`.
    fn commits(producers: &[FakeProducer]) -> usize {
        producers
            .iter()
            .map(|p| p.calls().iter().filter(|c| **c == Call::Commit).count())
            .sum()
    }

    /// A factory handing out `producers` by slot.
    fn by_slot(producers: &[FakeProducer]) -> Factory<FakeProducer> {
        let producers = producers.to_vec();
        Arc::new(move |n| Ok(producers[n].clone()))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_second_transaction_commits_while_the_first_is_still_committing() {
        let gate = Arc::new(Gate::default());
        let producers: Vec<FakeProducer> = (0..2)
            .map(|_| {
                let producer = FakeProducer::default();
                producer.script().commit_gate = Some(gate.clone());
                producer
            })
            .collect();
        // Opened however the test ends, so a failing test does not leave commits blocked.
        struct OpenOnDrop(Arc<Gate>);
        impl Drop for OpenOnDrop {
            fn drop(&mut self) {
                self.0.open();
            }
        }
        let _open = OpenOnDrop(gate.clone());
        let running = pool(producers[0].clone(), 2, by_slot(&producers));
        let first = running.submit("a").await;
        until("the first transaction commits", || commits(&producers) == 1).await;
        // The first commit is held: with one producer the next request would wait for it.
        let mut second = running.submit("b").await;
        until("a second transaction commits beside it", || {
            commits(&producers) == 2
        })
        .await;
        assert!(
            producers.iter().all(|p| p.calls().contains(&Call::Commit)),
            "each producer runs one of the two transactions"
        );
        assert!(
            second.try_recv().is_err(),
            "answered before its transaction committed"
        );
        assert!(!running.remembered("a") && !running.remembered("b"));
        gate.open();
        assert_eq!(first.await.unwrap(), Ok(()));
        assert_eq!(second.await.unwrap(), Ok(()));
        assert!(running.remembered("a") && running.remembered("b"));
        assert!(lock(&running.in_flight).is_empty());
        assert!(running.health.ready(), "{}", running.health.problems());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_producer_that_is_down_takes_no_request_and_none_up_refuses_at_once() {
        let working = FakeProducer::default();
        let attempts = Arc::new(AtomicUsize::new(0));
        let make: Factory<FakeProducer> = {
            let attempts = attempts.clone();
            Arc::new(move |n| {
                attempts.fetch_add(1, Ordering::Relaxed);
                anyhow::bail!("slot {n}: the broker does not answer")
            })
        };
        let running = pool(working.clone(), 2, make);
        until("slot 1 was tried", || attempts.load(Ordering::Relaxed) > 0).await;
        for key in ["a", "b", "c"] {
            let answered = running.submit(key).await;
            assert_eq!(answered.await.unwrap(), Ok(()), "{key}");
            assert!(running.remembered(key));
        }
        assert_eq!(commits(std::slice::from_ref(&working)), 3);
        assert!(
            running.health.ready(),
            "one producer up is enough: {}",
            running.health.problems()
        );
        // The records of the next transaction time out: its producer is replaced, and no
        // other is up.
        working
            .script()
            .failing_acks
            .insert("d".into(), RDKafkaErrorCode::MessageTimedOut);
        let failed = running.submit("d").await;
        assert!(failed.await.unwrap().is_err());
        assert!(!running.remembered("d"));
        until("the ingress is unready", || !running.health.ready()).await;
        assert!(
            running.health.problems()["ingress:order"]["reason"]
                .as_str()
                .unwrap()
                .starts_with("cannot publish"),
            "{}",
            running.health.problems()
        );
        let refused = running.submit("e").await;
        let refused = refused.await.unwrap().unwrap_err();
        assert!(refused.contains("reconnecting"), "{refused}");
        assert!(lock(&running.in_flight).is_empty());
    }

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
