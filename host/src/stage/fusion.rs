//! Stage fusion: a stage that qualifies runs *in process* inside the workers of the stages that
//! write its input, in their open work (their transaction in `exactly_once`, their
//! acknowledged batch in `at_least_once`), the way Kafka Streams runs a sub-topology in one
//! task and Flink chains operators. An order then crosses one transaction where it crossed
//! several.
//!
//! A stage B is *fusable* when it is fed by exactly one topic, keeps no keyed state (its plugin
//! cannot, or the stage sets `stateless`) and does not set `fuse = false`; it is fused into a
//! writer A (A's worker calls B) when A has the same `mode` and is topic-fed or an
//! `exactly_once` HTTP ingress (each of whose pooled producers runs B in the transaction that
//! publishes the requests: see [`crate::ingress`]). When A makes a record `r` for B's input
//! topic:
//!
//! 1. A's worker runs B as a [`StageTask`] of its own (B's context, deduplicator, KPI recorder
//!    and deferred book, and an instance made from B's plugin slot, so it follows B's hot swaps
//!    and rollbacks); B's outputs are handled the same way, recursively, and all of them go
//!    into A's open work, whose end B's task follows as a participant;
//! 2. `r` is written with the header [`HANDLED_BY_HEADER`] naming B, and B's own worker (which
//!    still consumes its topic, for outside producers and dead-letter replays) skips it: its
//!    offset advances, nothing is published. In `exactly_once` the record is visible if and
//!    only if the transaction holding B's outputs committed;
//! 3. when B does not simply succeed (a `retry`, a reject, a trap, an output it may not
//!    publish), its in-process results are dropped and `r` is written without the header, so
//!    B's own worker handles it with its retries and dead letters;
//! 4. B's processed ids learn `r`'s id, so an outside producer repeating it on B's topic is
//!    dropped: `exactly_once` writes it to B's `<group>-processed` topic, partition = `r`'s
//!    partition (set by the host with the producer's partitioner, see
//!    [`crate::kafka::Partitioner`]), in A's transaction, and into the local copy of that topic
//!    once the transaction committed; `at_least_once` marks it in the local store under B's
//!    name once A's work is safe. The limit: another host instance that owns B's partition
//!    and has already caught up its processed ids does not see the id until it takes the
//!    partition again (a restart, a rebalance); an outside repeat of the same id there is
//!    processed once more;
//! 5. B's in-process work counts in B's KPIs (the worker shares B's recorder), once A's work is
//!    committed;
//! 6. a key's order holds: once a record of partition `q` is left to B's own worker, the
//!    writers of this host run B in process on partition `q` again only after B's worker has
//!    handled it (see [`Deferred`]), so a later event cannot overtake one B's worker retries.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::guarantee::FusedIds;
use super::handover::{Deferred, HANDLED_BY_HEADER};
use super::latest::LatestOutputs;
use super::live_plugin::LivePlugin;
use super::participant::{Committed, Participant, Participants};
use super::processor::{Input, StageContext};
use super::retry::TopicPartition;
use super::stage_parts::{Counting, Pacing, Settling};
use super::stuck::StuckBook;
use super::task::{InProcess, NothingInProcess, StageTask};
use crate::config::{ProcessingMode, StageConfig};
use crate::event::cloudevents;
use crate::event::dead_letter::Origin;
use crate::kafka::{OutRecord, Partitioner};
use crate::kpi::StageKpis;
use crate::observe::trace::EventSpan;
use crate::plugin::{PluginError, PluginSlot};

/// Why a stage is not fusable (`None` when it is).
pub fn not_fusable(stage: &StageConfig, uses_state: bool) -> Option<&'static str> {
    if stage.is_http() {
        Some("fed by the HTTP ingress")
    } else if stage.inputs().len() != 1 {
        Some("reads more than one topic")
    } else if uses_state {
        Some("keeps keyed state")
    } else if !stage.fuses() {
        Some("sets fuse = false")
    } else {
        None
    }
}

