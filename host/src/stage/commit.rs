//! The open work of a stage and how it ends: the committer.
//!
//! The poll loop hands the committer what each batch produced ([`Handled`]) and asks it one
//! question: is the work due. The committer owns the open work outright and ends it through
//! the stage's [`Guarantee`] (a transaction, or outputs awaiting acknowledgement), then tells
//! every [`Participant`] of the stage, in one order, that the work is safe, committed or
//! dropped. It never looks at the processing mode.
//!
//! A failed commit is never patched up: the stage is rebuilt (a new producer settles what is
//! open, a new consumer resumes from the committed offsets). A dead letter the broker refuses
//! for good holds its input's partition (see [`super::stuck`]).

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use rdkafka::{Offset, TopicPartitionList};

use super::guarantee::{Guarantee, Settle};
use super::outcome::{Fate, Handled};
use super::participant::{Committed, Participants};
use super::positions::InputPositions;
use super::retry::{RetryBook, TopicPartition};
use super::stuck::StuckBook;
use crate::kafka::{FailedDelivery, OutRecord, refused_for_good};
use crate::observe::trace::EventSpan;
use crate::observe::{HostEvent, OpenWorkDropped, WorkCommitted};

/// The open work: what was handled since the last commit.
#[derive(Default)]
struct OpenWork {
    /// Next offset to consume per partition: what to commit.
    next: HashMap<TopicPartition, i64>,
    /// Fates of the inputs, counted once the work is committed.
    fates: Vec<Fate>,
    /// When the work was opened.
    opened: Option<Instant>,
    /// Dead letters of the work: their position among the queued records, and the input they
    /// stand for.
    dead_letters: Vec<(usize, TopicPartition, i64)>,
    /// The spans of its inputs (tracing on), ended with it.
    spans: Vec<EventSpan>,
    /// Whether it holds more than skips: a queued record, or an input that was neither skipped
    /// as handled upstream nor dropped as a repeat.
    holds_more_than_skips: bool,
}

/// Longest work that queued nothing (its inputs all skipped as handled upstream, or repeats)
/// stays open when the guarantee defers it ([`super::guarantee::Guarantee::defers_skipped_work`]):
/// a fused stage's own worker then commits its skips about once a second instead of once per
/// batch. Its consumer group's committed offsets (and so its lag) trail by up to this much.
pub const SKIPPED_WORK_INTERVAL: Duration = Duration::from_secs(1);

/// Owns a stage's open work and ends it: commits, or drops it.
pub struct Committer<G> {
    way: Box<dyn Guarantee<G>>,
    work: OpenWork,
    /// Longest the work stays open while input keeps arriving.
    interval: Duration,
    stage: String,
    dead_letter_topic: String,
    stuck: StuckBook,
}

impl<G: Sync> Committer<G> {
    /// Commits `stage`'s work through `way` at least every `interval`; dead letters go to
    /// `dead_letter_topic`, and one it refuses for good holds its input in `stuck`.
    pub fn new(
        way: Box<dyn Guarantee<G>>,
        interval: Duration,
        stage: &str,
        dead_letter_topic: &str,
        stuck: StuckBook,
    ) -> Self {
        Committer {
            way,
            work: OpenWork::default(),
            interval,
            stage: stage.to_string(),
            dead_letter_topic: dead_letter_topic.to_string(),
            stuck,
        }
    }

