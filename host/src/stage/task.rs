//! The stage task: what a topic-fed stage does with one batch of decoded inputs — restore their
//! partitions' state, drop repeats, call the plugin, decide each input's fate (published,
//! dead-lettered, parked for a retry, held, skipped) — without touching Kafka. It returns a
//! [`Handled`] for the committer and the poll loop, and its parts follow the end of the open
//! work as the committer's [`Participant`]s.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;

use super::dedup::dedup_key;
use super::guarantee::ProcessedIds;
use super::handover::handled_upstream;
use super::latest::LatestOutputs;
use super::live_plugin::Plugin;
use super::outcome::{Done, Fate, Handled, Move};
use super::participant::{Participant, Participants};
use super::processor::{Failure, Input, Processed, StageContext};
use super::retry::{ATTEMPT_HEADER, RetryBook, RetryDecision, TopicPartition};
use super::stage_parts::{Counting, Pacing, Settling, StageStateParts, lock};
use super::stuck::{StuckBook, Verdict};
use crate::event::cloudevents;
use crate::kafka::OutRecord;
use crate::observe::trace::{self, EventSpan};
use crate::observe::{
    HostEvent, RecordAt, RecordDeadLettered, RepeatDropped, RetryParked, SlowPartition,
};
use crate::state::{Writes, catch_up, plain_entry};

/// Input header of a replayed dead letter: only the stage it names handles it; the other
/// stages reading the same topic skip it.
pub const TARGET_STAGE_HEADER: &str = "stagehost-target-stage";

/// How often a partition held at a record that cannot be dead-lettered looks whether an
/// operator decided.
const HELD_RECHECK: Duration = Duration::from_secs(1);

/// The stages a worker runs in process on the records it makes for them (see
/// [`super::fusion`]).
pub trait InProcess: Participant {
    /// The names of the stages run in process.
    fn names(&self) -> Vec<&str>;
    /// The records to publish for the outputs the worker's plugin made; the spans of the
    /// stages run on them (tracing on) go to `spans`.
    fn expand(&mut self, records: Vec<OutRecord>, spans: &mut Vec<EventSpan>) -> Vec<OutRecord>;
}

/// No stage run in process.
pub struct NothingInProcess;

impl Participant for NothingInProcess {}

impl InProcess for NothingInProcess {
    fn names(&self) -> Vec<&str> {
        Vec::new()
    }

    fn expand(&mut self, records: Vec<OutRecord>, _spans: &mut Vec<EventSpan>) -> Vec<OutRecord> {
        records
    }
}

/// What a stage run in process made of a record (its processed id is written with the
/// writer's commit: see [`super::participant::Participant::closing_records`]).
pub struct InProcessRun {
    /// The outputs (none when the stage had processed the id before).
    pub outputs: Vec<OutRecord>,
    /// Its span (tracing on), ended with the writer's work.
    pub span: Option<EventSpan>,
}

/// Everything a topic-fed stage needs to handle a batch.
pub struct StageTask<P> {
    /// Routing, schemas and naming.
    pub context: Arc<StageContext>,
    /// The plugin.
    pub plugin: P,
    /// Where the stage finds out it processed an event id before.
    pub dedup: Box<dyn ProcessedIds>,
    /// Keyed state, for stages whose plugin imports it.
    pub state: Option<StageStateParts>,
    /// The stages run in process on the records this stage makes for them.
    pub fusion: Box<dyn InProcess>,
    /// Retries and slow partitions.
    pub pacing: Pacing,
    /// Records that cannot be dead-lettered, held until an operator decides.
    pub stuck: StuckBook,
    /// Records writers left to this (fused) stage.
    pub settling: Settling,
    /// The stage's KPI recorder.
    pub counting: Counting,
    /// Outputs to latest-per-key topics, written with the commit.
    pub latest: LatestOutputs,
}