/// Whether the worker of `writer` runs the fusable stage `fused` in process (given that
/// `fused` reads a topic `writer` writes). The HTTP ingress runs stages in process only in
/// `exactly_once`, in the transaction that publishes a request's events (see
/// [`crate::ingress`]); an `at_least_once` ingress publishes each request on its own.
pub fn fuses_into(writer: &StageConfig, fused: &StageConfig) -> bool {
    let transactional_ingress = writer.mode == ProcessingMode::ExactlyOnce;
    writer.name != fused.name
        && writer.mode == fused.mode
        && (!writer.is_http() || transactional_ingress)
}

/// A fusable stage, as a writer's worker needs it.
#[derive(Clone)]
pub struct FusableStage {
    /// The stage's configuration (name, mode, input, group).
    pub config: StageConfig,
    /// Its routes, schemas and dead-letter naming.
    pub context: Arc<StageContext>,
    /// Its plugin slot: every worker's instance of it follows its swaps.
    pub slot: Arc<PluginSlot>,
    /// Its KPI recorder, shared with its own worker.
    pub kpis: StageKpis,
    /// Makes the deduplicator that records the ids it processed in process.
    pub dedup: FusedIds,
    /// Records left to its own worker, shared by the writers and that worker.
    pub deferred: Arc<Deferred>,
}

/// Which stages run fused, and what it takes to run them: made once at start-up.
#[derive(Clone, Default)]
pub struct FusionPlan {
    /// Fusable stages by their input topic.
    by_topic: BTreeMap<String, Vec<FusableStage>>,
    /// Partitions of each fusable stage's input topic.
    partitions: HashMap<String, i32>,
    /// Where the producer puts keyed records.
    partitioner: Partitioner,
}

impl FusionPlan {
    /// The book of records left to `stage`'s own worker, if it is fusable.
    pub fn deferred(&self, stage: &str) -> Option<Arc<Deferred>> {
        self.by_topic
            .values()
            .flatten()
            .find(|fusable| fusable.config.name == stage)
            .map(|fusable| fusable.deferred.clone())
    }

    /// A plan of `stages` (all fusable), whose input topics have `partitions`.
    pub fn new(
        stages: Vec<FusableStage>,
        partitions: HashMap<String, i32>,
        partitioner: Partitioner,
    ) -> Self {
        let mut by_topic: BTreeMap<String, Vec<FusableStage>> = BTreeMap::new();
        for stage in stages {
            let topic = stage
                .config
                .inputs()
                .first()
                .map(|t| t.to_string())
                .unwrap_or_default();
            by_topic.entry(topic).or_default().push(stage);
        }
        Self {
            by_topic,
            partitions,
            partitioner,
        }
    }

    /// The stages fused into `writer`'s worker, directly or through another fused stage.
    pub fn reachable_from(&self, writer: &StageConfig) -> Vec<&FusableStage> {
        let mut found: Vec<&FusableStage> = Vec::new();
        let mut topics: Vec<&str> = writer.outputs.values().map(String::as_str).collect();
        while let Some(topic) = topics.pop() {
            for stage in self.by_topic.get(topic).into_iter().flatten() {
                if fuses_into(writer, &stage.config)
                    && !found.iter().any(|f| f.config.name == stage.config.name)
                {
                    found.push(stage);
                    topics.extend(stage.config.outputs.values().map(String::as_str));
                }
            }
        }
        found
    }

