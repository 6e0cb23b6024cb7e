//! The one place a stage's processing mode is looked at: it picks the stage's [`Guarantee`],
//! its deduplicator and its consumer settings together (and the ingress's answers, see
//! [`ingress_answers`]).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::producer::{FutureProducer, Producer};

use super::at_least_once::{AtLeastOnce, LocalIds};
use super::contract::{Guarantee, ProcessedIds};
use super::exactly_once::ExactlyOnce;
use super::processed_log::{ProcessedLog, processed_topic};
use crate::config::{PipelineConfig, ProcessingMode, StageConfig};
use crate::health::Reporter;
use crate::ingress::{
    AnswerBook, InProcessFactory, IngressPool, LocalAnswers, ProducerFactory, TransactionalAnswers,
};
use crate::kafka::{
    KafkaClients, ensure_compacted, ensure_partitions, partition_count, refuse_lost_topic,
};
use crate::store::{LocalStore, Scope, Table};

/// What a topic-fed stage's processing mode decides.
pub struct StageGuarantee {
    /// How its open work reaches Kafka and becomes safe.
    pub way: Box<dyn Guarantee<ConsumerGroupMetadata>>,
    /// Where it finds out it processed an id before.
    pub dedup: Box<dyn ProcessedIds>,
    /// Its consumer's settings (before the stage's own additions).
    pub consumer: ClientConfig,
}

/// The guarantee of the topic-fed `stage`: exactly-once makes its processed-id
/// topic and its transactional producer; at-least-once uses the shared producer and the
/// local store.
pub async fn stage_guarantee(
    config: &PipelineConfig,
    stage: &StageConfig,
    shared_producer: &FutureProducer,
    store: &LocalStore,
) -> anyhow::Result<StageGuarantee> {
    match stage.mode {
        ProcessingMode::AtLeastOnce => Ok(StageGuarantee {
            way: Box::new(AtLeastOnce::new(shared_producer.clone(), &stage.name)),
            dedup: Box::new(LocalIds::new(store.clone(), &stage.name)),
            consumer: consumer_settings(config, stage),
        }),
        ProcessingMode::ExactlyOnce => {
            let kafka = KafkaClients::new(&config.kafka);
            let dedup = processed_log(config, stage, &kafka, store).await?;
            let producer =
                transactional_producer(config, &stage.name, &transactional_id(config, stage))?;
            Ok(StageGuarantee {
                way: Box::new(ExactlyOnce::new(producer, &stage.name)),
                dedup: Box::new(dedup),
                consumer: consumer_settings(config, stage),
            })
        }
    }
}

/// The consumer settings of the topic-fed `stage` (before the stage's own additions):
/// at-least-once commits the offsets it stores in the background; exactly-once commits offsets
/// only in its transactions.
pub fn consumer_settings(config: &PipelineConfig, stage: &StageConfig) -> ClientConfig {
    let auto_commit = match stage.mode {
        ProcessingMode::AtLeastOnce => true,
        ProcessingMode::ExactlyOnce => false,
    };
    KafkaClients::new(&config.kafka).consumer(
        &stage.group_id(),
        &config.state.instance_id,
        auto_commit,
    )
}

/// The topic where `stage` keeps its processed ids, if it keeps them in one (exactly-once).
pub fn processed_ids_topic(stage: &StageConfig) -> Option<String> {
    match stage.mode {
        ProcessingMode::AtLeastOnce => None,
        ProcessingMode::ExactlyOnce => Some(processed_topic(&stage.group_id())),
    }
}

/// Makes the deduplicator a fused stage's ids go through in a writer's worker: the stage's own
/// processed-id topic and its local copy (exactly-once), or the local store under its name.
pub type FusedIds = Arc<dyn Fn() -> Box<dyn ProcessedIds> + Send + Sync>;

/// The [`FusedIds`] of the fusable `stage`.
pub fn fused_ids(config: &PipelineConfig, stage: &StageConfig, store: &LocalStore) -> FusedIds {
    let group = stage.group_id();
    let (name, store) = (stage.name.clone(), store.clone());
    match stage.mode {
        ProcessingMode::AtLeastOnce => {
            Arc::new(move || Box::new(LocalIds::new(store.clone(), &name)))
        }
        ProcessingMode::ExactlyOnce => {
            let kafka = KafkaClients::new(&config.kafka);
            let retention = config.state.idempotency_retention;
            Arc::new(move || {
                let table = Table::expiring(
                    &store,
                    &format!("processed:{group}"),
                    Scope::Partition,
                    retention,
                );
                Box::new(ProcessedLog::new(
                    processed_topic(&group),
                    kafka.clone(),
                    table,
                ))
            })
        }
    }
}

