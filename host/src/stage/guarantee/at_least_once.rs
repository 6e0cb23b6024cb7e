//! At-least-once: outputs are queued on the shared idempotent producer as they are made, and
//! the stage goes on with the next batch. Once per `commit_interval` the stage waits for every
//! acknowledgement of the open work (publishing again what failed), then publishes the work's
//! state changelog records (never ahead of the outputs they go with), records the inputs' ids
//! as processed in the local store (one durable write) and stores their offsets. After a crash
//! an input may be processed again; its outputs carry the same ids and the next stage drops
//! them.

use std::borrow::Cow;
use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::FutureExt;
use futures::future::BoxFuture;

use super::contract::{Guarantee, ProcessedIds, Settle};
use crate::kafka::{Ack, OutRecord, RecordQueue, failed_acks, publish_all};
use crate::stage::positions::InputPositions;
use crate::store::LocalStore;

/// Rounds of queueing again before at-least-once outputs are given up.
const PUBLISH_ROUNDS: u32 = 8;

/// The at-least-once way of a stage: the shared producer, acknowledged before committing.
pub struct AtLeastOnce<P> {
    producer: P,
    stage: String,
    /// Acknowledgements of the queued records, in the order of `records`.
    acks: Vec<Ack>,
    /// The queued records, to queue again those that fail.
    records: Vec<OutRecord>,
    /// State changelog records of the open work, held back until its outputs are
    /// acknowledged: a changelog that got ahead of the outputs would, after a crash, restore
    /// state saying an input was handled whose outputs never arrived.
    state: Vec<OutRecord>,
}

impl<P> AtLeastOnce<P> {
    /// Records of `stage` go out on `producer` at once.
    pub fn new(producer: P, stage: &str) -> Self {
        Self {
            producer,
            stage: stage.to_string(),
            acks: Vec::new(),
            records: Vec::new(),
            state: Vec::new(),
        }
    }
}

impl<P, G> Guarantee<G> for AtLeastOnce<P>
where
    P: RecordQueue + Send + Sync,
{
    fn name(&self) -> &'static str {
        "at_least_once"
    }

    fn begin(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    fn send(&mut self, record: OutRecord) -> BoxFuture<'_, anyhow::Result<usize>> {
        async move {
            let ack = self
                .producer
                .queue(&record)
                .await
                .with_context(|| format!("cannot send {} to {}", record.id, record.topic))?;
            self.acks.push(ack);
            self.records.push(record);
            Ok(self.acks.len() - 1)
        }
        .boxed()
    }

    fn send_state(&mut self, record: OutRecord) -> BoxFuture<'_, anyhow::Result<()>> {
        self.state.push(record);
        futures::future::ready(Ok(())).boxed()
    }

    fn in_transaction(&self) -> bool {
        false
    }

    fn deadline(&self, opened: Instant, interval: Duration) -> Option<Instant> {
        Some(opened + interval)
    }

    fn commits_when_drained(&self) -> bool {
        false
    }

    fn commit<'a>(&'a mut self, settle: Settle<'a, G>) -> BoxFuture<'a, anyhow::Result<()>> {
        async move {
            let records = std::mem::take(&mut self.records);
            let state = std::mem::take(&mut self.state);
            let failed = failed_acks(std::mem::take(&mut self.acks)).await;
            if (settle.hold_refused)(&failed) {
                anyhow::bail!(
                    "stage {}: the dead-letter topic refuses a dead letter for good; its partition is held and the stage rebuilt",
                    self.stage
                );
            }
            if let Some((_, _, error)) = failed.last() {
                tracing::warn!(stage = %self.stage, failed = failed.len(), %error,
                    "outputs were not acknowledged; publishing them again");
                let again: Vec<OutRecord> = failed
                    .iter()
                    .map(|(position, _, _)| records[*position].clone())
                    .collect();
                publish_all(&self.producer, &again, PUBLISH_ROUNDS)
                    .await
                    .map_err(|error| {
                        anyhow::anyhow!("cannot publish the outputs of a batch: {error}")
                    })?;
            }
            // Only now may the state say the inputs were handled.
            if !state.is_empty() {
                publish_all(&self.producer, &state, PUBLISH_ROUNDS)
                    .await
                    .map_err(|error| {
                        anyhow::anyhow!(
                            "cannot publish the state changelog of a batch: {error}; its inputs are handled again"
                        )
                    })?;
            }
            (settle.on_safe)()?;
            if settle.offsets.count() > 0
                && let Err(error) = settle.positions.store(&settle.offsets)
            {
                // A partition revoked meanwhile: its new owner reads these inputs again.
                tracing::warn!(stage = %self.stage, %error, "cannot store the consumed offsets");
            }
            Ok(())
        }
        .boxed()
    }

    /// Outputs already queued are repeats that the next stage drops.
    fn abandon(&mut self) -> anyhow::Result<()> {
        self.acks.clear();
        self.records.clear();
        self.state.clear();
        Ok(())
    }

    /// Offsets stored since the last automatic commit are committed now.
    fn finish(&self, positions: &(dyn InputPositions<Group = G> + Sync)) {
        if let Err(error) = positions.commit_stored() {
            tracing::warn!(stage = %self.stage, %error, "final commit failed");
        }
    }
}

