//! The consume loop of one topic-fed stage.
//!
//! Every input goes: consume → decode → call the plugin (with its partition's state) → publish
//! its outputs, dead letter, state changelog records → commit its offset. How the last two
//! happen depends on the stage's [`ProcessingMode`]:
//!
//! - `exactly_once`: outputs, changelog records, dead letters, KPIs and the consumed offsets of
//!   a batch go into one Kafka transaction of the stage's own transactional producer; readers
//!   downstream use `read_committed`. A crash or a lost partition aborts the transaction and
//!   the inputs are processed again from the last committed offsets, with the state they saw
//!   the first time. Committing offsets with the group's metadata fences zombie instances.
//! - `at_least_once`: outputs are queued on the shared idempotent producer as they are made,
//!   and the stage goes on with the next batch. Once per `commit_interval` the stage waits for
//!   every acknowledgement of the open work (publishing again what failed), then publishes
//!   the work's state changelog records (never ahead of the outputs they go with), records the
//!   inputs' ids as processed (one durable write) and stores their offsets. After a crash an
//!   input may be processed again; its outputs carry the same ids and the next stage drops
//!   them.
//!
//! A plugin's `retry` answer parks the event's partition (see [`super::retry`]); the other
//! partitions go on. The plugin instance follows hot swaps between two events.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::FutureExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use super::commit::{Committer, OpenWork, rewind};
use super::dedup::{Deduplicator, dedup_key};
use super::fault::SilentPause;
use super::fenced::FencedOut;
use super::fusion::{Deferred, Fusion, handled_upstream};
use super::processor::{Failure, Input, Processed, Route, StageContext};
use super::rebalance::RebalanceTracker;
use super::retry::{ATTEMPT_HEADER, RetryBook, RetryDecision, TopicPartition};
use super::stuck::{StuckBook, Verdict};
use super::watchdog::Watchdog;
use crate::config::RetryConfig;
use crate::event::cloudevents;
use crate::event::dead_letter::Origin;
use crate::health::Reporter;
use crate::kafka::{KafkaClients, OutRecord};
use crate::kpi::{KpiSink, StageKpis, kpi_record};
use crate::plugin::{LoadedPlugin, PluggedInstance};
use crate::state::{KeyedState, Writes, catch_up, plain_entry};

/// Input header of a replayed dead letter: only the stage it names handles it; the other
/// stages reading the same topic skip it.
pub const TARGET_STAGE_HEADER: &str = "stagehost-target-stage";

/// The consumer type of every stage.
pub type StageConsumer = StreamConsumer<RebalanceTracker>;

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

