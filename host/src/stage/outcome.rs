//! What handling a batch of inputs produced: the records to publish, what became of each
//! input, and where the consumer must go back to. The stage task makes it; the committer
//! takes it into the open work; the poll loop moves the consumer.

use std::sync::Arc;

use super::retry::TopicPartition;
use crate::kafka::OutRecord;
use crate::observe::trace::EventSpan;

/// What happened to one input, counted once its work is committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    /// A repeat of an event the stage handled before: dropped.
    Duplicate,
    /// A replayed dead letter meant for another stage.
    NotOurs,
    /// A writer upstream handled it in process for this (fused) stage.
    HandledUpstream,
    /// The plugin of this version made this many outputs.
    Published(usize, Arc<str>),
    /// Dead-lettered while this plugin version was live, for a failure of this kind
    /// ([`super::processor::Failure::kind`]).
    DeadLettered(Arc<str>, &'static str),
}

/// Where the consumer must go for a partition, after a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Move {
    /// Pause the partition and send it back to `offset` (the event to retry, or the next one
    /// after a slow event), until the stage's retry book resumes it.
    Park(TopicPartition, i64),
    /// Send the partition back to `offset`: a later event overtook the parked one.
    Seek(TopicPartition, i64),
}

/// An input the batch is done with: the next offset of its partition to commit, and its fate
/// (`None`: parked at this offset, read again by whoever owns the partition next).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Done {
    /// The input's partition.
    pub partition: TopicPartition,
    /// The offset to commit for it.
    pub next: i64,
    /// What became of the input.
    pub fate: Option<Fate>,
}

/// What handling one batch produced.
#[derive(Default, Debug)]
pub struct Handled {
    /// Records to publish, in order (outputs and dead letters; the state changelog and the
    /// processed ids are written once per key with the commit: see
    /// [`super::participant::Participant::closing_records`]).
    pub records: Vec<OutRecord>,
    /// Dead letters among `records`: their position there, and the input they stand for.
    pub dead_letters: Vec<(usize, TopicPartition, i64)>,
    /// The inputs done with, in order.
    pub done: Vec<Done>,
    /// Where the consumer must go, in order.
    pub moves: Vec<Move>,
    /// The spans of the inputs handled (tracing on), ended when the work commits.
    pub spans: Vec<EventSpan>,
}
