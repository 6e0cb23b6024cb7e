//! The poll loop of one topic-fed stage: it owns the consumer, its rebalances and the pacing
//! of batches. Every batch goes: poll → decode → [`StageTask::handle`] (restore, dedup, plugin,
//! fates) → the [`Committer`] takes what it made → the consumer goes where the task says
//! (parked partitions, seeks back) → the committer commits when the work is due. How the work
//! becomes safe is the stage's guarantee's business (see [`super::guarantee`]); the loop never
//! looks at the mode.
//!
//! A plugin's `retry` answer parks the event's partition (see [`super::retry`]); the other
//! partitions go on. The plugin instance follows hot swaps between two events.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::FutureExt;
use rdkafka::consumer::{Consumer, ConsumerGroupMetadata};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use super::commit::Committer;
use super::fault::SilentPause;
use super::fenced::FencedOut;
use super::live_plugin::LivePlugin;
use super::outcome::Move;
use super::positions::{StageConsumer, rewind};
use super::processor::{Input, Route, StageContext};
use super::retry::TopicPartition;
use super::stage_parts::lock;
use super::task::StageTask;
use super::watchdog::Watchdog;
use crate::event::cloudevents;
use crate::event::dead_letter::Origin;
use crate::health::Reporter;
use crate::kpi::{KpiSink, kpi_record};
use crate::observe::{
    ConsumerFailed, HostEvent, StageStalled, StageStarted, StageStopped, StateMeasured,
};

/// Where a stage publishes its own KPI windows.
pub struct KpiTarget {
    /// KPI topic and event type.
    pub route: Route,
    /// Window length.
    pub interval: Duration,
    /// Keeps KPI ids of different host instances apart.
    pub instance: String,
    /// Publishes the windows, best effort, outside the stage's transactions.
    pub sink: KpiSink,
}

/// A running topic-fed stage: its consumer and everything else.
pub struct StageRunner {
    /// The stage's consumer, subscribed to its input topics.
    pub consumer: StageConsumer,
    /// The rest, kept apart because in-flight messages borrow the consumer.
    pub worker: Worker,
}

/// Everything of a topic-fed stage but its consumer.
pub struct Worker {
    /// Handles each batch.
    pub task: StageTask<LivePlugin>,
    /// Owns the open work and commits it.
    pub committer: Committer<ConsumerGroupMetadata>,
    /// Where KPI windows go, if KPIs are enabled.
    pub kpi: Option<KpiTarget>,
    /// `ce_type` by input topic, for records that carry no `ce_type` header.
    pub input_event_types: HashMap<String, String>,
    /// Largest batch handled at once.
    pub max_batch: usize,
    /// Where the stage reports that a batch or a commit takes too long (stalled).
    pub health: Reporter,
    /// Ends this incarnation when it has input waiting, or is out of its group, and makes no
    /// progress for the stage's `stall_timeout` (see [`super::watchdog`]).
    pub watchdog: Watchdog,
    /// A fault the host's own tests inject (see [`super::fault`]); `None` in production.
    pub fault: Option<SilentPause>,
}

/// What one poll gave.
enum Polled<'c> {
    /// The stage is asked to stop.
    Stop,
    /// Nothing to handle (a timer fired, or the consumer failed and paused).
    Again,
    /// Messages to handle (empty: nothing more was fetched while a transaction is open).
    Batch(Vec<BorrowedMessage<'c>>),
}

/// The loop's clocks and counters between polls.
struct Pace {
    /// When the last KPI window was published.
    last_kpi: Instant,
    /// Consumer errors in a row.
    consumer_errors: u32,
    /// Since when the consumer keeps failing.
    failing_since: Option<Instant>,
}

impl StageRunner {
    /// Runs until `shutdown` turns true, then finishes the open work and commits.
    pub async fn run(self, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let StageRunner {
            consumer,
            mut worker,
        } = self;
        worker.run(&consumer, shutdown).await
    }
}

impl Worker {
    fn name(&self) -> &str {
        &self.task.context.name
    }

