//! What a processing guarantee must do for a stage: the two traits its implementations
//! ([`super::ExactlyOnce`], [`super::AtLeastOnce`]) fulfil.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use rdkafka::TopicPartitionList;

use crate::kafka::{FailedDelivery, OutRecord};
use crate::stage::positions::InputPositions;

/// How a stage's open work reaches Kafka and becomes safe: records queued as they are made,
/// then, at the commit, outputs, state changelog and consumed offsets made durable in the
/// guarantee's order. `G` is what identifies the consumer group in a transaction.
pub trait Guarantee<G>: Send {
    /// `exactly_once` or `at_least_once`, for logs.
    fn name(&self) -> &'static str;

    /// Opens work for a batch (exactly-once: a transaction).
    fn begin(&mut self) -> anyhow::Result<()>;

    /// Queues an output or a dead letter of the open work; its position among the work's
    /// records, by which a refused dead letter is found again.
    fn send(&mut self, record: OutRecord) -> BoxFuture<'_, anyhow::Result<usize>>;

    /// Queues a state changelog record of the open work (at-least-once holds it back until
    /// every output of the work is acknowledged).
    fn send_state(&mut self, record: OutRecord) -> BoxFuture<'_, anyhow::Result<()>>;

    /// Whether a transaction is open: the loop then takes only what is already fetched, to
    /// commit without waiting for more input.
    fn in_transaction(&self) -> bool;

    /// When work opened at `opened` must be committed even if no input comes; `None` when
    /// only input or a drained batch commits it.
    fn deadline(&self, opened: Instant, interval: Duration) -> Option<Instant>;

    /// Whether the work is committed as soon as the input is drained (exactly-once: outputs
    /// are invisible downstream until then; acknowledged ones are already on their way).
    fn commits_when_drained(&self) -> bool;

    /// Whether work that queued nothing, its inputs all skipped (handled upstream) or dropped
    /// as repeats, may stay open for [`crate::stage::SKIPPED_WORK_INTERVAL`] before it is
    /// committed: exactly-once, where each commit is a transaction the broker pays for (a
    /// fused stage's own worker would otherwise commit one per batch of skips). Such inputs
    /// are skipped again if the work is lost.
    fn defers_skipped_work(&self) -> bool {
        false
    }

    /// Makes the open work durable: see [`Settle`] for what it is given.
    fn commit<'a>(&'a mut self, settle: Settle<'a, G>) -> BoxFuture<'a, anyhow::Result<()>>;

    /// Drops the open work (aborting its transaction): its inputs are handled again.
    fn abandon(&mut self) -> anyhow::Result<()>;

    /// The stage stops: whatever the consumer still holds for the group is committed.
    fn finish(&self, positions: &(dyn InputPositions<Group = G> + Sync));
}

/// What a commit is given.
pub struct Settle<'a, G> {
    /// The consumed offsets the work commits (with retry metadata).
    pub offsets: TopicPartitionList,
    /// The consumer.
    pub positions: &'a (dyn InputPositions<Group = G> + Sync),
    /// Holds the partitions of dead letters refused for good among `failed`; whether there was
    /// one (the commit then fails and the stage is rebuilt).
    pub hold_refused: &'a (dyn Fn(&[FailedDelivery]) -> bool + Sync),
    /// Runs once the work's outputs are safe and before its inputs count as consumed
    /// elsewhere: exactly-once after the commit (which took the offsets with it),
    /// at-least-once after every acknowledgement and before the offsets are stored. Its error
    /// fails the commit.
    pub on_safe: &'a mut (dyn FnMut() -> anyhow::Result<()> + Send),
}

/// Where a stage finds out that it processed an event id before, so a repeat is dropped.
pub trait ProcessedIds: Send {
    /// For each `(partition, id)` of a batch, whether the stage processed that id before (in
    /// committed work, or earlier in the open work). Restores partitions seen for the first
    /// time.
    fn seen(&mut self, inputs: &[(i32, Cow<'_, str>)]) -> anyhow::Result<Vec<bool>>;

    /// Records that the open work processed `id` (read from input partition `partition`).
    fn record(&mut self, partition: i32, id: &str);

    /// The records that make the open work's ids durable with it, if the guarantee writes
    /// any: asked for once, right before the commit.
    fn closing_records(&mut self) -> Vec<OutRecord> {
        Vec::new()
    }

    /// The open work is safe: its ids are processed. Fails when they cannot be kept (the work
    /// is then handled again).
    fn commit(&mut self) -> anyhow::Result<()>;

    /// The open work was dropped: its ids were not processed.
    fn rollback(&mut self);

    /// Forgets a partition this instance no longer owns.
    fn forget(&mut self, partition: i32);

    /// Whether an id of any partition can be looked up, including partitions this instance
    /// does not own (a fused stage's input, looked up in a writer's worker).
    fn knows_every_partition(&self) -> bool;
}