impl<P: Plugin> StageTask<P> {
    /// Handles a batch of inputs (in order), each with the attempt it gets.
    pub fn handle(&mut self, inputs: &mut [Input<'_>]) -> anyhow::Result<Handled> {
        let mut attempts = Vec::with_capacity(inputs.len());
        for input in inputs.iter_mut() {
            self.ensure_restored(input.origin.partition)?;
            let attempt = self
                .pacing
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
        let handled = tokio::task::block_in_place(|| {
            self.handle_inputs(inputs, &attempts, &skipped, &already)
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
        Ok(handled)
    }

    /// Handles the inputs of a batch in order. `skipped[i]` says a writer already ran this
    /// stage on input `i`; `already[i]` that its id was processed before.
    fn handle_inputs(
        &mut self,
        inputs: &[Input<'_>],
        attempts: &[u32],
        skipped: &[bool],
        already: &[bool],
    ) -> Handled {
        let mut handled = Handled::default();
        let mut seen_in_batch = HashSet::new();
        for (index, input) in inputs.iter().enumerate() {
            let partition = topic_partition(input);
            let offset = input.origin.offset;
            if !self.admit(&partition, offset, &mut handled.moves) {
                // Waits behind an event of its partition that is being retried; it is fetched
                // again when that one is settled.
                continue;
            }
            match self.passed_over(input, skipped[index], &mut handled) {
                Some(Some(fate)) => {
                    self.pacing.retries.settled(&partition, offset);
                    handled.done.push(Done {
                        partition,
                        next: offset + 1,
                        fate: Some(fate),
                    });
                    continue;
                }
                // Parked where it is.
                Some(None) => continue,
                None => {}
            }
            let key = dedup_key(&input.id);
            let fate = if already[index] || !seen_in_batch.insert(key.clone()) {
                RepeatDropped {
                    at: RecordAt::of(&self.context.name, input),
                }
                .emit();
                Fate::Duplicate
            } else if is_for_another_stage(input, &self.context.name) {
                Fate::NotOurs
            } else {
                let Some(fate) = self.handle_one(input, attempts[index], &mut handled) else {
                    continue;
                };
                self.dedup.record(input.origin.partition, &key);
                fate
            };
            self.settling.settle(input.origin.partition, &input.id);
            self.pacing.retries.settled(&partition, offset);
            handled.done.push(Done {
                partition,
                next: offset + 1,
                fate: Some(fate),
            });
        }
        handled
    }

    /// An input the stage does not process: held at a record that cannot be dead-lettered
    /// (`Some(None)`: parked), meant for this stage by an operator's skip or handled upstream
    /// (`Some(Some(fate))`); `None` when it is processed.
    fn passed_over(
        &mut self,
        input: &Input<'_>,
        skipped: bool,
        handled: &mut Handled,
    ) -> Option<Option<Fate>> {
        let partition = topic_partition(input);
        let offset = input.origin.offset;
        match self
            .stuck
            .verdict(&self.context.name, &partition.0, partition.1, offset)
        {
            Verdict::Go => {}
            Verdict::Hold => {
                // Looked at again after a pause, until an operator decides.
                self.pacing.retries.hold(&partition, offset, HELD_RECHECK);
                park_at(handled, partition, offset);
                return Some(None);
            }
            Verdict::Skip => return Some(Some(Fate::NotOurs)),
        }
        if skipped {
            tracing::debug!(stage = %self.context.name, id = %input.id, topic = %input.origin.source_topic,
                partition = input.origin.partition, offset,
                writer = cloudevents::find(&input.headers, cloudevents::SOURCE).unwrap_or_default(),
                "skipped: handled in process by the stage that wrote it");
            return Some(Some(Fate::HandledUpstream));
        }
        None
    }

    /// Calls the plugin for one input and adds what it produced to `handled` (outputs and
    /// state changelog, or a dead letter), with the input's span when tracing is on (ended
    /// with the work's commit). `None` when the input was parked for a retry.
    fn handle_one(
        &mut self,
        input: &Input<'_>,
        attempt: u32,
        handled: &mut Handled,
    ) -> Option<Fate> {
        let mut span = event_span(&self.context.name, input);
        let called = SystemTime::now();
        let (version, processed) = self.call_plugin(input);
        if let Some(span) = &span {
            span.child("plugin", called, SystemTime::now());
        }
        let failure = match processed {
            Ok(processed) => {
                let outputs = self.published(input, processed, span.as_ref(), handled);
                handled.spans.extend(span);
                return Some(Fate::Published(outputs, version));
            }
            Err(Failure::Retry(message)) => {
                let given_up = self.retry_or_give_up(input, attempt, message, &version, handled);
                if given_up.is_none()
                    && let Some(mut span) = span.take()
                {
                    span.fail("parked for a retry");
                    span.end(SystemTime::now());
                }
                given_up?
            }
            Err(failure) => failure,
        };
        self.dead_letter(input, &failure, attempt, &version, handled);
        if let Some(mut span) = span {
            if let Some(letter) = handled.records.last_mut() {
                span.inject(&mut letter.headers);
            }
            span.fail(&failure.reason());
            handled.spans.push(span);
        }
        Some(Fate::DeadLettered(version, failure.kind()))
    }

    /// Calls the plugin (with the input partition's state): the version that ran, and what it
    /// made, refused when its state writes may not be applied.
    fn call_plugin(&mut self, input: &Input<'_>) -> (Arc<str>, Result<Processed, Failure>) {
        let keyed = self.state.as_ref().map(|s| s.keyed.clone());
        let (version, processed) = self.plugin.process(&self.context, input, keyed.as_ref());
        let processed = processed.and_then(|processed| {
            match self
                .state_is_full(&processed.writes)
                .or_else(|| self.state_too_large(&processed.writes))
            {
                Some(refused) => Err(refused),
                None => Ok(processed),
            }
        });
        (version, processed)
    }

    /// Adds what the plugin made of `input` to `handled`: its outputs (run through the fused
    /// stages) and its state changelog; how many outputs it made.
    fn published(
        &mut self,
        input: &Input<'_>,
        processed: Processed,
        span: Option<&EventSpan>,
        handled: &mut Handled,
    ) -> usize {
        let Processed {
            records: mut outputs,
            writes,
        } = processed;
        if let Some(span) = span {
            for output in &mut outputs {
                span.inject(&mut output.headers);
            }
        }
        let partition = input.origin.partition;
        if !self.pacing.slow.is_empty() {
            self.pacing.slow.remove(&topic_partition(input));
        }
        tracing::debug!(stage = %self.context.name, id = %input.id, topic = %input.origin.source_topic,
            partition, offset = input.origin.offset,
            key = input.key.unwrap_or_default(), outputs = outputs.len(), "processed");
        let made = outputs.len();
        for record in self.fusion.expand(outputs, &mut handled.spans) {
            let written_now = if self.context.latest_per_key(&record.topic) {
                self.latest.hold(record)
            } else {
                Some(record)
            };
            handled.records.extend(written_now);
        }
        if let Some(parts) = &self.state
            && !writes.is_empty()
        {
            // Later inputs see these writes; they reach the changelog (the last value of each
            // key) with the commit and become committed state once the work is safe.
            lock(&parts.keyed).stage(partition, writes);
        }
        made
    }

    /// The plugin asked for a retry of `input`: its partition is parked until the next
    /// attempt (`None`), or, its attempts used up, the failure to dead-letter it with.
    fn retry_or_give_up(
        &mut self,
        input: &Input<'_>,
        attempt: u32,
        message: String,
        version: &str,
        handled: &mut Handled,
    ) -> Option<Failure> {
        let partition = topic_partition(input);
        let offset = input.origin.offset;
        match self
            .pacing
            .retries
            .failed(&self.pacing.retry, &partition, offset, attempt)
        {
            RetryDecision::Park { delay } => {
                self.counting.kpis.retried(version);
                RetryParked {
                    at: RecordAt::of(&self.context.name, input),
                    attempt,
                    message: &message,
                    delay,
                }
                .emit();
                // Committed with its attempt count, so the count survives a move.
                park_at(handled, partition, offset);
                None
            }
            RetryDecision::GiveUp => Some(Failure::Retry(format!(
                "{message} (gave up after {attempt} attempts)"
            ))),
        }
    }

    /// Adds the dead letter of `input` to `handled`, marked as standing for it; a plugin that
    /// ran out of time also cools its partition down.
    fn dead_letter(
        &mut self,
        input: &Input<'_>,
        failure: &Failure,
        attempt: u32,
        version: &str,
        handled: &mut Handled,
    ) {
        RecordDeadLettered {
            at: RecordAt::of(&self.context.name, input),
            reason: &failure.reason(),
            attempt,
        }
        .emit();
        let partition = topic_partition(input);
        if matches!(failure, Failure::Trap(reason) if reason.starts_with("timeout:")) {
            self.cool_down(
                partition.clone(),
                input.origin.offset + 1,
                &mut handled.moves,
            );
        }
        handled
            .dead_letters
            .push((handled.records.len(), partition, input.origin.offset));
        handled
            .records
            .push(self.context.dead_letter(input, failure, version, attempt));
    }

    /// Runs the stage in process on `input`, a record `writer` made for it (see
    /// [`super::fusion`]): what it made when the plugin simply succeeded (nothing when it
    /// processed the id before); `None` when the stage's own worker must handle the record
    /// (a retry, a reject, a trap, or an earlier record of its partition left to the worker),
    /// which the record is then left to.
    pub fn run_in_process(&mut self, writer: &str, input: &Input<'_>) -> Option<InProcessRun> {
        let partition = input.origin.partition;
        let stage = &self.context.name;
        if self.settling.must_leave(partition) {
            tracing::debug!(stage = %stage, writer, id = %input.id, topic = %input.origin.source_topic, partition,
                "an earlier record of the partition is left to the stage's own worker; so is this one");
            self.settling.leave(partition, &input.id);
            return None;
        }
        let key = dedup_key(&input.id);
        let mut span = None;
        let processed = if self.dedup.knows_every_partition()
            && self
                .dedup
                .seen(&[(partition, key.clone())])
                .ok()
                .and_then(|seen| seen.first().copied())
                .unwrap_or(false)
        {
            self.counting.in_process(Fate::Duplicate);
            Vec::new()
        } else {
            span = event_span(stage, input);
            let called = SystemTime::now();
            let (version, processed) = self.plugin.process(&self.context, input, None);
            match processed {
                Ok(mut processed) => {
                    if let Some(span) = &span {
                        span.child("plugin", called, SystemTime::now());
                        processed
                            .records
                            .iter_mut()
                            .for_each(|r| span.inject(&mut r.headers));
                    }
                    tracing::debug!(stage = %stage, writer, id = %input.id, topic = %input.origin.source_topic, partition,
                        outputs = processed.records.len(), "processed in process (fused)");
                    self.counting
                        .in_process(Fate::Published(processed.records.len(), version));
                    processed.records
                }
                Err(failure) => {
                    tracing::debug!(stage = %stage, writer, id = %input.id, topic = %input.origin.source_topic, partition,
                        error = %failure.reason(), "fused call did not succeed; the stage's own worker handles the record");
                    self.settling.leave(partition, &input.id);
                    return None;
                }
            }
        };
        self.dedup.record(partition, &key);
        Some(InProcessRun {
            outputs: processed,
            span,
        })
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

    /// An event of `partition` ran into the plugin's time limit: the partition waits before
    /// its next event at `next` (the stage's retry delays, growing with each timeout in a
    /// row), and the stage's other partitions go on meanwhile.
    fn cool_down(&mut self, partition: TopicPartition, next: i64, moves: &mut Vec<Move>) {
        let timeouts = self.pacing.slow.entry(partition.clone()).or_default();
        *timeouts += 1;
        let delay = self.pacing.retry.delay_before(*timeouts + 1);
        SlowPartition {
            stage: &self.context.name,
            topic: &partition.0,
            partition: partition.1,
            timeouts_in_a_row: *timeouts,
            delay,
        }
        .emit();
        self.pacing.retries.hold(&partition, next, delay);
        moves.push(Move::Park(partition, next));
    }

    /// Whether the input at `offset` of `partition` may be handled now. An event of a parked
    /// partition waits; one that overtook the parked event after its partition resumed (a
    /// message fetched before the seek) sends the consumer back to the parked event.
    fn admit(&self, partition: &TopicPartition, offset: i64, moves: &mut Vec<Move>) -> bool {
        let retries = &self.pacing.retries;
        if retries.is_waiting(partition) {
            return false;
        }
        match retries.parked_offset(partition) {
            Some(parked) if offset > parked => {
                moves.push(Move::Seek(partition.clone(), parked));
                false
            }
            _ => true,
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

impl<P: Plugin> Participants for StageTask<P> {
    fn retries(&self) -> &RetryBook {
        &self.pacing.retries
    }

    fn participants(&mut self) -> Vec<&mut dyn Participant> {
        let mut all: Vec<&mut dyn Participant> = Vec::with_capacity(6);
        if let Some(state) = &mut self.state {
            all.push(state);
        }
        all.push(&mut self.dedup);
        all.push(&mut *self.fusion);
        all.push(&mut self.settling);
        all.push(&mut self.latest);
        all.push(&mut self.counting);
        all.push(&mut self.pacing);
        all
    }
}

/// The work's inputs become processed ids.
impl Participant for Box<dyn ProcessedIds> {
    fn closing_records(&mut self) -> Vec<OutRecord> {
        ProcessedIds::closing_records(&mut **self)
    }

    fn on_safe(&mut self) -> anyhow::Result<()> {
        self.commit()
    }

    fn on_dropped(&mut self, revoked: &[TopicPartition]) {
        self.rollback();
        for (_, partition) in revoked {
            self.forget(*partition);
        }
    }
}

/// Parks `partition` at `offset` and makes that offset what the open work commits for it, so
/// the event is read again by whoever owns the partition next.
fn park_at(handled: &mut Handled, partition: TopicPartition, offset: i64) {
    handled.moves.push(Move::Park(partition.clone(), offset));
    handled.done.push(Done {
        partition,
        next: offset,
        fate: None,
    });
}

/// The span of `stage` handling `input` (continuing the trace its headers carry), when
/// tracing is on.
fn event_span(stage: &str, input: &Input<'_>) -> Option<EventSpan> {
    if !trace::enabled() {
        return None;
    }
    EventSpan::start(
        stage.to_string(),
        SpanKind::Consumer,
        input
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str())),
        vec![
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new(
                "messaging.destination.name",
                input.origin.source_topic.clone(),
            ),
            KeyValue::new(
                "messaging.destination.partition.id",
                input.origin.partition.to_string(),
            ),
            KeyValue::new("messaging.kafka.offset", input.origin.offset),
            KeyValue::new("messaging.message.id", input.id.clone()),
        ],
    )
}

fn topic_partition(input: &Input<'_>) -> TopicPartition {
    (input.origin.source_topic.clone(), input.origin.partition)
}

/// Whether `input` is a replayed dead letter meant for another stage than `stage`.
fn is_for_another_stage(input: &Input<'_>, stage: &str) -> bool {
    cloudevents::find(&input.headers, TARGET_STAGE_HEADER).is_some_and(|target| target != stage)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;
    use crate::config::RetryConfig;
    use crate::event::dead_letter::Origin;
    use crate::health::Health;
    use crate::kafka::fake::record;
    use crate::kpi::StageKpis;
    use crate::stage::handover::Deferred;
    use crate::stage::processor::Route;
    use crate::state::KeyedState;

    /// Processed ids in memory: committed ones, and the open work's.
    #[derive(Default)]
    struct Ids {
        committed: HashSet<String>,
        open: HashSet<String>,
    }

    impl ProcessedIds for Ids {
        fn seen(&mut self, inputs: &[(i32, Cow<'_, str>)]) -> anyhow::Result<Vec<bool>> {
            Ok(inputs
                .iter()
                .map(|(_, id)| {
                    self.committed.contains(id.as_ref()) || self.open.contains(id.as_ref())
                })
                .collect())
        }

        fn record(&mut self, _partition: i32, id: &str) {
            self.open.insert(id.to_string());
        }

        fn closing_records(&mut self) -> Vec<OutRecord> {
            let mut open: Vec<&String> = self.open.iter().collect();
            open.sort();
            open.iter()
                .map(|id| record(&format!("processed:{id}")))
                .collect()
        }

        fn commit(&mut self) -> anyhow::Result<()> {
            self.committed.extend(self.open.drain());
            Ok(())
        }

        fn rollback(&mut self) {
            self.open.clear();
        }

        fn forget(&mut self, _partition: i32) {}

        fn knows_every_partition(&self) -> bool {
            true
        }
    }

    /// A plugin that answers by the input's body: `ok` makes one output, `retry` asks for a
    /// retry, anything else is rejected. It counts its calls.
    #[derive(Default)]
    struct Scripted {
        calls: Vec<String>,
    }

    impl Plugin for Scripted {
        fn process(
            &mut self,
            _context: &StageContext,
            input: &Input<'_>,
            _state: Option<&Arc<Mutex<KeyedState>>>,
        ) -> (Arc<str>, Result<Processed, Failure>) {
            self.calls.push(input.id.clone());
            let outcome = match input.payload {
                b"ok" => Ok(Processed {
                    records: vec![record(&format!("out-{}", input.id))],
                    writes: Writes::default(),
                }),
                b"retry" => Err(Failure::Retry("later".into())),
                // A document of key `doc` on the latest-per-key topic.
                b"doc" => Ok(Processed {
                    records: vec![OutRecord {
                        topic: "Latest".into(),
                        key: Some("doc".into()),
                        ..record(&format!("doc-{}", input.id))
                    }],
                    writes: Writes::default(),
                }),
                _ => Err(Failure::Rejected("no".into())),
            };
            (Arc::from("v1"), outcome)
        }
    }

    fn task() -> StageTask<Scripted> {
        let route = |topic: &str| Route {
            topic: topic.into(),
            event_type: topic.into(),
            latest_per_key: topic == "Latest",
        };
        StageTask {
            context: Arc::new(StageContext {
                name: Arc::from("s"),
                routes: BTreeMap::from([
                    ("out".to_string(), route("Out")),
                    ("doc".to_string(), route("Latest")),
                ]),
                dead_letter: route("DLQ"),
                schemas: Default::default(),
                limits: Default::default(),
            }),
            plugin: Scripted::default(),
            dedup: Box::new(Ids::default()),
            state: None,
            fusion: Box::new(NothingInProcess),
            pacing: Pacing::new(RetryConfig {
                max_attempts: 3,
                initial_delay: Duration::from_secs(60),
                max_delay: Duration::from_secs(60),
            }),
            stuck: StuckBook::new(Health::default()),
            settling: Settling::default(),
            counting: Counting::new(StageKpis::new("s")),
            latest: LatestOutputs::default(),
        }
    }

    /// Input `id` at `offset` of partition `partition` of topic `In`, with body `body`.
    fn input<'a>(id: &str, partition: i32, offset: i64, body: &'a [u8]) -> Input<'a> {
        Input {
            id: id.into(),
            event_type: "In".into(),
            key: None,
            payload: body,
            headers: Vec::new(),
            origin: Origin {
                stage: "s".into(),
                source_topic: "In".into(),
                partition,
                offset,
            },
        }
    }

    fn ids(handled: &Handled) -> Vec<&str> {
        handled.records.iter().map(|r| r.id.as_str()).collect()
    }

    fn done(partition: i32, next: i64, fate: Option<Fate>) -> Done {
        Done {
            partition: ("In".into(), partition),
            next,
            fate,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_published_input_makes_its_outputs_and_its_processed_id() {
        let mut task = task();
        let handled = task.handle(&mut [input("a", 0, 7, b"ok")]).unwrap();
        assert_eq!(ids(&handled), ["out-a"]);
        let closing = ProcessedIds::closing_records(&mut *task.dedup);
        assert_eq!(closing[0].id, "processed:a", "written with the commit");
        assert_eq!(
            handled.done,
            [done(0, 8, Some(Fate::Published(1, Arc::from("v1"))))]
        );
        assert!(handled.moves.is_empty() && handled.dead_letters.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_repeat_is_dropped_without_calling_the_plugin_in_the_batch_and_after() {
        let mut task = task();
        let handled = task
            .handle(&mut [input("a", 0, 0, b"ok"), input("a", 0, 1, b"ok")])
            .unwrap();
        assert_eq!(handled.done[1], done(0, 2, Some(Fate::Duplicate)));
        // A later batch of the same open work sees it too, and so does one after the commit.
        let later = task.handle(&mut [input("a", 1, 5, b"ok")]).unwrap();
        assert_eq!(later.done, [done(1, 6, Some(Fate::Duplicate))]);
        task.participants()
            .into_iter()
            .try_for_each(|p| p.on_safe())
            .unwrap();
        let after = task.handle(&mut [input("a", 1, 6, b"ok")]).unwrap();
        assert_eq!(after.done, [done(1, 7, Some(Fate::Duplicate))]);
        assert_eq!(task.plugin.calls, ["a"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_retry_parks_its_partition_and_the_events_behind_it_while_others_go_on() {
        let mut task = task();
        let handled = task
            .handle(&mut [
                input("a", 0, 3, b"retry"),
                input("b", 0, 4, b"ok"),
                input("c", 1, 9, b"ok"),
            ])
            .unwrap();
        assert_eq!(
            handled.moves,
            [Move::Park(("In".into(), 0), 3)],
            "back to the event to retry"
        );
        assert_eq!(
            handled.done,
            [
                done(0, 3, None),
                done(1, 10, Some(Fate::Published(1, Arc::from("v1"))))
            ]
        );
        assert_eq!(task.plugin.calls, ["a", "c"], "b waits behind a");
        assert_eq!(task.pacing.retries.attempt(&("In".into(), 0), 3), 2);
        // The partition's next attempt carries its count in the offset's metadata.
        assert!(task.retries().metadata(&("In".into(), 0), 3).is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_latest_per_key_output_is_written_once_per_key_with_the_commit() {
        let mut task = task();
        let handled = task
            .handle(&mut [
                input("a", 0, 0, b"doc"),
                input("b", 0, 1, b"ok"),
                input("c", 1, 0, b"doc"),
            ])
            .unwrap();
        assert_eq!(ids(&handled), ["out-b"], "documents wait for the commit");
        assert_eq!(
            task.latest
                .closing_records()
                .iter()
                .map(|r| r.id.as_str())
                .collect::<Vec<_>>(),
            ["doc-c"],
            "the last document of the key"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_rejected_input_is_dead_lettered_and_its_letter_marked() {
        let mut task = task();
        let handled = task
            .handle(&mut [input("a", 0, 0, b"ok"), input("b", 2, 4, b"bad")])
            .unwrap();
        assert_eq!(
            handled.records[1].topic,
            "DLQ",
            "after a's output (ids are written with the commit): {:?}",
            ids(&handled)
        );
        assert_eq!(handled.dead_letters, [(1, ("In".into(), 2), 4)]);
        assert_eq!(
            handled.done[1],
            done(2, 5, Some(Fate::DeadLettered(Arc::from("v1"), "rejected")))
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn dropped_work_forgets_its_ids_and_the_revoked_partitions_retries() {
        let mut task = task();
        task.handle(&mut [input("a", 0, 0, b"ok"), input("r", 1, 0, b"retry")])
            .unwrap();
        for participant in task.participants() {
            participant.on_dropped(&[("In".into(), 1)]);
        }
        assert!(task.pacing.retries.is_empty(), "partition 1 is not ours");
        let again = task.handle(&mut [input("a", 0, 0, b"ok")]).unwrap();
        assert_eq!(
            again.done,
            [done(0, 1, Some(Fate::Published(1, Arc::from("v1"))))],
            "a is handled again"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_replayed_dead_letter_for_another_stage_is_not_ours() {
        let mut task = task();
        let mut replayed = input("a", 0, 0, b"ok");
        replayed
            .headers
            .push((TARGET_STAGE_HEADER.into(), "other".into()));
        let handled = task.handle(&mut [replayed]).unwrap();
        assert_eq!(handled.done, [done(0, 1, Some(Fate::NotOurs))]);
        assert!(task.plugin.calls.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn run_in_process_a_stage_makes_its_outputs_or_leaves_the_record_to_its_worker() {
        let mut fused = task();
        let book = Arc::new(Deferred::new(Duration::from_secs(60)));
        fused.settling = Settling::new(Some(book.clone()));
        let run = fused
            .run_in_process("writer", &input("a", 0, -1, b"ok"))
            .expect("it simply succeeds");
        assert_eq!(run.outputs[0].id, "out-a");
        let closing = ProcessedIds::closing_records(&mut *fused.dedup);
        assert_eq!(
            closing[0].id, "processed:a",
            "written with the writer's commit"
        );
        // A repeat of a processed id makes nothing, and is counted as a repeat.
        let repeat = fused
            .run_in_process("writer", &input("a", 0, -1, b"ok"))
            .unwrap();
        assert!(repeat.outputs.is_empty());
        // A retry is the worker's: left to it, and so is every later record of its partition.
        assert!(
            fused
                .run_in_process("writer", &input("r", 1, -1, b"retry"))
                .is_none()
        );
        assert!(book.contains(1, "r"));
        assert!(
            fused
                .run_in_process("writer", &input("b", 1, -1, b"ok"))
                .is_none()
        );
        assert_eq!(fused.plugin.calls, ["a", "r"], "b is not called");
        // The writer's work is dropped: nothing is left to the worker any more.
        for participant in fused.participants() {
            participant.on_dropped(&[]);
        }
        assert!(!book.is_waiting(1));
        assert!(
            fused
                .run_in_process("writer", &input("a", 0, -1, b"ok"))
                .is_some_and(|run| !run.outputs.is_empty()),
            "a was never processed"
        );
    }
}