/// State of a stateful stage.
pub struct StageStateParts {
    /// The keyed state of the partitions this instance owns.
    pub keyed: Arc<Mutex<KeyedState>>,
    /// The changelog topic.
    pub changelog: String,
    /// Brokers, for catching up.
    pub kafka: KafkaClients,
    /// Most entries the state may hold (`state_max_keys`); an event that writes a value while
    /// it holds that many is dead-lettered.
    pub max_keys: Option<u64>,
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
    /// Routing, schemas and naming.
    pub context: Arc<StageContext>,
    /// The plugin instance this stage owns; it follows hot swaps.
    pub instance: PluggedInstance,
    /// Owns the open work and commits it: in transactions of the stage's own producer
    /// (`exactly_once`), or once the shared producer acknowledged it (`at_least_once`).
    pub committer: Committer<FutureProducer>,
    /// Where the stage finds out it processed an event id before.
    pub dedup: Deduplicator,
    /// KPI recorder of the stage.
    pub kpis: StageKpis,
    /// Where KPI windows go, if KPIs are enabled.
    pub kpi: Option<KpiTarget>,
    /// `ce_type` by input topic, for records that carry no `ce_type` header.
    pub input_event_types: HashMap<String, String>,
    /// Largest batch handled at once.
    pub max_batch: usize,
    /// Longest a transaction stays open while input keeps arriving.
    pub commit_interval: Duration,
    /// Keyed state, for stages whose plugin imports it.
    pub state: Option<StageStateParts>,
    /// Retry settings.
    pub retry: RetryConfig,
    /// Events waiting for their next attempt.
    pub retries: RetryBook,
    /// Where the stage reports that a batch or a commit takes too long (stalled).
    pub health: Reporter,
    /// Records that cannot be dead-lettered, held until an operator decides.
    pub stuck: StuckBook,
    /// The stages this worker runs in process on the records it makes for them (see
    /// [`super::fusion`]).
    pub fusion: Fusion,
    /// If this stage is fused into others: the records their workers left to this one, which
    /// it settles once it has committed their handling.
    pub deferred: Option<Arc<Deferred>>,
    /// Records of the open work that writers left to this worker: `(partition, id)`.
    pub settled: Vec<(i32, String)>,
    /// Ends this incarnation when it has input waiting, or is out of its group, and makes no
    /// progress for the stage's `stall_timeout` (see [`super::watchdog`]).
    pub watchdog: Watchdog,
    /// Partitions whose last events ran into `max_event_time`, with how many did in a row:
    /// such a partition cools down (parked like a retry) before its next event, so one slow
    /// key cannot take the stage's one thread from every other partition.
    pub slow: HashMap<TopicPartition, u32>,
    /// A fault the host's own tests inject (see [`super::fault`]); `None` in production.
    pub fault: Option<SilentPause>,
}

/// What happened to one input.
#[derive(Clone)]
pub(super) enum Fate {
    Duplicate,
    /// A replayed dead letter meant for another stage.
    NotOurs,
    /// A writer upstream handled it in process for this (fused) stage.
    HandledUpstream,
    Published(usize, Arc<LoadedPlugin>),
    DeadLettered(Arc<LoadedPlugin>),
}

