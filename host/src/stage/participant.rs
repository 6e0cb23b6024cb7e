//! What must follow the end of a stage's open work: each part of a stage that keeps something
//! for the open work (processed ids, keyed state, fused stages, retries, KPIs) is a
//! [`Participant`], and the committer tells every participant the work's end in one order.

use std::time::Duration;

use super::outcome::Fate;
use super::retry::{RetryBook, TopicPartition};
use crate::kafka::OutRecord;

/// The open work as its participants see it once it is committed.
pub struct Committed {
    /// What became of its inputs, in order.
    pub fates: Vec<Fate>,
    /// How long the work was open.
    pub latency: Duration,
}

/// A part of a stage that follows the ends of its open work.
pub trait Participant: Send {
    /// The records that make what this participant kept for the open work durable with it,
    /// asked for once, right before the commit: one per key and partition for what the work
    /// wrote several times (state changelog, processed ids), so each record the work writes
    /// is written once.
    fn closing_records(&mut self) -> Vec<OutRecord> {
        Vec::new()
    }

    /// The work's outputs are safe and its inputs do not yet count as consumed elsewhere: keep
    /// what the work made durable. An error fails the commit (the work is handled again).
    fn on_safe(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    /// The work is committed.
    fn on_committed(&mut self, _work: &Committed) {}

    /// The work was dropped (its inputs are handled again); the partitions in `revoked` are no
    /// longer this instance's.
    fn on_dropped(&mut self, _revoked: &[TopicPartition]) {}
}

/// The participants of a stage, in the order they are told, and the retry book whose attempt
/// counts go with the committed offsets.
pub trait Participants: Send {
    /// Attempt counts of parked events, committed as offset metadata.
    fn retries(&self) -> &RetryBook;
    /// Every participant, in order.
    fn participants(&mut self) -> Vec<&mut dyn Participant>;
}