/// How the ingress stage remembers answers: in a compacted topic committed with its events
/// (exactly-once; its transactions also run what `in_process` makes: the stages fused into
/// the ingress), or in the local store (at-least-once).
pub async fn ingress_answers(
    config: &PipelineConfig,
    stage: &StageConfig,
    shared_producer: &FutureProducer,
    store: &LocalStore,
    health: Reporter,
    in_process: InProcessFactory,
) -> anyhow::Result<Box<dyn AnswerBook>> {
    if stage.mode == ProcessingMode::AtLeastOnce {
        health.ok();
        return Ok(Box::new(LocalAnswers::new(
            store.clone(),
            shared_producer.clone(),
        )));
    }
    let kafka = KafkaClients::new(&config.kafka);
    let group = stage.group_id();
    let topic = format!("{group}-answers");
    let partitions = stage
        .outputs
        .values()
        .filter_map(|t| config.topics.get(t).map(|t| t.partitions))
        .max()
        .unwrap_or(1);
    let outputs: Vec<&str> = stage.outputs.values().map(String::as_str).collect();
    if config.kafka.create_topics {
        ensure_compacted(
            &kafka,
            &topic,
            partitions,
            config.replication_after(&outputs),
            Some(config.state.idempotency_retention),
        )
        .await?;
    }
    let transactional_id = transactional_id(config, stage);
    let (factory_config, stage_name) = (config.clone(), stage.name.clone());
    let make: ProducerFactory = Arc::new(move |n| {
        transactional_producer(
            &factory_config,
            &stage_name,
            &ingress_transactional_id(&transactional_id, n),
        )
    });
    let pool = IngressPool {
        make,
        producers: config.http.ingress_producers,
        in_process,
    };
    let answers = TransactionalAnswers::start(
        &kafka,
        &topic,
        pool,
        shared_producer.clone(),
        health,
        Table::expiring(
            store,
            &format!("answers:{group}"),
            Scope::Topic,
            config.state.idempotency_retention,
        ),
    )
    .await?;
    Ok(Box::new(answers))
}

/// The processed-id log of the exactly-once `stage`: its compacted topic (made, or grown to
/// the inputs' partitions) and its local copy.
async fn processed_log(
    config: &PipelineConfig,
    stage: &StageConfig,
    kafka: &KafkaClients,
    store: &LocalStore,
) -> anyhow::Result<ProcessedLog> {
    let group = stage.group_id();
    let inputs = stage.inputs();
    let topic = processed_topic(&group);
    let mut partitions = 1;
    let replication = config.replication_after(&inputs);
    for input in &inputs {
        if let Some(topic) = config.topics.get(*input) {
            partitions = partitions.max(topic.partitions);
        }
        // What the topic has now: partitions may have been added since it was declared.
        if let Ok(counted) = tokio::task::block_in_place(|| partition_count(kafka, input)) {
            partitions = partitions.max(counted);
        }
    }
    if config.kafka.create_topics {
        tokio::task::block_in_place(|| refuse_lost_topic(kafka, &topic, &group, &inputs))?;
        ensure_compacted(
            kafka,
            &topic,
            partitions,
            replication,
            Some(config.state.idempotency_retention),
        )
        .await?;
        // Partition i keeps the ids of input partition i: an input that gained partitions
        // needs as many here (the existing ones keep their ids where they are).
        ensure_partitions(kafka, &topic, partitions).await?;
    }
    let table = Table::expiring(
        store,
        &format!("processed:{group}"),
        Scope::Partition,
        config.state.idempotency_retention,
    );
    Ok(ProcessedLog::new(topic, kafka.clone(), table))
}

/// The `transactional.id` of `stage` on this instance: stable across restarts, so a restarted
/// instance fences its predecessor.
fn transactional_id(config: &PipelineConfig, stage: &StageConfig) -> String {
    format!("{}.{}", stage.group_id(), config.state.instance_id)
}

/// The `transactional.id` of the ingress's producer `n` (see `http.ingress_producers`), from
/// the stage's `base` id: the first keeps the stage's id (what a single producer used), the
/// others add `-<n>`; each is stable across restarts, so a restarted instance fences its
/// predecessor's producer in the same place.
fn ingress_transactional_id(base: &str, n: usize) -> String {
    match n {
        0 => base.to_string(),
        n => format!("{base}-{n}"),
    }
}

/// The transactional producer of `stage`, its transactions initialised.
fn transactional_producer(
    config: &PipelineConfig,
    stage: &str,
    transactional_id: &str,
) -> anyhow::Result<FutureProducer> {
    let producer: FutureProducer = KafkaClients::new(&config.kafka)
        .transactional_producer(transactional_id)
        .create()
        .with_context(|| format!("cannot create the transactional producer of stage {stage}"))?;
    tokio::task::block_in_place(|| producer.init_transactions(Duration::from_secs(60)))
        .with_context(|| {
            format!(
                "stage {stage} cannot initialise transactions (transactional.id {transactional_id})"
            )
        })?;
    Ok(producer)
}