/// What handling the inputs of a batch produced.
#[derive(Default)]
struct Handled<'i> {
    /// Records to publish.
    records: Vec<OutRecord>,
    /// State changelog records of the inputs' writes (held back at-least-once until the
    /// records are acknowledged).
    state: Vec<OutRecord>,
    /// Ids handled for the first time (recorded as processed in at-least-once mode).
    fresh_ids: Vec<Cow<'i, str>>,
    /// Dead letters among `records`: their position there, and the input they stand for.
    dead_letters: Vec<(usize, TopicPartition, i64)>,
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
    async fn run(
        &mut self,
        consumer: &StageConsumer,
        mut shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let stage = self.context.name.clone();
        tracing::info!(stage = %stage, version = %self.instance.version(), mode = self.committer.mode_name(),
            stateful = self.state.is_some(), fused = self.fusion.names().join(","), "stage started");
        self.health.idle();
        let mut last_kpi = Instant::now();
        let mut consumer_errors = 0u32;
        let mut failing_since: Option<Instant> = None;
        loop {
            self.resume_due(consumer);
            if Instant::now() >= self.watchdog.next_check() {
                self.watch(consumer)?;
            }
            let batch = if self.committer.in_transaction() {
                poll_available(consumer, self.max_batch, &self.context.name, 0)
            } else {
                let commit_due = self.committer.deadline(self.commit_interval);
                let kpi_due = self.kpi.as_ref().map(|target| last_kpi + target.interval);
                let retry_due = self.retries.next_due();
                let first = tokio::select! {
                    biased;
                    _ = shutdown.changed() => break,
                    message = consumer.recv() => message,
                    _ = sleep_until_or_forever(retry_due) => continue,
                    _ = tokio::time::sleep_until(self.watchdog.next_check().into()) => continue,
                    _ = sleep_until_or_forever(commit_due) => {
                        self.health.busy();
                        self.commit(consumer).await?;
                        self.health.idle();
                        self.publish_kpis(&mut last_kpi);
                        continue;
                    }
                    _ = sleep_until_or_forever(kpi_due) => {
                        // Idle: publish the window that closed.
                        self.publish_kpis(&mut last_kpi);
                        continue;
                    }
                };
                match first {
                    Ok(message) => {
                        consumer_errors = 0;
                        failing_since = None;
                        let mut batch = vec![message];
                        batch.extend(poll_available(
                            consumer,
                            self.max_batch,
                            &self.context.name,
                            1,
                        ));
                        batch
                    }
                    Err(error) => {
                        if let Some(fatal) = fatal_consumer_error(consumer, &error) {
                            return Err(fatal.context(format!(
                                "the consumer of stage {stage} hit a fatal error; rebuilding it"
                            )));
                        }
                        let failing_since = *failing_since.get_or_insert_with(Instant::now);
                        if failing_since.elapsed() > CONSUMER_FAILING_LIMIT {
                            anyhow::bail!(
                                "the consumer of stage {stage} has failed for {:?} ({error}); rebuilding it",
                                failing_since.elapsed()
                            );
                        }
                        let pause = crate::backoff::jittered(
                            Duration::from_millis(100),
                            Duration::from_secs(5),
                            consumer_errors,
                        );
                        consumer_errors = consumer_errors.saturating_add(1);
                        tracing::warn!(stage = %stage, %error, ?pause, "consumer error; polling again after a pause");
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                }
            };
            if let Some((code, reason)) = consumer.client().fatal_error() {
                return Err(fatal_error(code, reason).context(format!(
                    "the consumer of stage {stage} hit a fatal error; rebuilding it"
                )));
            }
            let assigned = consumer.context().take_assigned();
            if !assigned.is_empty() {
                self.inherit_attempts(consumer, &assigned);
            }
            let revoked = consumer.context().take_revoked();
            if !revoked.is_empty() {
                // The batch is dropped unprocessed, and so is the open work: every partition
                // still owned (or owned again: a static member gets its partitions straight
                // back) goes back to its committed offset.
                drop(batch);
                self.abandon(consumer, &revoked)?;
                continue;
            }
            if !batch.is_empty() {
                self.watchdog.progressed();
                if let Some(fault) = &mut self.fault {
                    fault.consumed(consumer, batch.len());
                }
            }
            if batch.is_empty() {
                if self.committer.in_transaction() {
                    self.commit(consumer).await?;
                    self.publish_kpis(&mut last_kpi);
                }
                continue;
            }
            let drained = batch.len() < self.max_batch;
            self.committer.open()?;
            self.health.busy();
            self.handle_batch(consumer, &batch).await?;
            drop(batch);

            let stopping = *shutdown.borrow();
            let interval_over = self
                .committer
                .work()
                .opened
                .is_some_and(|opened| opened.elapsed() >= self.commit_interval);
            if (drained && self.committer.commits_when_drained()) || interval_over || stopping {
                self.commit(consumer).await?;
                self.publish_kpis(&mut last_kpi);
            }
            self.health.idle();
            if stopping {
                break;
            }
        }
        if self.committer.is_open() {
            self.commit(consumer).await?;
        }
        // The last window, closed or not.
        let interval = self.kpi.as_ref().map_or(Duration::ZERO, |k| k.interval);
        last_kpi = Instant::now().checked_sub(interval).unwrap_or(last_kpi);
        self.publish_kpis(&mut last_kpi);
        self.committer.finish(consumer);
        tracing::info!(stage = %stage, "stage stopped");
        Ok(())
    }

    /// Ends this incarnation (so the stage is rebuilt) when the watchdog finds it stalled.
    fn watch(&mut self, consumer: &StageConsumer) -> anyhow::Result<()> {
        let out_of_group = consumer.context().out_of_group_for();
        let stage = &self.context.name;
        let (retries, stuck) = (&self.retries, &self.stuck);
        let stalled = self.watchdog.check(consumer, out_of_group, |partition| {
            retries.is_waiting(partition) || stuck.is_held(stage, &partition.0, partition.1)
        });
        match stalled {
            Some(reason) => {
                tracing::error!(stage = %stage, %reason, "stage stalled");
                anyhow::bail!("stage {stage} stalled: {reason}")
            }
            None => Ok(()),
        }
    }

    /// Commits the open work, then counts what its inputs became.
    async fn commit(&mut self, consumer: &StageConsumer) -> anyhow::Result<()> {
        let state = self.state.as_ref();
        let dedup = &mut self.dedup;
        let fusion = &mut self.fusion;
        let stage = &self.context.name;
        let work = self
            .committer
            .commit(consumer, &self.retries, |work| {
                // The work's outputs are safe: its state writes go into the local copy of the
                // changelog (a copy that cannot take them is caught up before it is read
                // again), and its inputs become processed ids.
                if let Some(parts) = state
                    && let Err(error) = lock(&parts.keyed).commit()
                {
                    tracing::warn!(stage = %stage, %error,
                        "cannot write committed state into the local store; it is read back from the changelog");
                }
                dedup.commit(&work.fresh_ids)?;
                fusion.commit()
            })
            .await?;
        let latency = work.opened.map(|o| o.elapsed()).unwrap_or_default();
        self.fusion.count(latency);
        if let Some(deferred) = &self.deferred
            && !self.settled.is_empty()
        {
            deferred.handled(self.settled.iter().map(|(p, id)| (*p, id.as_str())));
            self.settled.clear();
        }
        for fate in work.fates {
            match fate {
                Fate::Duplicate => self.kpis.duplicate(),
                Fate::NotOurs => {}
                Fate::HandledUpstream => self.kpis.handled_upstream(),
                Fate::DeadLettered(plugin) => self.kpis.dead_lettered(&plugin.version),
                Fate::Published(outputs, plugin) => {
                    self.kpis.processed(&plugin.version, outputs, latency)
                }
            }
        }
        Ok(())
    }

    /// Partitions were revoked: the open work may hold their inputs, so drop it (aborting its
    /// transaction), forget the revoked partitions' state and send every partition still
    /// owned back to its committed offset.
    fn abandon(
        &mut self,
        consumer: &StageConsumer,
        revoked: &[TopicPartition],
    ) -> anyhow::Result<()> {
        tracing::info!(stage = %self.context.name, revoked = revoked.len(), open = self.committer.is_open(),
            "partitions revoked; dropping the open work");
        self.retries.forget(revoked);
        self.slow
            .retain(|partition, _| !revoked.contains(partition));
        self.dedup.rollback();
        self.fusion.rollback();
        self.settled.clear();
        for (_, partition) in revoked {
            self.dedup.forget(*partition);
        }
        self.committer.abandon()?;
        // The dropped inputs are handled again, so the state writes they staged go too.
        if let Some(parts) = &self.state {
            let mut keyed = lock(&parts.keyed);
            keyed.rollback();
            for (_, partition) in revoked {
                keyed.forget(*partition);
            }
        }
        rewind(consumer, &self.context.name)
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
        let mut events = self.kpis.drain(target.interval);
        // Windows in which the stage did something also report the size of its state.
        if !events.is_empty()
            && let Some(parts) = &self.state
        {
            let table = lock(&parts.keyed).table().clone();
            match table.size() {
                Ok((keys, bytes)) => {
                    events.extend(self.kpis.state_size(target.interval, keys, bytes));
                }
                Err(error) => {
                    tracing::debug!(stage = %self.context.name, %error, "cannot measure the state")
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

    async fn handle_batch(
        &mut self,
        consumer: &StageConsumer,
        batch: &[BorrowedMessage<'_>],
    ) -> anyhow::Result<()> {
        let mut inputs: Vec<Input<'_>> = batch
            .iter()
            .map(|message| decode(&self.context, message, &self.input_event_types))
            .collect();
        let mut attempts = Vec::with_capacity(inputs.len());
        for input in &mut inputs {
            self.ensure_restored(input.origin.partition)?;
            let attempt = self
                .retries
                .attempt(&topic_partition(input), input.origin.offset);
            if attempt > 1 {
                input
                    .headers
                    .push((ATTEMPT_HEADER.to_string(), attempt.to_string()));
            }
            attempts.push(attempt);
        }
        // Records a writer handled in process for this stage are skipped whatever their id, so
        // their ids are not looked up (in a fused stage's own worker that is nearly every input).
        let skipped: Vec<bool> = inputs
            .iter()
            .map(|input| handled_upstream(&input.headers, &self.context.name))
            .collect();
        let keys: Vec<(i32, Cow<'_, str>)> = inputs
            .iter()
            .zip(&skipped)
            .filter(|(_, skipped)| !**skipped)
            .map(|(input, _)| (input.origin.partition, dedup_key(&input.id)))
            .collect();
        let mut looked_up = self.dedup.seen(&keys)?.into_iter();
        let already: Vec<bool> = skipped
            .iter()
            .map(|skipped| !skipped && looked_up.next().unwrap_or(false))
            .collect();

        // Plugins may do WASI I/O (a panic message to stderr), which wasmtime-wasi's sync
        // bindings run with `block_on`: allowed off the async worker threads only.
        let Handled {
            records,
            state,
            fresh_ids,
            dead_letters,
        } = tokio::task::block_in_place(|| {
            self.handle_inputs(consumer, &inputs, &attempts, &skipped, already)
        });
        if let Some(parts) = &self.state
            && let Some(error) = lock(&parts.keyed).take_failure()
        {
            // A plugin read its state while the store failed and saw nothing: what it made of
            // that is not published. The stage is rebuilt and reads the batch again.
            anyhow::bail!(
                "stage {} cannot read its state: {error}; the batch is handled again once the store is back",
                self.context.name
            );
        }

        let mut dead_letters = dead_letters.into_iter().peekable();
        for (position, record) in records.into_iter().enumerate() {
            let dead_letter_of = dead_letters
                .next_if(|(at, _, _)| *at == position)
                .map(|(_, partition, offset)| (partition, offset));
            self.committer.send(record, dead_letter_of).await?;
        }
        for record in state {
            self.committer.send_state(record).await?;
        }
        self.committer
            .remember_fresh(fresh_ids.into_iter().map(Cow::into_owned));
        Ok(())
    }

    /// Handles the inputs of a batch in order: what to publish, which ids are new, which
    /// messages are done with (their offsets may be stored). `handled_in_process[i]` says a
    /// writer already ran this stage on input `i` (checked once per batch, in `handle_batch`).
    fn handle_inputs<'i>(
        &mut self,
        consumer: &StageConsumer,
        inputs: &'i [Input<'_>],
        attempts: &[u32],
        handled_in_process: &[bool],
        already: Vec<bool>,
    ) -> Handled<'i> {
        let mut handled = Handled::default();
        let mut seen_in_batch = HashSet::new();
        for (index, (input, already)) in inputs.iter().zip(already).enumerate() {
            let partition = topic_partition(input);
            if !self.admit(consumer, &partition, input.origin.offset) {
                // Waits behind an event of its partition that is being retried; it is fetched
                // again when that one is settled.
                continue;
            }
            match self.stuck.verdict(
                &self.context.name,
                &partition.0,
                partition.1,
                input.origin.offset,
            ) {
                Verdict::Go => {}
                Verdict::Hold => {
                    // Looked at again after a pause, until an operator decides.
                    self.retries
                        .hold(&partition, input.origin.offset, HELD_RECHECK);
                    park_and_commit_at(
                        consumer,
                        self.committer.work_mut(),
                        partition,
                        input.origin.offset,
                        &self.context.name,
                    );
                    continue;
                }
                Verdict::Skip => {
                    let work = self.committer.work_mut();
                    work.fates.push(Fate::NotOurs);
                    self.retries.settled(&partition, input.origin.offset);
                    work.next.insert(partition, input.origin.offset + 1);
                    continue;
                }
            }
            if handled_in_process[index] {
                tracing::debug!(stage = %self.context.name, id = %input.id, topic = %input.origin.source_topic,
                    partition = input.origin.partition, offset = input.origin.offset,
                    writer = cloudevents::find(&input.headers, cloudevents::SOURCE).unwrap_or_default(),
                    "skipped: handled in process by the stage that wrote it");
                let work = self.committer.work_mut();
                work.fates.push(Fate::HandledUpstream);
                self.retries.settled(&partition, input.origin.offset);
                work.next.insert(partition, input.origin.offset + 1);
                continue;
            }
            let key = dedup_key(&input.id);
            let repeated = already
                || self.committer.work().fresh_ids.contains(key.as_ref())
                || !seen_in_batch.insert(key.clone());
            let fate = if repeated {
                // Never silent (counted in the KPIs too): an outside producer repeating an id
                // with another body loses that body here.
                tracing::info!(stage = %self.context.name, id = %input.id, key = input.key.unwrap_or_default(),
                    topic = %input.origin.source_topic, partition = input.origin.partition,
                    offset = input.origin.offset, "repeat of an event already handled: dropped");
                Fate::Duplicate
            } else if is_for_another_stage(input, &self.context.name) {
                Fate::NotOurs
            } else {
                let before = handled.records.len();
                let outcome = self.handle_one(consumer, input, attempts[index], &mut handled);
                if matches!(outcome, Some(Fate::DeadLettered(_))) {
                    handled
                        .dead_letters
                        .push((before, partition.clone(), input.origin.offset));
                }
                match outcome {
                    Some(fate) => {
                        handled.fresh_ids.push(key.clone());
                        handled
                            .records
                            .extend(self.dedup.record(input.origin.partition, &key));
                        fate
                    }
                    None => continue,
                }
            };
            if let Some(deferred) = &self.deferred
                && deferred.contains(input.origin.partition, &input.id)
            {
                self.settled
                    .push((input.origin.partition, input.id.clone()));
            }
            self.retries.settled(&partition, input.origin.offset);
            let work = self.committer.work_mut();
            work.fates.push(fate);
            work.next.insert(partition, input.origin.offset + 1);
        }
        handled
    }

    /// Calls the plugin for one input and adds what it produced to `handled` (outputs and
    /// state changelog, or a dead letter). `None` when the input was parked for a retry.
    fn handle_one(
        &mut self,
        consumer: &StageConsumer,
        input: &Input<'_>,
        attempt: u32,
        handled: &mut Handled<'_>,
    ) -> Option<Fate> {
        let partition = topic_partition(input);
        let keyed = self.state.as_ref().map(|s| s.keyed.clone());
        let instance = self.instance.current();
        let plugin = instance.plugin().clone();
        let processed = self
            .context
            .process(instance, input, true, keyed.as_ref())
            .and_then(|processed| {
                match self
                    .state_is_full(&processed.writes)
                    .or_else(|| self.state_too_large(&processed.writes))
                {
                    Some(refused) => Err(refused),
                    None => Ok(processed),
                }
            });
        let failure = match processed {
            Ok(Processed {
                records: outputs,
                writes,
            }) => {
                self.slow.remove(&partition);
                tracing::debug!(stage = %self.context.name, id = %input.id, topic = %input.origin.source_topic,
                    partition = input.origin.partition, offset = input.origin.offset,
                    key = input.key.unwrap_or_default(), outputs = outputs.len(), "processed");
                let fate = Fate::Published(outputs.len(), plugin);
                handled.records.extend(self.fusion.expand(outputs));
                if let Some(parts) = &self.state
                    && !writes.is_empty()
                {
                    handled.state.extend(changelog_records(
                        &parts.changelog,
                        input.origin.partition,
                        &writes,
                    ));
                    // Later inputs of the batch see these writes; they become committed
                    // state once the batch is published (or its transaction commits).
                    lock(&parts.keyed).stage(input.origin.partition, writes);
                }
                return Some(fate);
            }
            Err(Failure::Retry(message)) => {
                match self
                    .retries
                    .failed(&self.retry, &partition, input.origin.offset, attempt)
                {
                    RetryDecision::Park { delay } => {
                        self.kpis.retried(&plugin.version);
                        tracing::info!(stage = %self.context.name, id = %input.id, topic = %input.origin.source_topic,
                            partition = input.origin.partition, offset = input.origin.offset, attempt, %message, ?delay,
                            "plugin asked for a retry; pausing the partition");
                        // Committed with its attempt count, so the count survives a move.
                        park_and_commit_at(
                            consumer,
                            self.committer.work_mut(),
                            partition,
                            input.origin.offset,
                            &self.context.name,
                        );
                        return None;
                    }
                    RetryDecision::GiveUp => {
                        Failure::Retry(format!("{message} (gave up after {attempt} attempts)"))
                    }
                }
            }
            Err(failure) => failure,
        };
        tracing::warn!(stage = %self.context.name, id = %input.id, topic = %input.origin.source_topic,
            partition = input.origin.partition, offset = input.origin.offset,
            key = input.key.unwrap_or_default(), error = %failure.reason(), attempt, "dead-lettering event");
        if matches!(&failure, Failure::Trap(reason) if reason.starts_with("timeout:")) {
            self.cool_down(consumer, partition, input.origin.offset + 1);
        }
        handled.records.push(
            self.context
                .dead_letter(input, &failure, &plugin.version, attempt),
        );
        Some(Fate::DeadLettered(plugin))
    }

    /// Why `writes` may not be applied: the stage's state holds `state_max_keys` entries (the
    /// store's estimate) and they write a value. `None` when they may.
    fn state_is_full(&self, writes: &Writes) -> Option<Failure> {
        let parts = self.state.as_ref()?;
        let cap = parts.max_keys?;
        if !writes.values().any(Option::is_some) {
            return None;
        }
        let table = lock(&parts.keyed).table().clone();
        let (held, _) = table.size().ok()?;
        (held >= cap).then(|| {
            Failure::StateFull(format!(
                "the stage's keyed state holds about {held} entries, its state_max_keys is {cap}; raise the cap or have the plugin delete keys it no longer needs"
            ))
        })
    }

    /// An event of `partition` ran into the plugin's time limit: the partition waits before
    /// its next event at `next` (the stage's retry delays, growing with each timeout in a
    /// row), and the stage's other partitions go on meanwhile.
    fn cool_down(&mut self, consumer: &StageConsumer, partition: TopicPartition, next: i64) {
        let timeouts = self.slow.entry(partition.clone()).or_default();
        *timeouts += 1;
        let delay = self.retry.delay_before(*timeouts + 1);
        tracing::warn!(stage = %self.context.name, topic = %partition.0, partition = partition.1,
            timeouts_in_a_row = *timeouts, ?delay,
            "an event ran into max_event_time; its partition waits before the next event so the other partitions go on");
        self.retries.hold(&partition, next, delay);
        park(consumer, &partition, next, &self.context.name);
    }

    /// Why `writes` may not be applied: a value with its key is larger than the changelog
    /// topic takes (it would fail every transaction that carries it). `None` when they may.
    fn state_too_large(&self, writes: &Writes) -> Option<Failure> {
        let parts = self.state.as_ref()?;
        let limit = self.context.limits.limit(&parts.changelog);
        writes.iter().find_map(|(key, value)| {
            let size = key.len() + value.as_ref().map_or(0, Vec::len);
            (size > limit).then(|| {
                Failure::TooLarge(format!(
                    "the state value of key {:?} is {size} bytes with its key; the changelog topic {} takes at most {limit}",
                    key.chars().take(256).collect::<String>(),
                    parts.changelog
                ))
            })
        })
    }

    /// Whether the input at `offset` of `partition` may be handled now. An event of a parked
    /// partition waits; one that overtook the parked event after its partition resumed (a
    /// message fetched before the seek) sends the consumer back to the parked event.
    fn admit(&self, consumer: &StageConsumer, partition: &TopicPartition, offset: i64) -> bool {
        if self.retries.is_waiting(partition) {
            return false;
        }
        match self.retries.parked_offset(partition) {
            Some(parked) if offset > parked => {
                seek(consumer, partition, parked, &self.context.name);
                false
            }
            _ => true,
        }
    }

    /// Resumes the partitions whose retry backoff is over.
    fn resume_due(&mut self, consumer: &StageConsumer) {
        for (topic, partition) in self.retries.take_due(Instant::now()) {
            let mut list = TopicPartitionList::new();
            list.add_partition(&topic, partition);
            if let Err(error) = consumer.resume(&list) {
                tracing::warn!(stage = %self.context.name, topic, partition, %error, "cannot resume a partition after its retry delay");
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
                        self.retries.inherit(&partition, offset, element.metadata());
                    }
                }
            }
            Err(error) => {
                tracing::warn!(stage = %self.context.name, %error,
                    "cannot read the committed offsets of new partitions; retry counts of their events start again");
            }
        }
    }

    /// Loads a partition's state from the changelog the first time the partition is seen.
    fn ensure_restored(&self, partition: i32) -> anyhow::Result<()> {
        let Some(parts) = &self.state else {
            return Ok(());
        };
        if lock(&parts.keyed).has(partition) {
            return Ok(());
        }
        let table = lock(&parts.keyed).table().clone();
        let caught_up = tokio::task::block_in_place(|| {
            catch_up(
                &parts.kafka,
                &parts.changelog,
                partition,
                &table,
                plain_entry,
            )
        })
        .with_context(|| format!("cannot restore the state of partition {partition}"))?;
        tracing::info!(stage = %self.context.name, partition, records = caught_up.records,
            from = ?caught_up.from, to = caught_up.to,
            elapsed_ms = caught_up.elapsed.as_millis() as u64, "state caught up with its changelog");
        lock(&parts.keyed).restored(partition);
        Ok(())
    }
}

/// How often a partition held at a record that cannot be dead-lettered looks whether an
/// operator decided.
const HELD_RECHECK: Duration = Duration::from_secs(1);

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

pub(super) fn lock(state: &Mutex<KeyedState>) -> std::sync::MutexGuard<'_, KeyedState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// The changelog records of one input's state writes.
fn changelog_records(topic: &str, partition: i32, writes: &Writes) -> Vec<OutRecord> {
    writes
        .iter()
        .map(|(key, value)| OutRecord {
            topic: topic.to_string(),
            partition: Some(partition),
            key: Some(key.clone()),
            payload: value.clone(),
            headers: crate::event::headers::RecordHeaders::new(),
            id: format!("state:{key}"),
        })
        .collect()
}

fn topic_partition(input: &Input<'_>) -> TopicPartition {
    (input.origin.source_topic.clone(), input.origin.partition)
}

/// Whether `input` is a replayed dead letter meant for another stage than `stage`.
fn is_for_another_stage(input: &Input<'_>, stage: &str) -> bool {
    cloudevents::find(&input.headers, TARGET_STAGE_HEADER).is_some_and(|target| target != stage)
}

/// Parks `partition` at `offset` and makes that offset what the open work commits for it, so
/// the event is read again by whoever owns the partition next.
fn park_and_commit_at(
    consumer: &StageConsumer,
    work: &mut OpenWork,
    partition: TopicPartition,
    offset: i64,
    stage: &str,
) {
    park(consumer, &partition, offset, stage);
    work.next.insert(partition, offset);
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
