//! Ending the open work of a stage: committing its transaction (exactly-once), or waiting for
//! its outputs' acknowledgements and then recording its inputs as processed and storing their
//! offsets (at-least-once); and aborting and rewinding when a transaction fails or partitions
//! are revoked.

use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::Consumer;
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};

use super::dedup::Deduplicator;
use super::retry::TopicPartition;
use super::runner::{Fate, PUBLISH_ROUNDS, Pending, StageConsumer, Worker, lock};
use crate::config::ProcessingMode;
use crate::kafka::{
    FailedDelivery, OutRecord, enqueue, failed_deliveries, publish_all, refused_for_good,
};

/// How long a transactional call may block.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long reading the committed offsets, or seeking to them, may block.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(15);

impl Worker {
    /// Commits the open work: the transaction (exactly-once), or the acknowledgements, processed
    /// ids and offsets (at-least-once); then counts it.
    pub(super) async fn commit(
        &mut self,
        consumer: &StageConsumer,
        pending: &mut Pending,
        in_transaction: &mut bool,
        kpis: Vec<OutRecord>,
    ) -> anyhow::Result<()> {
        let latency = pending.opened.map(|o| o.elapsed()).unwrap_or_default();
        match self.mode {
            ProcessingMode::AtLeastOnce => {
                self.settle_published(consumer, pending).await?;
                if !kpis.is_empty()
                    && let Err(error) = publish_all(&self.producer, &kpis, 3).await
                {
                    tracing::warn!(%error, "could not publish KPIs; this window is lost");
                }
            }
            ProcessingMode::ExactlyOnce => {
                if !*in_transaction {
                    return Ok(());
                }
                for record in &kpis {
                    let delivery = enqueue(&self.producer, record).await.with_context(|| {
                        format!("cannot send {} to {}", record.id, record.topic)
                    })?;
                    pending.deliveries.push(delivery);
                }
                let failed = failed_deliveries(std::mem::take(&mut pending.deliveries)).await;
                if let Some((_, _, error)) = failed.first() {
                    *in_transaction = false;
                    self.hold_refused_dead_letters(pending, &failed);
                    return Err(self
                        .transaction_failed("a record of the transaction was not written", error));
                }
                let offsets = self.offsets_to_commit(pending)?;
                let metadata = consumer
                    .group_metadata()
                    .context("the consumer has no group metadata")?;
                let producer = &self.producer;
                let committing = Instant::now();
                let result = tokio::task::block_in_place(|| {
                    if offsets.count() > 0 {
                        producer.send_offsets_to_transaction(&offsets, &metadata, TXN_TIMEOUT)?;
                    }
                    producer.commit_transaction(TXN_TIMEOUT)
                });
                *in_transaction = false;
                tracing::debug!(stage = %self.context.name, inputs = pending.fates.len(),
                    commit_ms = committing.elapsed().as_secs_f64() * 1000.0, "transaction committed");
                if let Err(error) = result {
                    // Whether it committed is not known (a commit that timed out may still
                    // complete): only a rebuilt stage, reading its committed offsets and state
                    // back from Kafka, is sure to resume from the truth.
                    return Err(self.transaction_failed("the transaction did not commit", &error));
                }
                self.commit_state();
                self.dedup.commit();
            }
        }
        for fate in pending.fates.drain(..) {
            match fate {
                Fate::Duplicate => self.kpis.duplicate(),
                Fate::NotOurs => {}
                Fate::DeadLettered(plugin) => self.kpis.dead_lettered(&plugin.version),
                Fate::Published(outputs, plugin) => {
                    self.kpis.processed(&plugin.version, outputs, latency)
                }
            }
        }
        *pending = Pending::default();
        Ok(())
    }

    /// The open work committed: its state writes go into the local copy of the changelog. A
    /// copy that cannot take them is caught up from the changelog before it is read again.
    fn commit_state(&self) {
        if let Some(parts) = &self.state
            && let Err(error) = lock(&parts.keyed).commit()
        {
            tracing::warn!(stage = %self.context.name, %error,
                "cannot write committed state into the local store; it is read back from the changelog");
        }
    }

    /// Partitions were revoked: the open work may hold their inputs, so abort it (a
    /// transaction) or drop it (at-least-once), forget the revoked partitions' state and send
    /// every partition still owned back to its committed offset.
    pub(super) fn abandon(
        &mut self,
        consumer: &StageConsumer,
        pending: &mut Pending,
        in_transaction: &mut bool,
        revoked: &[TopicPartition],
    ) -> anyhow::Result<()> {
        self.retries.forget(revoked);
        if let Some(parts) = &self.state {
            let mut keyed = lock(&parts.keyed);
            for (_, partition) in revoked {
                keyed.forget(*partition);
            }
        }
        self.dedup.rollback();
        for (_, partition) in revoked {
            self.dedup.forget(*partition);
        }
        if *in_transaction {
            *in_transaction = false;
            tracing::info!(stage = %self.context.name, revoked = revoked.len(), "partitions revoked mid-transaction; aborting it");
            let producer = &self.producer;
            tokio::task::block_in_place(|| producer.abort_transaction(TXN_TIMEOUT))
                .map_err(|error| self.transaction_failed("cannot abort the transaction", &error))?;
        }
        // The aborted (or, at-least-once, dropped) inputs are handled again, so the state
        // writes they staged go too (at-least-once outputs already queued are repeats that the
        // next stage drops).
        if let Some(parts) = &self.state {
            lock(&parts.keyed).rollback();
        }
        *pending = Pending::default();
        self.reset_to_committed(consumer)
    }

