//! The consume loop of one topic-fed stage:
//! consume a batch → decode → drop already-processed ids → call the plugin → publish every
//! output (or dead letter) and wait for the acknowledgements → record the ids as processed →
//! only then store the input offsets for commit. Nothing is acknowledged before its outputs.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::FutureProducer;
use tokio::sync::watch;

use super::processor::{Failure, Input, StageContext};
use crate::event::cloudevents;
use crate::event::dead_letter::Origin;
use crate::kafka::{OutRecord, publish_all};
use crate::kpi::StageKpis;
use crate::plugin::StageInstance;
use crate::store::StateStore;

/// Attempts for an input whose plugin asks for a retry before it is dead-lettered.
const RETRY_ATTEMPTS: u32 = 3;
/// Pause before the first retry; doubled for each further one.
const RETRY_BASE_DELAY: Duration = Duration::from_millis(50);
/// Rounds of re-publishing before a batch is given up (and re-consumed after a restart).
const PUBLISH_ROUNDS: u32 = 8;

/// A running topic-fed stage.
pub struct StageRunner {
    /// Routing, schemas and naming.
    pub context: Arc<StageContext>,
    /// The plugin instance this runner owns.
    pub instance: StageInstance,
    /// The stage's consumer, subscribed to its input topic.
    pub consumer: StreamConsumer,
    /// The host's shared producer.
    pub producer: FutureProducer,
    /// Durable record of processed ids.
    pub store: StateStore,
    /// KPI recorder of the stage.
    pub kpis: StageKpis,
    /// `ce_type` assumed for input records that carry no `ce_type` header.
    pub input_event_type: String,
    /// Largest batch handled at once.
    pub max_batch: usize,
}

/// What happened to one input of a batch.
enum Fate {
    Duplicate,
    Published(usize),
    DeadLettered,
}

impl StageRunner {
    /// Runs until `shutdown` turns true, then finishes the current batch and commits.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let stage = self.context.name.clone();
        tracing::info!(stage = %stage, version = %self.instance.version(), "stage started");
        loop {
            let first = tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                message = self.consumer.recv() => message,
            };
            let first = match first {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(stage = %stage, %error, "consumer error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let mut batch = vec![first];
            while batch.len() < self.max_batch {
                match self.consumer.recv().now_or_never() {
                    Some(Ok(message)) => batch.push(message),
                    Some(Err(error)) => {
                        tracing::warn!(stage = %stage, %error, "consumer error");
                        break;
                    }
                    None => break,
                }
            }
            handle_batch(
                &self.context,
                &mut self.instance,
                &self.consumer,
                &self.producer,
                &self.store,
                &self.kpis,
                &self.input_event_type,
                &batch,
            )
            .await
            .with_context(|| format!("stage {stage} failed"))?;
        }
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => {}
            Err(rdkafka::error::KafkaError::ConsumerCommit(
                rdkafka::types::RDKafkaErrorCode::NoOffset,
            )) => {}
            Err(error) => tracing::warn!(stage = %stage, %error, "final commit failed"),
        }
        tracing::info!(stage = %stage, "stage stopped");
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
async fn handle_batch(
    context: &StageContext,
    instance: &mut StageInstance,
    consumer: &StreamConsumer,
    producer: &FutureProducer,
    store: &StateStore,
    kpis: &StageKpis,
    input_event_type: &str,
    batch: &[BorrowedMessage<'_>],
) -> anyhow::Result<()> {
    let started = Instant::now();
    let inputs: Vec<Input<'_>> = batch
        .iter()
        .map(|message| decode(context, message, input_event_type))
        .collect();
    let ids: Vec<&str> = inputs.iter().map(|input| input.id.as_str()).collect();
    let already = store
        .processed_among(&context.name, &ids)
        .context("cannot read the idempotency store")?;

    let mut records: Vec<OutRecord> = Vec::new();
    let mut fates = Vec::with_capacity(inputs.len());
    let mut seen_in_batch = HashSet::new();
    for (input, already) in inputs.iter().zip(already) {
        if already || !seen_in_batch.insert(input.id.as_str()) {
            tracing::debug!(stage = %context.name, id = %input.id, topic = %input.origin.source_topic,
                partition = input.origin.partition, offset = input.origin.offset, "duplicate dropped");
            fates.push(Fate::Duplicate);
            continue;
        }
        match process_with_retries(context, instance, input, kpis).await {
            Ok(outputs) => {
                fates.push(Fate::Published(outputs.len()));
                records.extend(outputs);
            }
            Err((failure, attempts)) => {
                tracing::warn!(stage = %context.name, id = %input.id, topic = %input.origin.source_topic,
                    partition = input.origin.partition, offset = input.origin.offset,
                    order_id = input.key.unwrap_or_default(), error = %failure.reason(), "dead-lettering event");
                records.push(context.dead_letter(input, &failure, instance.version(), attempts));
                fates.push(Fate::DeadLettered);
            }
        }
    }

    if !records.is_empty() {
        publish_all(producer, &records, PUBLISH_ROUNDS)
            .await
            .map_err(|error| anyhow::anyhow!("cannot publish the outputs of a batch: {error}"))?;
    }
    let fresh: Vec<&str> = inputs
        .iter()
        .zip(&fates)
        .filter(|(_, fate)| !matches!(fate, Fate::Duplicate))
        .map(|(input, _)| input.id.as_str())
        .collect();
    if !fresh.is_empty() {
        store
            .mark_processed(&context.name, fresh)
            .context("cannot write the idempotency store")?;
    }
    for message in batch {
        consumer
            .store_offset_from_message(message)
            .context("cannot store the consumed offset")?;
    }

    let latency = started.elapsed();
    for (input, fate) in inputs.iter().zip(&fates) {
        match fate {
            Fate::Duplicate => kpis.duplicate(),
            Fate::DeadLettered => kpis.dead_lettered(),
            Fate::Published(outputs) => {
                kpis.processed(*outputs, latency);
                tracing::debug!(stage = %context.name, id = %input.id, topic = %input.origin.source_topic,
                    partition = input.origin.partition, offset = input.origin.offset,
                    order_id = input.key.unwrap_or_default(), outputs, "processed");
            }
        }
    }
    Ok(())
}

async fn process_with_retries(
    context: &StageContext,
    instance: &mut StageInstance,
    input: &Input<'_>,
    kpis: &StageKpis,
) -> Result<Vec<OutRecord>, (Failure, u32)> {
    let mut attempt = 1;
    loop {
        match context.process(instance, input, true) {
            Ok(records) => return Ok(records),
            Err(Failure::Retry(message)) if attempt < RETRY_ATTEMPTS => {
                kpis.retried();
                let delay = RETRY_BASE_DELAY * 2u32.pow(attempt - 1);
                tracing::info!(stage = %context.name, id = %input.id, attempt, %message, ?delay, "retrying event");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(failure) => return Err((failure, attempt)),
        }
    }
}

fn decode<'a>(
    context: &StageContext,
    message: &'a BorrowedMessage<'a>,
    input_event_type: &str,
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
        .unwrap_or(input_event_type)
        .to_string();
    Input {
        id,
        event_type,
        key: message.key().and_then(|key| std::str::from_utf8(key).ok()),
        payload: message.payload().unwrap_or_default(),
        headers,
        origin,
    }
}