    /// The names of every stage some writer among `stages` runs in process.
    pub fn fused_names<'s>(
        &self,
        stages: impl IntoIterator<Item = &'s StageConfig>,
    ) -> Vec<String> {
        let mut names: Vec<String> = stages
            .into_iter()
            .flat_map(|writer| self.reachable_from(writer))
            .map(|stage| stage.config.name.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The fusion of `writer`'s worker: its own task of every stage it runs in process
    /// (records the broker refuses to take as dead letters hold their input in `stuck`).
    pub fn for_writer(
        &self,
        writer: &StageConfig,
        stuck: &StuckBook,
    ) -> Result<Fusion, PluginError> {
        let mut stages = Vec::new();
        for stage in self.reachable_from(writer) {
            stages.push(FusedStage {
                input: stage
                    .config
                    .inputs()
                    .first()
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
                task: StageTask {
                    context: stage.context.clone(),
                    plugin: LivePlugin::new(stage.slot.instance()?),
                    dedup: (stage.dedup)(),
                    state: None,
                    fusion: Box::new(NothingInProcess),
                    pacing: Pacing::new(stage.config.retry.clone()),
                    stuck: stuck.clone(),
                    settling: Settling::new(Some(stage.deferred.clone())),
                    counting: Counting::new(stage.kpis.clone()),
                    latest: LatestOutputs::default(),
                },
            });
        }
        let mut by_topic: HashMap<String, Vec<usize>> = HashMap::new();
        for (index, stage) in stages.iter().enumerate() {
            by_topic.entry(stage.input.clone()).or_default().push(index);
        }
        Ok(Fusion {
            writer: Arc::from(writer.name.as_str()),
            stages,
            by_topic,
            partitions: self.partitions.clone(),
            partitioner: self.partitioner,
        })
    }
}

/// A stage running in process in a writer's worker: the same [`StageTask`] its own worker
/// runs (its dedup, ids, KPIs and rollback), with the worker's own instance of its plugin,
/// which follows the stage's swaps.
struct FusedStage {
    /// Its input topic.
    input: String,
    /// Runs it on the records the writer makes for it.
    task: StageTask<LivePlugin>,
}

/// The stages a worker runs in process, and the open work's share of them.
pub struct Fusion {
    /// The worker's stage.
    writer: Arc<str>,
    stages: Vec<FusedStage>,
    /// Indexes into `stages` by input topic.
    by_topic: HashMap<String, Vec<usize>>,
    partitions: HashMap<String, i32>,
    partitioner: Partitioner,
}

impl Fusion {
    fn expand_into(
        &mut self,
        writer: &str,
        records: Vec<OutRecord>,
        chain: &mut Vec<usize>,
        out: &mut Vec<OutRecord>,
        spans: &mut Vec<EventSpan>,
    ) {
        for mut record in records {
            let targets: Vec<usize> = self
                .by_topic
                .get(&record.topic)
                .into_iter()
                .flatten()
                .copied()
                .filter(|index| !chain.contains(index))
                .collect();
            if targets.is_empty() {
                out.push(record);
                continue;
            }
            let partitions = self.partitions.get(&record.topic).copied().unwrap_or(1);
            let id = cloudevents_id(&record);
            let partition = *record.partition.get_or_insert_with(|| {
                self.partitioner
                    .partition(record.key.as_deref(), &id, partitions)
            });
            let mut handled_by = Vec::new();
            let mut downstream = Vec::new();
            for index in targets {
                let task = &mut self.stages[index].task;
                let Some(run) = task.run_in_process(writer, &as_input(&record, &id, partition))
                else {
                    continue;
                };
                let name = task.context.name.clone();
                spans.extend(run.span);
                handled_by.push(name.clone());
                chain.push(index);
                self.expand_into(&name, run.outputs, chain, &mut downstream, spans);
                chain.pop();
            }
            if !handled_by.is_empty() {
                record.headers.push(HANDLED_BY_HEADER, handled_by.join(","));
            }
            out.push(record);
            out.extend(downstream);
        }
    }

    /// Every participant of every fused stage's task.
    fn participants(&mut self) -> impl Iterator<Item = &mut dyn Participant> {
        self.stages
            .iter_mut()
            .flat_map(|stage| stage.task.participants())
    }
}

impl InProcess for Fusion {
    fn names(&self) -> Vec<&str> {
        self.stages.iter().map(|s| &*s.task.context.name).collect()
    }

    /// Each record for a fused stage's input is handled by that stage in process and followed
    /// by what it made (and its processed-id record), recursively.
    fn expand(&mut self, records: Vec<OutRecord>, spans: &mut Vec<EventSpan>) -> Vec<OutRecord> {
        if self.stages.is_empty() {
            return records;
        }
        let mut out = Vec::with_capacity(records.len() * 2);
        let writer = self.writer.clone();
        self.expand_into(&writer, records, &mut Vec::new(), &mut out, spans);
        out
    }
}

/// The fused stages' share of the open work follows it through their own tasks'
/// participants: their ids become processed when it is safe, their KPIs count when it is
/// committed, and nothing of it stays when it is dropped (the revoked partitions are the
/// writer's, not theirs).
impl Participant for Fusion {
    /// The fused stages' processed ids go with the writer's transaction.
    fn closing_records(&mut self) -> Vec<OutRecord> {
        self.participants()
            .flat_map(|participant| participant.closing_records())
            .collect()
    }

    fn on_safe(&mut self) -> anyhow::Result<()> {
        self.participants()
            .try_for_each(|participant| participant.on_safe())
    }

    fn on_committed(&mut self, work: &Committed) {
        let theirs = Committed {
            fates: Vec::new(),
            latency: work.latency,
        };
        for participant in self.participants() {
            participant.on_committed(&theirs);
        }
    }

    fn on_dropped(&mut self, _revoked: &[TopicPartition]) {
        for participant in self.participants() {
            participant.on_dropped(&[]);
        }
    }
}

/// The input a record the writer made is to the fused stage reading its topic.
fn as_input<'r>(record: &'r OutRecord, id: &str, partition: i32) -> Input<'r> {
    let headers: Vec<(String, String)> = record
        .headers
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    let event_type = cloudevents::find(&headers, cloudevents::TYPE)
        .map(str::to_string)
        .unwrap_or_else(|| record.topic.clone());
    Input {
        id: id.to_string(),
        event_type,
        key: record.key.as_deref(),
        payload: record.payload.as_deref().unwrap_or_default(),
        headers,
        origin: Origin {
            stage: String::new(),
            source_topic: record.topic.clone(),
            partition,
            offset: -1,
        },
    }
}