    /// `exactly_once` or `at_least_once`, for logs.
    pub fn mode_name(&self) -> &'static str {
        self.way.name()
    }

    /// Whether there is open work to commit.
    pub fn is_open(&self) -> bool {
        self.work.opened.is_some() || self.way.in_transaction()
    }

    /// Whether the loop should take only what is already fetched (a transaction is open), to
    /// commit without waiting for more input; not while skipped work is deferred.
    pub fn takes_only_fetched(&self) -> bool {
        self.way.in_transaction() && !self.defers()
    }

    /// When the open work is due even if no input comes; `None` when only input or a drained
    /// batch makes it due.
    pub fn due_at(&self) -> Option<Instant> {
        let opened = self.work.opened?;
        if self.defers() {
            return Some(opened + SKIPPED_WORK_INTERVAL);
        }
        self.way.deadline(opened, self.interval)
    }

    /// Whether the open work is due after a batch: its interval is over, or the input is
    /// `drained` and the guarantee commits drained work at once (skipped work it defers waits
    /// for [`SKIPPED_WORK_INTERVAL`]).
    pub fn is_due(&self, drained: bool) -> bool {
        let open_for = |interval: Duration| {
            self.work
                .opened
                .is_some_and(|opened| opened.elapsed() >= interval)
        };
        if self.defers() {
            return open_for(SKIPPED_WORK_INTERVAL);
        }
        (drained && self.way.commits_when_drained()) || open_for(self.interval)
    }

    /// Whether the open work queued nothing, its inputs were all skipped or repeats, and the
    /// guarantee lets such work wait.
    fn defers(&self) -> bool {
        self.way.defers_skipped_work() && !self.work.holds_more_than_skips
    }

    /// Opens work for a batch (and, exactly-once, a transaction).
    pub fn open(&mut self) -> anyhow::Result<()> {
        self.way.begin()?;
        self.work.opened.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Takes what a batch produced into the open work: queues its records and state records,
    /// and records its inputs' fates and next offsets.
    pub async fn take(&mut self, handled: Handled) -> anyhow::Result<()> {
        let Handled {
            records,
            dead_letters,
            done,
            moves: _,
            spans,
        } = handled;
        self.work.spans.extend(spans);
        let mut dead_letters = dead_letters.into_iter().peekable();
        for (index, record) in records.into_iter().enumerate() {
            self.work.holds_more_than_skips = true;
            let position = self.way.send(record).await?;
            if let Some((_, partition, offset)) = dead_letters.next_if(|(at, _, _)| *at == index) {
                self.work.dead_letters.push((position, partition, offset));
            }
        }
        for done in done {
            let skipped = |fate: &Fate| matches!(fate, Fate::HandledUpstream | Fate::Duplicate);
            if done.fate.as_ref().is_some_and(|fate| !skipped(fate)) {
                self.work.holds_more_than_skips = true;
            }
            self.work.next.insert(done.partition, done.next);
            self.work.fates.extend(done.fate);
        }
        Ok(())
    }

    /// Commits the open work, then tells the participants: safe (before its inputs count as
    /// consumed elsewhere), then committed.
    pub async fn commit(
        &mut self,
        positions: &(dyn InputPositions<Group = G> + Sync),
        stage: &mut dyn Participants,
    ) -> anyhow::Result<()> {
        let offsets = offsets_to_commit(&self.work.next, stage.retries())?;
        let mut participants = stage.participants();
        let closing: Vec<OutRecord> = participants
            .iter_mut()
            .flat_map(|participant| participant.closing_records())
            .collect();
        for record in closing {
            self.way.send_state(record).await?;
        }
        let mut on_safe = || {
            participants
                .iter_mut()
                .try_for_each(|participant| participant.on_safe())
        };
        let (stuck, name, topic) = (&self.stuck, &self.stage, &self.dead_letter_topic);
        let dead_letters = &self.work.dead_letters;
        let hold_refused =
            |failed: &[FailedDelivery]| hold_refused(stuck, name, topic, dead_letters, failed);
        let started = Instant::now();
        let started_at = SystemTime::now();
        let committed = self
            .way
            .commit(Settle {
                offsets,
                positions,
                hold_refused: &hold_refused,
                on_safe: &mut on_safe,
            })
            .await;
        let work = std::mem::take(&mut self.work);
        let ended_at = SystemTime::now();
        for mut span in work.spans {
            span.child("commit", started_at, ended_at);
            if let Err(error) = &committed {
                span.fail(&format!("{error:#}"));
            }
            span.end(ended_at);
        }
        committed?;
        WorkCommitted {
            stage: &self.stage,
            took: started.elapsed(),
        }
        .emit();
        let done = Committed {
            latency: work.opened.map(|o| o.elapsed()).unwrap_or_default(),
            fates: work.fates,
        };
        for participant in &mut participants {
            participant.on_committed(&done);
        }
        Ok(())
    }

    /// Drops the open work (aborting its transaction): its inputs are handled again, the
    /// participants forget what they kept for it and the partitions in `revoked`.
    pub fn abandon(
        &mut self,
        revoked: &[TopicPartition],
        stage: &mut dyn Participants,
    ) -> anyhow::Result<()> {
        OpenWorkDropped {
            stage: &self.stage,
            revoked: revoked.len(),
            open: self.is_open(),
        }
        .emit();
        for participant in stage.participants() {
            participant.on_dropped(revoked);
        }
        let dropped_at = SystemTime::now();
        for mut span in std::mem::take(&mut self.work).spans {
            span.fail("work dropped: handled again from the committed offsets");
            span.end(dropped_at);
        }
        self.way.abandon()
    }

    /// The stage stops: what the consumer holds for the group is committed.
    pub fn finish(&self, positions: &(dyn InputPositions<Group = G> + Sync)) {
        self.way.finish(positions);
    }
}