    async fn run(
        &mut self,
        consumer: &StageConsumer,
        mut shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        StageStarted {
            stage: self.name(),
            version: self.task.plugin.version(),
            mode: self.committer.mode_name(),
            stateful: self.task.state.is_some(),
            fused: self.task.fusion.names().join(","),
        }
        .emit();
        self.health.idle();
        let mut pace = Pace {
            last_kpi: Instant::now(),
            consumer_errors: 0,
            failing_since: None,
        };
        loop {
            self.resume_due(consumer);
            if Instant::now() >= self.watchdog.next_check() {
                self.watch(consumer)?;
            }
            let batch = match self.poll(consumer, &mut shutdown, &mut pace).await? {
                Polled::Stop => break,
                Polled::Again => continue,
                Polled::Batch(batch) => batch,
            };
            if !self.follow_rebalance(consumer)? {
                // The batch is dropped unprocessed with the open work.
                continue;
            }
            if batch.is_empty() {
                if self.committer.is_open() {
                    self.commit(consumer, &mut pace).await?;
                }
                continue;
            }
            self.watchdog.progressed();
            if let Some(fault) = &mut self.fault {
                fault.consumed(consumer, batch.len());
            }
            let drained = batch.len() < self.max_batch;
            self.committer.open()?;
            self.health.busy();
            self.handle_batch(consumer, batch).await?;
            let stopping = *shutdown.borrow();
            if self.committer.is_due(drained) || stopping {
                self.commit(consumer, &mut pace).await?;
            }
            self.health.idle();
            if stopping {
                break;
            }
        }
        self.stop(consumer, &mut pace).await
    }

