//! The consumer side of a stage as the committer and the poll loop use it: the stage's
//! consumer type, the [`InputPositions`] it offers (fakeable, so commits and rewinds are tested
//! without a broker), and the rewind to the committed offsets after dropped work.

use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerGroupMetadata, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::rebalance::RebalanceTracker;

/// The consumer type of every stage.
pub type StageConsumer = StreamConsumer<RebalanceTracker>;

/// How long reading the committed offsets, or seeking to them, may block.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(15);

/// The consumer side of a stage, as the committer uses it.
pub trait InputPositions {
    /// What identifies the group in a transaction.
    type Group;
    /// The group's metadata, for committing offsets in a transaction.
    fn group(&self) -> anyhow::Result<Self::Group>;
    /// Stores offsets to be committed by the consumer (at-least-once).
    fn store(&self, offsets: &TopicPartitionList) -> KafkaResult<()>;
    /// Commits the stored offsets now (at-least-once, when the stage stops).
    fn commit_stored(&self) -> KafkaResult<()>;
    /// The partitions the consumer owns.
    fn assignment(&self) -> KafkaResult<TopicPartitionList>;
    /// The group's committed offsets of `partitions`.
    fn committed(&self, partitions: TopicPartitionList) -> KafkaResult<TopicPartitionList>;
    /// Sends each partition to its offset in `targets`; the result per partition.
    fn seek_to(&self, targets: TopicPartitionList) -> KafkaResult<TopicPartitionList>;
}

impl InputPositions for StageConsumer {
    type Group = ConsumerGroupMetadata;

    fn group(&self) -> anyhow::Result<ConsumerGroupMetadata> {
        self.group_metadata()
            .context("the consumer has no group metadata")
    }

    fn store(&self, offsets: &TopicPartitionList) -> KafkaResult<()> {
        self.store_offsets(offsets)
    }

    fn commit_stored(&self) -> KafkaResult<()> {
        match self.commit_consumer_state(CommitMode::Sync) {
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
            other => other,
        }
    }

    fn assignment(&self) -> KafkaResult<TopicPartitionList> {
        Consumer::assignment(self)
    }

    fn committed(&self, partitions: TopicPartitionList) -> KafkaResult<TopicPartitionList> {
        tokio::task::block_in_place(|| self.committed_offsets(partitions, COMMITTED_TIMEOUT))
    }

    fn seek_to(&self, targets: TopicPartitionList) -> KafkaResult<TopicPartitionList> {
        self.seek_partitions(targets, COMMITTED_TIMEOUT)
    }
}

/// Sends every partition `positions` owns back to its committed offset (the beginning when
/// none was committed), so nothing consumed but not committed is skipped: neither the open
/// work nor a batch that was dropped. Fails, and so rebuilds the stage, when the committed
/// offsets cannot be read or a seek fails.
pub fn rewind<C: InputPositions + ?Sized>(positions: &C, stage: &str) -> anyhow::Result<()> {
    let assignment = positions
        .assignment()
        .context("cannot read the consumer's assignment")?;
    if assignment.count() == 0 {
        return Ok(());
    }
    let committed = positions.committed(assignment).with_context(|| {
        format!("stage {stage} cannot read its committed offsets to resume from them")
    })?;
    let mut targets = TopicPartitionList::new();
    for element in committed.elements() {
        let offset = match element.offset() {
            Offset::Offset(offset) => Offset::Offset(offset),
            _ => Offset::Beginning,
        };
        targets.add_partition_offset(element.topic(), element.partition(), offset)?;
    }
    let sought = positions
        .seek_to(targets)
        .with_context(|| format!("stage {stage} cannot rewind its partitions"))?;
    for element in sought.elements() {
        element.error().with_context(|| {
            format!(
                "stage {stage} cannot rewind {}/{} to its committed offset",
                element.topic(),
                element.partition()
            )
        })?;
    }
    tracing::info!(
        stage,
        partitions = sought.count(),
        "resuming from the committed offsets"
    );
    Ok(())
}

#[cfg(test)]
pub(crate) mod fake {
    //! A consumer without a broker.

    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;

    /// A consumer without a broker: its assignment, committed offsets, and what was stored
    /// and sought.
    #[derive(Default)]
    pub struct FakePositions {
        pub owned: Vec<(String, i32)>,
        pub committed: HashMap<(String, i32), i64>,
        pub stored: Mutex<Vec<(String, i32, i64)>>,
        pub sought: Mutex<Vec<(String, i32, Offset)>>,
        pub seek_fails: bool,
    }

    pub fn list(offsets: &TopicPartitionList) -> Vec<(String, i32, Offset)> {
        let mut out: Vec<_> = offsets
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition(), e.offset()))
            .collect();
        out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        out
    }

    impl InputPositions for FakePositions {
        type Group = ();

        fn group(&self) -> anyhow::Result<()> {
            Ok(())
        }

        fn store(&self, offsets: &TopicPartitionList) -> KafkaResult<()> {
            let mut stored = self.stored.lock().unwrap();
            for (topic, partition, offset) in list(offsets) {
                let Offset::Offset(offset) = offset else {
                    panic!("stored a non-numeric offset")
                };
                stored.push((topic, partition, offset));
            }
            Ok(())
        }

        fn commit_stored(&self) -> KafkaResult<()> {
            Ok(())
        }

        fn assignment(&self) -> KafkaResult<TopicPartitionList> {
            let mut owned = TopicPartitionList::new();
            for (topic, partition) in &self.owned {
                owned.add_partition(topic, *partition);
            }
            Ok(owned)
        }

        fn committed(&self, partitions: TopicPartitionList) -> KafkaResult<TopicPartitionList> {
            let mut committed = TopicPartitionList::new();
            for (topic, partition, _) in list(&partitions) {
                let offset = match self.committed.get(&(topic.clone(), partition)) {
                    Some(offset) => Offset::Offset(*offset),
                    None => Offset::Invalid,
                };
                committed.add_partition_offset(&topic, partition, offset)?;
            }
            Ok(committed)
        }

        fn seek_to(&self, targets: TopicPartitionList) -> KafkaResult<TopicPartitionList> {
            if self.seek_fails {
                return Err(KafkaError::Seek("broker gone".into()));
            }
            self.sought.lock().unwrap().extend(list(&targets));
            Ok(targets)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakePositions;
    use super::*;
    use std::collections::HashMap;

    fn input(partition: i32) -> (String, i32) {
        ("in".to_string(), partition)
    }

    #[test]
    fn a_rewind_goes_back_to_the_committed_offsets_or_the_beginning() {
        let positions = FakePositions {
            owned: vec![input(0), input(1)],
            committed: HashMap::from([(input(0), 3)]),
            ..FakePositions::default()
        };
        rewind(&positions, "s").unwrap();
        assert_eq!(
            *positions.sought.lock().unwrap(),
            [
                ("in".into(), 0, Offset::Offset(3)),
                ("in".into(), 1, Offset::Beginning)
            ]
        );
    }

    #[test]
    fn a_rewind_that_cannot_seek_fails_the_stage() {
        let positions = FakePositions {
            owned: vec![input(0)],
            seek_fails: true,
            ..FakePositions::default()
        };
        let error = rewind(&positions, "s").unwrap_err();
        assert!(format!("{error:#}").contains("cannot rewind"), "{error:#}");
        // Owning nothing, there is nothing to rewind.
        rewind(&FakePositions::default(), "s").unwrap();
    }
}