/// Holds the partitions of the inputs whose dead letter is among the records refused for
/// good in `failed` (see [`super::stuck`]); whether there was one.
fn hold_refused(
    stuck: &StuckBook,
    stage: &str,
    dead_letter_topic: &str,
    dead_letters: &[(usize, TopicPartition, i64)],
    failed: &[FailedDelivery],
) -> bool {
    let mut held = false;
    for (position, code, error) in failed {
        if !refused_for_good(*code) {
            continue;
        }
        if let Some((_, (topic, partition), offset)) =
            dead_letters.iter().find(|(at, _, _)| at == position)
        {
            let reason = format!(
                "the dead-letter topic {dead_letter_topic} refuses its dead letter: {error}"
            );
            stuck.hold(stage, topic, *partition, *offset, &reason);
            held = true;
        }
    }
    held
}

/// The offsets the open work commits (or stores): the next input of each partition, with the
/// attempt count of the event parked there, if any.
fn offsets_to_commit(
    next: &HashMap<TopicPartition, i64>,
    retries: &RetryBook,
) -> anyhow::Result<TopicPartitionList> {
    let mut offsets = TopicPartitionList::new();
    for (partition, next) in next {
        let mut element = offsets.add_partition(&partition.0, partition.1);
        element.set_offset(Offset::Offset(*next))?;
        if let Some(metadata) = retries.metadata(partition, *next) {
            element.set_metadata(metadata);
        }
    }
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode;

    use super::*;
    use crate::health::Health;
    use crate::kafka::fake::{Call, FakeProducer, record};
    use crate::stage::guarantee::{AtLeastOnce, ExactlyOnce};
    use crate::stage::outcome::Done;
    use crate::stage::participant::Participant;
    use crate::stage::positions::fake::FakePositions;

    fn book() -> StuckBook {
        StuckBook::new(Health::default())
    }

    fn input(partition: i32) -> TopicPartition {
        ("in".to_string(), partition)
    }

    fn exactly_once(producer: &FakeProducer, stuck: StuckBook) -> Committer<()> {
        let way = Box::new(ExactlyOnce::new(producer.clone(), "s"));
        Committer::new(way, Duration::from_secs(1), "s", "DLQ", stuck)
    }

    fn at_least_once(producer: &FakeProducer) -> Committer<()> {
        let way = Box::new(AtLeastOnce::new(producer.clone(), "s"));
        Committer::new(way, Duration::from_secs(1), "s", "DLQ", book())
    }

    /// What the participants were told, in order.
    #[derive(Default, Clone)]
    struct Journal(Arc<Mutex<Vec<String>>>);

    impl Journal {
        fn entries(&self) -> Vec<String> {
            self.0.lock().unwrap().clone()
        }
    }

    /// A participant that writes what it is told into the journal; `fails` makes its
    /// `on_safe` fail.
    struct Witness {
        name: &'static str,
        journal: Journal,
        fails: bool,
        /// The producer's calls when the work became safe.
        calls_at_safe: Option<(FakeProducer, Vec<Call>)>,
        /// Records it writes with the commit.
        closing: Vec<&'static str>,
    }

    impl Participant for Witness {
        fn closing_records(&mut self) -> Vec<OutRecord> {
            self.closing.drain(..).map(record).collect()
        }

        fn on_safe(&mut self) -> anyhow::Result<()> {
            self.journal
                .0
                .lock()
                .unwrap()
                .push(format!("{} safe", self.name));
            if let Some((producer, calls)) = &mut self.calls_at_safe {
                *calls = producer.calls();
            }
            anyhow::ensure!(!self.fails, "{} cannot keep it", self.name);
            Ok(())
        }

        fn on_committed(&mut self, work: &Committed) {
            self.journal.0.lock().unwrap().push(format!(
                "{} committed {}",
                self.name,
                work.fates.len()
            ));
        }

        fn on_dropped(&mut self, revoked: &[TopicPartition]) {
            self.journal
                .0
                .lock()
                .unwrap()
                .push(format!("{} dropped {}", self.name, revoked.len()));
        }
    }

    /// A stage of two witnesses and a retry book.
    struct Stage {
        retries: RetryBook,
        first: Witness,
        second: Witness,
    }

    impl Stage {
        fn new(journal: &Journal) -> Self {
            let witness = |name| Witness {
                name,
                journal: journal.clone(),
                fails: false,
                calls_at_safe: None,
                closing: Vec::new(),
            };
            Stage {
                retries: RetryBook::default(),
                first: witness("first"),
                second: witness("second"),
            }
        }
    }

    impl Participants for Stage {
        fn retries(&self) -> &RetryBook {
            &self.retries
        }

        fn participants(&mut self) -> Vec<&mut dyn Participant> {
            vec![&mut self.first, &mut self.second]
        }
    }

    /// A batch of inputs `offsets` of partition 0, each making one record named after it.
    fn batch(offsets: &[i64]) -> Handled {
        Handled {
            records: offsets
                .iter()
                .map(|offset| record(&format!("out-{offset}")))
                .collect(),
            done: offsets
                .iter()
                .map(|offset| Done {
                    partition: input(0),
                    next: offset + 1,
                    fate: Some(Fate::Duplicate),
                })
                .collect(),
            ..Handled::default()
        }
    }

    async fn handle(committer: &mut Committer<()>, offsets: &[i64]) {
        committer.open().unwrap();
        committer.take(batch(offsets)).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_transactional_commit_takes_outputs_and_offsets_in_one_transaction() {
        let producer = FakeProducer::default();
        let mut committer = exactly_once(&producer, book());
        handle(&mut committer, &[4, 5]).await;
        assert!(committer.takes_only_fetched());
        assert!(committer.is_due(true), "drained work is due at once");
        assert_eq!(committer.due_at(), None);
        let journal = Journal::default();
        let mut stage = Stage::new(&journal);
        stage.first.calls_at_safe = Some((producer.clone(), Vec::new()));
        committer
            .commit(&FakePositions::default(), &mut stage)
            .await
            .unwrap();
        assert!(!committer.is_open());
        let expected = vec![
            Call::Begin,
            Call::Queue("out-4".into()),
            Call::Queue("out-5".into()),
            Call::SendOffsets(vec![("in".into(), 0, 6)]),
            Call::Commit,
        ];
        assert_eq!(producer.calls(), expected);
        // State and processed ids become committed only after the transaction is.
        assert_eq!(stage.first.calls_at_safe.unwrap().1, expected);
        assert_eq!(
            journal.entries(),
            [
                "first safe",
                "second safe",
                "first committed 2",
                "second committed 2"
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn exactly_once_work_of_skips_only_waits_for_its_interval_unless_it_queues_a_record() {
        let producer = FakeProducer::default();
        let mut committer = exactly_once(&producer, book());
        let skips = |offsets: &[i64]| Handled {
            done: offsets
                .iter()
                .map(|offset| Done {
                    partition: input(0),
                    next: offset + 1,
                    fate: Some(Fate::HandledUpstream),
                })
                .collect(),
            ..Handled::default()
        };
        committer.open().unwrap();
        committer.take(skips(&[1, 2])).await.unwrap();
        assert!(committer.is_open());
        assert!(!committer.is_due(true), "skips wait even when drained");
        assert!(!committer.takes_only_fetched(), "the loop waits for input");
        let due = committer.due_at().expect("a deadline");
        assert!(due > Instant::now() + SKIPPED_WORK_INTERVAL / 2);
        // A batch that publishes makes the work due at once, skips and all.
        committer.take(batch(&[3])).await.unwrap();
        assert!(committer.is_due(true));
        assert!(committer.takes_only_fetched());
        assert_eq!(committer.due_at(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_failed_commit_rebuilds_the_stage_and_nothing_counts_as_safe() {
        let producer = FakeProducer::default();
        producer.script().commit_error = Some(KafkaError::MessageProduction(
            RDKafkaErrorCode::RequestTimedOut,
        ));
        let mut committer = exactly_once(&producer, book());
        handle(&mut committer, &[0]).await;
        let journal = Journal::default();
        let error = committer
            .commit(&FakePositions::default(), &mut Stage::new(&journal))
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("rebuilding the stage"),
            "{error}"
        );
        assert!(error.to_string().contains("Fatal"), "{error}");
        assert!(journal.entries().is_empty(), "{:?}", journal.entries());
        // An unknown outcome is not aborted in place: the next producer settles it.
        assert!(!producer.calls().contains(&Call::Abort));
        assert!(!committer.is_open());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_dead_letter_refused_for_good_holds_its_input_partition() {
        let producer = FakeProducer::default();
        producer
            .script()
            .failing_acks
            .insert("letter".into(), RDKafkaErrorCode::MessageSizeTooLarge);
        let stuck = book();
        let mut committer = exactly_once(&producer, stuck.clone());
        handle(&mut committer, &[0]).await;
        let mut letter = Handled {
            records: vec![record("letter")],
            dead_letters: vec![(0, input(2), 17)],
            ..Handled::default()
        };
        letter.done.push(Done {
            partition: input(2),
            next: 18,
            fate: None,
        });
        committer.take(letter).await.unwrap();
        let journal = Journal::default();
        let error = committer
            .commit(&FakePositions::default(), &mut Stage::new(&journal))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("not written"), "{error}");
        assert!(stuck.is_held("s", "in", 2));
        assert!(!stuck.is_held("s", "in", 0));
        assert!(journal.entries().is_empty());
        // The rebuilt stage's producer aborts it.
        assert!(!producer.calls().contains(&Call::Abort));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn an_acknowledging_commit_queues_failures_again_before_storing_offsets() {
        let producer = FakeProducer::default();
        producer
            .script()
            .failing_acks
            .insert("out-8".into(), RDKafkaErrorCode::RequestTimedOut);
        let mut committer = at_least_once(&producer);
        handle(&mut committer, &[7, 8]).await;
        assert!(!committer.takes_only_fetched());
        assert!(
            !committer.is_due(true),
            "acknowledged work waits for its interval"
        );
        assert!(committer.due_at().is_some());
        let positions = FakePositions::default();
        let journal = Journal::default();
        let mut stage = Stage::new(&journal);
        stage.first.calls_at_safe = Some((producer.clone(), Vec::new()));
        committer.commit(&positions, &mut stage).await.unwrap();
        // Every output was acknowledged before it was safe: out-8 went out twice.
        assert_eq!(
            stage.first.calls_at_safe.unwrap().1,
            [
                Call::Queue("out-7".into()),
                Call::Queue("out-8".into()),
                Call::Queue("out-8".into())
            ]
        );
        assert_eq!(*positions.stored.lock().unwrap(), [("in".into(), 0, 9)]);
        assert_eq!(journal.entries()[2], "first committed 2");
        assert!(!committer.is_open());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn an_acknowledging_commit_publishes_state_only_after_every_output_is_acknowledged() {
        let producer = FakeProducer::default();
        producer
            .script()
            .failing_acks
            .insert("out-2".into(), RDKafkaErrorCode::RequestTimedOut);
        let mut committer = at_least_once(&producer);
        committer.open().unwrap();
        committer
            .take(Handled {
                records: vec![record("out-1"), record("out-2")],
                done: vec![Done {
                    partition: input(0),
                    next: 3,
                    fate: None,
                }],
                ..Handled::default()
            })
            .await
            .unwrap();
        // Nothing of the state goes out with the outputs.
        assert_eq!(
            producer.calls(),
            [Call::Queue("out-1".into()), Call::Queue("out-2".into())]
        );
        let positions = FakePositions::default();
        let mut stage = Stage::new(&Journal::default());
        stage.first.closing = vec!["state:a", "state:b"];
        committer.commit(&positions, &mut stage).await.unwrap();
        let history = producer.history();
        let at = |call: Call| history.iter().position(|c| *c == call).unwrap();
        let last_output_ack = history
            .iter()
            .rposition(|c| matches!(c, Call::Acked(id) if id.starts_with("out-")))
            .unwrap();
        // out-2 failed once, went out again, and was acknowledged before any state was queued.
        assert_eq!(
            history
                .iter()
                .filter(|c| **c == Call::Queue("out-2".into()))
                .count(),
            2
        );
        assert!(
            at(Call::Queue("state:a".into())) > last_output_ack,
            "{history:?}"
        );
        assert!(at(Call::Queue("state:a".into())) < at(Call::Queue("state:b".into())));
        assert!(history.contains(&Call::Acked("state:b".into())));
        assert_eq!(*positions.stored.lock().unwrap(), [("in".into(), 0, 3)]);
    }

    #[tokio::test(start_paused = true)]
    async fn state_that_cannot_be_published_stores_no_offsets_and_is_not_safe() {
        let producer = FakeProducer::default();
        let mut committer = at_least_once(&producer);
        committer.open().unwrap();
        committer
            .take(Handled {
                records: vec![record("out-1")],
                ..Handled::default()
            })
            .await
            .unwrap();
        producer
            .script()
            .refused
            .insert("state:a".into(), RDKafkaErrorCode::RequestTimedOut);
        let positions = FakePositions::default();
        let journal = Journal::default();
        let mut stage = Stage::new(&journal);
        stage.first.closing = vec!["state:a"];
        let error = committer.commit(&positions, &mut stage).await.unwrap_err();
        assert!(error.to_string().contains("state changelog"), "{error}");
        assert!(positions.stored.lock().unwrap().is_empty());
        assert!(journal.entries().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_participant_that_cannot_keep_the_work_keeps_the_offsets_unstored() {
        let producer = FakeProducer::default();
        let mut committer = at_least_once(&producer);
        handle(&mut committer, &[1]).await;
        let positions = FakePositions::default();
        let journal = Journal::default();
        let mut stage = Stage::new(&journal);
        stage.first.fails = true;
        committer
            .commit(&positions, &mut stage)
            .await
            .expect_err("the commit fails");
        assert!(positions.stored.lock().unwrap().is_empty());
        assert_eq!(
            journal.entries(),
            ["first safe"],
            "nothing counts as committed"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn abandoning_aborts_the_transaction_and_tells_every_participant() {
        let producer = FakeProducer::default();
        let mut committer = exactly_once(&producer, book());
        handle(&mut committer, &[3]).await;
        let journal = Journal::default();
        let mut stage = Stage::new(&journal);
        committer.abandon(&[input(0)], &mut stage).unwrap();
        assert!(!committer.is_open());
        assert_eq!(producer.calls().last(), Some(&Call::Abort));
        assert_eq!(journal.entries(), ["first dropped 1", "second dropped 1"]);
        // Nothing open: abandoning again aborts nothing.
        committer.abandon(&[], &mut stage).unwrap();
        assert_eq!(
            producer
                .calls()
                .iter()
                .filter(|c| **c == Call::Abort)
                .count(),
            1
        );
    }
}