    /// Waits for input, a timer or the shutdown; commits the work when it falls due meanwhile.
    async fn poll<'c>(
        &mut self,
        consumer: &'c StageConsumer,
        shutdown: &mut watch::Receiver<bool>,
        pace: &mut Pace,
    ) -> anyhow::Result<Polled<'c>> {
        if self.committer.takes_only_fetched() {
            let batch = poll_available(consumer, self.max_batch, self.name(), 0);
            return Ok(Polled::Batch(batch));
        }
        let commit_due = self.committer.due_at();
        let kpi_due = self
            .kpi
            .as_ref()
            .map(|target| pace.last_kpi + target.interval);
        let retry_due = self.task.pacing.retries.next_due();
        let first = tokio::select! {
            biased;
            _ = shutdown.changed() => return Ok(Polled::Stop),
            message = consumer.recv() => message,
            _ = sleep_until_or_forever(retry_due) => return Ok(Polled::Again),
            _ = tokio::time::sleep_until(self.watchdog.next_check().into()) => return Ok(Polled::Again),
            _ = sleep_until_or_forever(commit_due) => {
                self.health.busy();
                self.commit(consumer, pace).await?;
                self.health.idle();
                return Ok(Polled::Again);
            }
            _ = sleep_until_or_forever(kpi_due) => {
                // Idle: publish the window that closed.
                self.publish_kpis(&mut pace.last_kpi);
                return Ok(Polled::Again);
            }
        };
        match first {
            Ok(message) => {
                pace.consumer_errors = 0;
                pace.failing_since = None;
                let mut batch = vec![message];
                batch.extend(poll_available(consumer, self.max_batch, self.name(), 1));
                Ok(Polled::Batch(batch))
            }
            Err(error) => {
                let stage = self.task.context.name.clone();
                consumer_failed(consumer, &error, pace, &stage).await?;
                Ok(Polled::Again)
            }
        }
    }

    /// Takes in what the consumer's rebalances did since the last poll: attempt counts of new
    /// partitions are inherited; revoked partitions drop the open work (every partition still
    /// owned, or owned again, goes back to its committed offset). Whether the polled batch may
    /// be handled.
    fn follow_rebalance(&mut self, consumer: &StageConsumer) -> anyhow::Result<bool> {
        if let Some((code, reason)) = consumer.client().fatal_error() {
            return Err(fatal_error(code, reason).context(format!(
                "the consumer of stage {} hit a fatal error; rebuilding it",
                self.name()
            )));
        }
        let assigned = consumer.context().take_assigned();
        if !assigned.is_empty() {
            self.inherit_attempts(consumer, &assigned);
        }
        let revoked = consumer.context().take_revoked();
        if revoked.is_empty() {
            return Ok(true);
        }
        self.committer.abandon(&revoked, &mut self.task)?;
        rewind(consumer, &self.task.context.name)?;
        Ok(false)
    }

    /// Hands a batch to the task, its records to the committer, and moves the consumer where
    /// the task says.
    async fn handle_batch(
        &mut self,
        consumer: &StageConsumer,
        batch: Vec<BorrowedMessage<'_>>,
    ) -> anyhow::Result<()> {
        let mut inputs: Vec<Input<'_>> = batch
            .iter()
            .map(|message| decode(&self.task.context, message, &self.input_event_types))
            .collect();
        let mut handled = self.task.handle(&mut inputs)?;
        drop(inputs);
        drop(batch);
        for step in std::mem::take(&mut handled.moves) {
            match step {
                Move::Park(partition, offset) => park(consumer, &partition, offset, self.name()),
                Move::Seek(partition, offset) => seek(consumer, &partition, offset, self.name()),
            }
        }
        self.committer.take(handled).await
    }

    /// Commits the open work, then publishes the KPI window if it is over.
    async fn commit(&mut self, consumer: &StageConsumer, pace: &mut Pace) -> anyhow::Result<()> {
        self.committer.commit(consumer, &mut self.task).await?;
        self.publish_kpis(&mut pace.last_kpi);
        Ok(())
    }

    /// The stage stops: the open work is committed, the last KPI window published.
    async fn stop(&mut self, consumer: &StageConsumer, pace: &mut Pace) -> anyhow::Result<()> {
        if self.committer.is_open() {
            self.committer.commit(consumer, &mut self.task).await?;
        }
        // The last window, closed or not.
        let interval = self.kpi.as_ref().map_or(Duration::ZERO, |k| k.interval);
        pace.last_kpi = Instant::now()
            .checked_sub(interval)
            .unwrap_or(pace.last_kpi);
        self.publish_kpis(&mut pace.last_kpi);
        self.committer.finish(consumer);
        StageStopped { stage: self.name() }.emit();
        Ok(())
    }

    /// Ends this incarnation (so the stage is rebuilt) when the watchdog finds it stalled.
    fn watch(&mut self, consumer: &StageConsumer) -> anyhow::Result<()> {
        let out_of_group = consumer.context().out_of_group_for();
        let stage = &self.task.context.name;
        let (retries, stuck) = (&self.task.pacing.retries, &self.task.stuck);
        let stalled = self.watchdog.check(consumer, out_of_group, |partition| {
            retries.is_waiting(partition) || stuck.is_held(stage, &partition.0, partition.1)
        });
        match stalled {
            Some(reason) => {
                StageStalled {
                    stage,
                    reason: &reason,
                }
                .emit();
                anyhow::bail!("stage {stage} stalled: {reason}")
            }
            None => Ok(()),
        }
    }

    /// Publishes the KPI window if it is over (best effort, see [`KpiSink`]).
    fn publish_kpis(&self, last: &mut Instant) {
        let Some(target) = &self.kpi else {
            return;
        };
        if last.elapsed() < target.interval {
            return;
        }
        *last = Instant::now();
        let kpis = &self.task.counting.kpis;
        let mut events = kpis.drain(target.interval);
        // Windows in which the stage did something also report the size of its state.
        if !events.is_empty()
            && let Some(parts) = &self.task.state
        {
            let table = lock(&parts.keyed).table().clone();
            match table.size() {
                Ok((keys, bytes)) => {
                    StateMeasured {
                        stage: self.name(),
                        keys,
                    }
                    .emit();
                    events.extend(kpis.state_size(target.interval, keys, bytes));
                }
                Err(error) => {
                    tracing::debug!(stage = %self.name(), %error, "cannot measure the state")
                }
            }
        }
        let records = events
            .iter()
            .map(|event| {
                kpi_record(
                    event,
                    &target.route.topic,
                    &target.route.event_type,
                    &target.instance,
                )
            })
            .collect();
        target.sink.publish(records);
    }

    /// Resumes the partitions whose retry backoff is over.
    fn resume_due(&mut self, consumer: &StageConsumer) {
        for (topic, partition) in self.task.pacing.retries.take_due(Instant::now()) {
            let mut list = TopicPartitionList::new();
            list.add_partition(&topic, partition);
            if let Err(error) = consumer.resume(&list) {
                tracing::warn!(stage = %self.name(), topic, partition, %error, "cannot resume a partition after its retry delay");
            }
        }
    }

    /// Reads the committed offsets of newly assigned partitions for the attempt counts of
    /// events an earlier owner was retrying (see [`super::retry`]). Best effort: a count that
    /// cannot be read starts again at 1, with a warning.
    fn inherit_attempts(&mut self, consumer: &StageConsumer, assigned: &[TopicPartition]) {
        let mut list = TopicPartitionList::new();
        for (topic, partition) in assigned {
            list.add_partition(topic, *partition);
        }
        match consumer.committed_offsets(list, Duration::from_secs(10)) {
            Ok(committed) => {
                for element in committed.elements() {
                    if let Offset::Offset(offset) = element.offset()
                        && !element.metadata().is_empty()
                    {
                        let partition = (element.topic().to_string(), element.partition());
                        self.task
                            .pacing
                            .retries
                            .inherit(&partition, offset, element.metadata());
                    }
                }
            }
            Err(error) => {
                tracing::warn!(stage = %self.name(), %error,
                    "cannot read the committed offsets of new partitions; retry counts of their events start again");
            }
        }
    }
}