/// Processed ids in the local store: an input's id is recorded there once its outputs are
/// acknowledged.
pub struct LocalIds {
    store: LocalStore,
    stage: String,
    /// Ids handled for the first time by the open work, recorded when it is safe (and
    /// checked before then, so a repeat within the work is dropped).
    fresh: HashSet<String>,
}

impl LocalIds {
    /// The ids of `stage` in `store`.
    pub fn new(store: LocalStore, stage: &str) -> Self {
        Self {
            store,
            stage: stage.to_string(),
            fresh: HashSet::new(),
        }
    }
}

impl ProcessedIds for LocalIds {
    fn seen(&mut self, inputs: &[(i32, Cow<'_, str>)]) -> anyhow::Result<Vec<bool>> {
        let ids: Vec<&str> = inputs.iter().map(|(_, id)| id.as_ref()).collect();
        let mut seen = self
            .store
            .processed_among(&self.stage, &ids)
            .context("cannot read the idempotency store")?;
        for (seen, id) in seen.iter_mut().zip(&ids) {
            *seen = *seen || self.fresh.contains(*id);
        }
        Ok(seen)
    }

    fn record(&mut self, _partition: i32, id: &str) {
        self.fresh.insert(id.to_string());
    }

    /// Fails when the store cannot take the ids (the offsets are then not stored, so the work
    /// is handled again).
    fn commit(&mut self) -> anyhow::Result<()> {
        if self.fresh.is_empty() {
            return Ok(());
        }
        let fresh = std::mem::take(&mut self.fresh);
        tokio::task::block_in_place(|| {
            self.store
                .mark_processed(&self.stage, fresh.iter().map(String::as_str))
        })
        .context("cannot write the idempotency store")
    }

    fn rollback(&mut self) {
        self.fresh.clear();
    }

    fn forget(&mut self, _partition: i32) {}

    fn knows_every_partition(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys<'a>(ids: &[&'a str]) -> Vec<(i32, Cow<'a, str>)> {
        ids.iter().map(|id| (0, Cow::Borrowed(*id))).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn ids_are_seen_in_the_open_work_and_in_the_store_once_it_is_safe() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let mut ids = LocalIds::new(store.clone(), "s");
        ids.record(0, "a");
        assert!(ids.closing_records().is_empty(), "nothing to publish");
        assert_eq!(ids.seen(&keys(&["a", "b"])).unwrap(), [true, false]);
        ids.rollback();
        assert_eq!(ids.seen(&keys(&["a"])).unwrap(), [false], "dropped work");
        ids.record(3, "a");
        ids.commit().unwrap();
        // Another deduplicator of the stage (a fused call in a writer's worker) sees it.
        let mut other = LocalIds::new(store, "s");
        assert_eq!(other.seen(&keys(&["a", "b"])).unwrap(), [true, false]);
        assert!(other.knows_every_partition());
    }
}
