//! Ending the open work of a stage: committing its transaction (exactly-once), or waiting for
//! its outputs' acknowledgements and then recording its inputs as processed and storing their
//! offsets (at-least-once); and aborting and rewinding when a transaction fails or partitions
//! are revoked.

use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};

use super::retry::TopicPartition;
use super::runner::{Fate, PUBLISH_ROUNDS, Pending, StageConsumer, Worker, lock};
use crate::config::ProcessingMode;
use crate::kafka::{OutRecord, acknowledged, enqueue, publish_all, unacknowledged};

/// How long a transactional call may block.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

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
                if let Err(error) = acknowledged(std::mem::take(&mut pending.deliveries)).await {
                    *in_transaction = false;
                    tracing::warn!(stage = %self.context.name, %error, "a record of the transaction failed; aborting it");
                    self.abort_and_rewind(consumer, pending, &[], &KafkaError::Canceled)?;
                    return Ok(());
                }
                let mut offsets = TopicPartitionList::new();
                for ((topic, partition), next) in &pending.next {
                    offsets.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
                }
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
                    tracing::warn!(stage = %self.context.name, %error, "transaction failed; aborting it");
                    self.abort_and_rewind(consumer, pending, &[], &error)?;
                    return Ok(());
                }
                if let Some(parts) = &self.state {
                    lock(&parts.keyed).commit();
                }
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

    /// Partitions were revoked: the open transaction may hold their inputs, so abort it,
    /// forget their state and rewind the partitions still owned.
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
        if *in_transaction {
            *in_transaction = false;
            tracing::info!(stage = %self.context.name, revoked = revoked.len(), "partitions revoked mid-transaction; aborting it");
            let error = KafkaError::Canceled;
            self.abort_and_rewind(consumer, pending, revoked, &error)?;
        } else {
            // At-least-once: the rewound inputs are handled again, so the state writes they
            // staged go too (their outputs, already queued, are repeats the next stage drops).
            if let Some(parts) = &self.state {
                lock(&parts.keyed).rollback();
            }
            self.rewind(consumer, pending, revoked);
        }
        Ok(())
    }

    /// At-least-once: waits until every output of the open work is acknowledged (publishing
    /// again what failed), then commits its state writes, records its inputs as processed and
    /// stores their offsets, in that order, so an input counts as done only after its outputs
    /// are safe.
    async fn settle_published(
        &mut self,
        consumer: &StageConsumer,
        pending: &mut Pending,
    ) -> anyhow::Result<()> {
        let records = std::mem::take(&mut pending.records);
        let (failed, error) = unacknowledged(std::mem::take(&mut pending.deliveries)).await;
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
        if let Some(parts) = &self.state {
            lock(&parts.keyed).commit();
        }
        if !pending.fresh_ids.is_empty() {
            let store = &self.store;
            let stage = &self.context.name;
            let ids = &pending.fresh_ids;
            tokio::task::block_in_place(|| {
                store.mark_processed(stage, ids.iter().map(String::as_str))
            })
            .context("cannot write the idempotency store")?;
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), next) in &pending.next {
            offsets.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
        }
        if offsets.count() > 0
            && let Err(error) = consumer.store_offsets(&offsets)
        {
            // A partition revoked meanwhile: its new owner reads these inputs again.
            tracing::warn!(stage = %self.context.name, %error, "cannot store the consumed offsets");
        }
        Ok(())
    }

    /// Seeks every partition the pending work consumed (and that is still owned) back to the
    /// first offset it consumed, and forgets the pending work.
    pub(super) fn rewind(
        &mut self,
        consumer: &StageConsumer,
        pending: &mut Pending,
        revoked: &[TopicPartition],
    ) {
        for ((topic, partition), offset) in &pending.start {
            if revoked.iter().any(|(t, p)| t == topic && p == partition) {
                continue;
            }
            if let Err(error) = consumer.seek(
                topic,
                *partition,
                Offset::Offset(*offset),
                Duration::from_secs(10),
            ) {
                tracing::warn!(stage = %self.context.name, topic, partition, %error, "cannot rewind");
            }
        }
        *pending = Pending::default();
    }

    pub(super) fn abort_and_rewind(
        &mut self,
        consumer: &StageConsumer,
        pending: &mut Pending,
        revoked: &[TopicPartition],
        cause: &KafkaError,
    ) -> anyhow::Result<()> {
        let fatal = matches!(cause, KafkaError::Transaction(e) if e.is_fatal());
        if fatal {
            anyhow::bail!(
                "stage {} was fenced or hit a fatal transaction error ({cause}); another instance may be using the same instance id",
                self.context.name
            );
        }
        let producer = &self.producer;
        tokio::task::block_in_place(|| producer.abort_transaction(TXN_TIMEOUT))
            .context("cannot abort the transaction")?;
        if let Some(parts) = &self.state {
            lock(&parts.keyed).rollback();
        }
        self.rewind(consumer, pending, revoked);
        Ok(())
    }
}