    /// Holds the partitions of the inputs whose dead letter the broker refused for good (see
    /// [`super::stuck`]); whether there was one.
    fn hold_refused_dead_letters(&self, pending: &Pending, failed: &[FailedDelivery]) -> bool {
        let mut held = false;
        for (position, code, error) in failed {
            if !refused_for_good(*code) {
                continue;
            }
            if let Some((_, (topic, partition), offset)) = pending
                .dead_letters
                .iter()
                .find(|(at, _, _)| at == position)
            {
                let reason = format!(
                    "the dead-letter topic {} refuses its dead letter: {error}",
                    self.context.dead_letter.topic
                );
                self.stuck
                    .hold(&self.context.name, topic, *partition, *offset, &reason);
                held = true;
            }
        }
        held
    }

    /// The offsets the open work commits (or stores): the next input of each partition, with
    /// the attempt count of the event parked there, if any.
    fn offsets_to_commit(&self, pending: &Pending) -> anyhow::Result<TopicPartitionList> {
        let mut offsets = TopicPartitionList::new();
        for (partition, next) in &pending.next {
            let mut element = offsets.add_partition(&partition.0, partition.1);
            element.set_offset(Offset::Offset(*next))?;
            if let Some(metadata) = self.retries.metadata(partition, *next) {
                element.set_metadata(metadata);
            }
        }
        Ok(offsets)
    }

    /// The error that ends this incarnation of the stage after a failed transaction, so the
    /// supervisor rebuilds it: a new producer (`init_transactions` fences and aborts what is
    /// left open), a new consumer at the committed offsets, state restored from the changelog.
    pub(super) fn transaction_failed(
        &self,
        what: &str,
        error: &dyn std::fmt::Display,
    ) -> anyhow::Error {
        anyhow::anyhow!(
            "stage {}: {what} ({error}); rebuilding the stage to resume from its last committed offsets and state",
            self.context.name
        )
    }

    /// Sends every partition the consumer owns back to its committed offset (the beginning
    /// when none was committed), so nothing consumed but not committed is skipped: neither the
    /// open work nor a batch that was dropped. Fails, and so rebuilds the stage, when the
    /// committed offsets cannot be read or a seek fails.
    pub(super) fn reset_to_committed(&mut self, consumer: &StageConsumer) -> anyhow::Result<()> {
        let assignment = consumer
            .assignment()
            .context("cannot read the consumer's assignment")?;
        if assignment.count() == 0 {
            return Ok(());
        }
        let committed = tokio::task::block_in_place(|| {
            consumer.committed_offsets(assignment, COMMITTED_TIMEOUT)
        })
        .with_context(|| {
            format!(
                "stage {} cannot read its committed offsets to resume from them",
                self.context.name
            )
        })?;
        let mut targets = TopicPartitionList::new();
        for element in committed.elements() {
            let offset = match element.offset() {
                Offset::Offset(offset) => Offset::Offset(offset),
                _ => Offset::Beginning,
            };
            targets.add_partition_offset(element.topic(), element.partition(), offset)?;
        }
        let sought = consumer
            .seek_partitions(targets, COMMITTED_TIMEOUT)
            .with_context(|| format!("stage {} cannot rewind its partitions", self.context.name))?;
        for element in sought.elements() {
            element.error().with_context(|| {
                format!(
                    "stage {} cannot rewind {}/{} to its committed offset",
                    self.context.name,
                    element.topic(),
                    element.partition()
                )
            })?;
        }
        tracing::info!(stage = %self.context.name, partitions = sought.count(), "resuming from the committed offsets");
        Ok(())
    }

    /// At-least-once: waits until every output of the open work is acknowledged (publishing
    /// again what failed), then commits its state writes, records its inputs as processed and
    /// stores their offsets, in that order, so an input counts as done only after its outputs
    /// are safe. When the store fails, recording waits for it to be reopened (the stage's
    /// store handle is patient) and keeps the open work: failing here would rebuild the stage,
    /// which reads and publishes that work again.
    async fn settle_published(
        &mut self,
        consumer: &StageConsumer,
        pending: &mut Pending,
    ) -> anyhow::Result<()> {
        let records = std::mem::take(&mut pending.records);
        let failed = failed_deliveries(std::mem::take(&mut pending.deliveries)).await;
        if self.hold_refused_dead_letters(pending, &failed) {
            anyhow::bail!(
                "stage {}: the dead-letter topic refuses a dead letter for good; its partition is held and the stage rebuilt",
                self.context.name
            );
        }
        let error = failed
            .last()
            .map(|(_, _, error)| error.clone())
            .unwrap_or_default();
        let failed: Vec<usize> = failed
            .into_iter()
            .map(|(position, _, _)| position)
            .collect();
        if !failed.is_empty() {
            tracing::warn!(stage = %self.context.name, failed = failed.len(), %error,
                "outputs were not acknowledged; publishing them again");
            let again: Vec<OutRecord> = failed.into_iter().map(|i| records[i].clone()).collect();
            publish_all(&self.producer, &again, PUBLISH_ROUNDS)
                .await
                .map_err(|error| {
                    anyhow::anyhow!("cannot publish the outputs of a batch: {error}")
                })?;
        }
        self.commit_state();
        if !pending.fresh_ids.is_empty()
            && let Deduplicator::Local { store, stage } = &self.dedup
        {
            let ids = &pending.fresh_ids;
            tokio::task::block_in_place(|| {
                store.mark_processed(stage, ids.iter().map(String::as_str))
            })
            .context("cannot write the idempotency store")?;
        }
        let offsets = self.offsets_to_commit(pending)?;
        if offsets.count() > 0
            && let Err(error) = consumer.store_offsets(&offsets)
        {
            // A partition revoked meanwhile: its new owner reads these inputs again.
            tracing::warn!(stage = %self.context.name, %error, "cannot store the consumed offsets");
        }
        Ok(())
    }
}