/// A poll of `stage` failed: fatal errors and a consumer failing for too long end this
/// incarnation (the stage is rebuilt); otherwise the loop polls again after a growing pause.
async fn consumer_failed(
    consumer: &StageConsumer,
    error: &KafkaError,
    pace: &mut Pace,
    stage: &str,
) -> anyhow::Result<()> {
    if let Some(fatal) = fatal_consumer_error(consumer, error) {
        return Err(fatal.context(format!(
            "the consumer of stage {stage} hit a fatal error; rebuilding it"
        )));
    }
    let failing_since = *pace.failing_since.get_or_insert_with(Instant::now);
    if failing_since.elapsed() > CONSUMER_FAILING_LIMIT {
        anyhow::bail!(
            "the consumer of stage {stage} has failed for {:?} ({error}); rebuilding it",
            failing_since.elapsed()
        );
    }
    let pause = crate::backoff::jittered(
        Duration::from_millis(100),
        Duration::from_secs(5),
        pace.consumer_errors,
    );
    pace.consumer_errors = pace.consumer_errors.saturating_add(1);
    ConsumerFailed {
        stage,
        error,
        pause,
    }
    .emit();
    tokio::time::sleep(pause).await;
    Ok(())
}

/// How long a consumer may keep failing before the stage is rebuilt.
const CONSUMER_FAILING_LIMIT: Duration = Duration::from_secs(30);

/// Why a consumer cannot go on, if `error` (or the client's state) is fatal: fenced by
/// another member with the same `group.instance.id` (a [`FencedOut`]), or any error librdkafka
/// calls fatal.
fn fatal_consumer_error(consumer: &StageConsumer, error: &KafkaError) -> Option<anyhow::Error> {
    if let Some((code, reason)) = consumer.client().fatal_error() {
        return Some(fatal_error(code, reason));
    }
    match error {
        KafkaError::MessageConsumptionFatal(code) => Some(fatal_error(*code, code.to_string())),
        _ if error.rdkafka_error_code() == Some(RDKafkaErrorCode::FencedInstanceId) => Some(
            fatal_error(RDKafkaErrorCode::FencedInstanceId, error.to_string()),
        ),
        _ => None,
    }
}

/// The error of a consumer's fatal `code`: a [`FencedOut`] when another member with the same
/// `group.instance.id` fenced it.
fn fatal_error(code: RDKafkaErrorCode, reason: String) -> anyhow::Error {
    if code == RDKafkaErrorCode::FencedInstanceId {
        anyhow::Error::new(FencedOut {
            by_same_member: true,
            detail: format!("{code:?}: {reason}"),
        })
    } else {
        anyhow::anyhow!("{code:?}: {reason}")
    }
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until_or_forever(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// Messages that are already fetched, without waiting, up to `max_batch` in all.
fn poll_available<'c>(
    consumer: &'c StageConsumer,
    max_batch: usize,
    stage: &str,
    already: usize,
) -> Vec<BorrowedMessage<'c>> {
    let mut batch = Vec::new();
    while already + batch.len() < max_batch {
        match consumer.recv().now_or_never() {
            Some(Ok(message)) => batch.push(message),
            Some(Err(error)) => {
                tracing::warn!(stage, %error, "consumer error");
                break;
            }
            None => break,
        }
    }
    batch
}

/// Pauses `partition` and sends its consumer back to `offset`, the event to retry.
fn park(consumer: &StageConsumer, partition: &TopicPartition, offset: i64, stage: &str) {
    let mut list = TopicPartitionList::new();
    list.add_partition(&partition.0, partition.1);
    if let Err(error) = consumer.pause(&list) {
        tracing::warn!(stage, topic = %partition.0, partition = partition.1, %error, "cannot pause a partition for a retry");
    }
    seek(consumer, partition, offset, stage);
}

fn seek(consumer: &StageConsumer, partition: &TopicPartition, offset: i64, stage: &str) {
    if let Err(error) = consumer.seek(
        &partition.0,
        partition.1,
        Offset::Offset(offset),
        Duration::from_secs(10),
    ) {
        tracing::warn!(stage, topic = %partition.0, partition = partition.1, offset, %error, "cannot seek back to an event being retried");
    }
}

/// The input a message stands for: its id, type, key, body, headers and origin.
fn decode<'a>(
    context: &StageContext,
    message: &'a BorrowedMessage<'a>,
    input_event_types: &HashMap<String, String>,
) -> Input<'a> {
    let headers = cloudevents::header_pairs(message.headers());
    let origin = Origin {
        stage: context.name.to_string(),
        source_topic: message.topic().to_string(),
        partition: message.partition(),
        offset: message.offset(),
    };
    let id = cloudevents::find(&headers, cloudevents::ID)
        .filter(|id| !id.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| {
            cloudevents::position_id(message.topic(), message.partition(), message.offset())
        });
    let event_type = cloudevents::find(&headers, cloudevents::TYPE)
        .map(str::to_string)
        .or_else(|| input_event_types.get(message.topic()).cloned())
        .unwrap_or_else(|| message.topic().to_string());
    Input {
        id,
        event_type,
        key: message.key().and_then(|key| std::str::from_utf8(key).ok()),
        payload: message.payload().unwrap_or_default(),
        headers,
        origin,
    }
}