/// The event id of a record the host made (its `ce_id` header).
fn cloudevents_id(record: &OutRecord) -> String {
    record
        .headers
        .get(cloudevents::ID)
        .unwrap_or(&record.id)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stages(text: &str) -> Vec<StageConfig> {
        #[derive(serde::Deserialize)]
        struct File {
            stages: Vec<StageConfig>,
        }
        toml::from_str::<File>(text).unwrap().stages
    }

    const PIPELINE: &str = r#"
        [[stages]]
        name = "ingress"
        plugin = "x.wasm"
        input = "http"
        [[stages]]
        name = "join"
        plugin = "x.wasm"
        input = ["A", "B"]
        [[stages]]
        name = "pack"
        plugin = "x.wasm"
        input = "Confirmed"
        outputs = { packed = "Packed" }
        [[stages]]
        name = "ship"
        plugin = "x.wasm"
        input = "Packed"
        fuse = false
        [[stages]]
        name = "loose"
        plugin = "x.wasm"
        input = "Packed"
        mode = "at_least_once"
    "#;

    #[test]
    fn a_stage_is_fusable_with_one_input_topic_no_state_and_fuse_not_off() {
        let stages = stages(PIPELINE);
        let why: Vec<Option<&str>> = stages.iter().map(|s| not_fusable(s, false)).collect();
        assert_eq!(
            why,
            [
                Some("fed by the HTTP ingress"),
                Some("reads more than one topic"),
                None,
                Some("sets fuse = false"),
                None
            ]
        );
        assert_eq!(not_fusable(&stages[2], true), Some("keeps keyed state"));
    }

    #[test]
    fn a_stage_is_fused_only_into_writers_of_its_mode_and_exactly_once_ingresses() {
        let stages = stages(PIPELINE);
        let (ingress, join, pack, loose) = (&stages[0], &stages[1], &stages[2], &stages[4]);
        assert!(
            fuses_into(ingress, pack),
            "an exactly-once ingress runs stages in its transactions"
        );
        let mut loose_ingress = ingress.clone();
        loose_ingress.mode = ProcessingMode::AtLeastOnce;
        assert!(
            !fuses_into(&loose_ingress, loose),
            "an at-least-once ingress publishes each request on its own"
        );
        assert!(fuses_into(join, pack));
        assert!(!fuses_into(pack, pack), "not into itself");
        assert!(
            !fuses_into(pack, loose),
            "exactly_once writer, at_least_once reader"
        );
    }
}
