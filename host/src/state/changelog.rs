//! The changelog of a stage's state: a compacted topic with one partition per input partition.
//! Kafka is the system of record; the local store keeps a copy of it ([`Table`]) that an
//! instance catches up from the committed changelog records before handling a partition's
//! first event. The same catch-up serves every table that copies a topic (processed ids,
//! ingress answers, read models).

use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::message::{BorrowedMessage, Message};

use crate::kafka::{
    KafkaClients, for_each_committed_since, partition_count, partition_count_of_new,
};
use crate::store::Table;

/// How long a catch-up may wait for the topic (an open transaction of a dead instance holds
/// committed readers back for up to the transaction timeout).
const RESTORE_TIMEOUT: Duration = Duration::from_secs(120);
/// Records written to the table in one batch while catching up.
const BATCH_RECORDS: usize = 2_000;

/// The changelog topic of a stage.
pub fn changelog_topic(group: &str) -> String {
    format!("{group}-changelog")
}

/// Refuses to run stage `stage` on its keyed state when an input topic's partition count is not
/// its changelog's. The state is kept per input partition, one changelog partition each, and a
/// key lives where its record's key hashes to: partitions added to an input (or a changelog
/// grown by hand) move keys to partitions whose state does not hold them, so their state would
/// start again from nothing (stock back at the catalog's). Blocking.
pub fn check_layout(
    kafka: &KafkaClients,
    stage: &str,
    changelog: &str,
    inputs: &[&str],
) -> anyhow::Result<()> {
    // A changelog made a moment ago may not be in the metadata yet.
    let kept = partition_count_of_new(kafka, changelog)?;
    for input in inputs {
        let now = partition_count(kafka, input)?;
        anyhow::ensure!(
            now == kept,
            "stage {stage} keeps keyed state per input partition, and its input {input} has {now} partitions while its changelog {changelog} has {kept}: partitions were added to the input (or the changelog was grown by hand), so keys now hash to partitions whose state does not hold them and would start again from nothing. The stage does not run on missing state; the host does not re-key state. See \"Partitions added to an input\" in docs/operations.md for what to do"
        );
    }
    Ok(())
}

/// What a table entry a record stands for: its key, and its value or `None` for a delete.
pub type Entry = (Vec<u8>, Option<Vec<u8>>);

/// What catching a table up did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaughtUp {
    /// Records read.
    pub records: u64,
    /// Where reading started (`None`: the beginning).
    pub from: Option<i64>,
    /// The partition's end: the table's checkpoint now.
    pub to: i64,
    /// How long it took.
    pub elapsed: Duration,
}

/// Reads the committed records of `topic`/`partition` that `table` has not read yet (from
/// its checkpoint to the end) and writes into the table the entries `entries` makes of each
/// (none, one — an `Option` — or several: a record of a batch of processed ids), with the
/// checkpoint. Blocking: call it off the async threads.
///
/// A checkpoint past the partition's end is an error, never an empty copy: the topic is the
/// system of record of what the table holds (keyed state, processed ids, ingress answers), and
/// a topic that ends before what was already read from it was deleted and made again (or
/// truncated): what it held is lost, and a stage that went on would start its state again from
/// nothing (stock back at the catalog's, orders processed twice).
pub fn catch_up<E: IntoIterator<Item = Entry>>(
    kafka: &KafkaClients,
    topic: &str,
    partition: i32,
    table: &Table,
    entries: impl Fn(&BorrowedMessage<'_>) -> E,
) -> anyhow::Result<CaughtUp> {
    let started = Instant::now();
    let checkpoint = table.checkpoint(partition)?;
    let mut past_end: Option<(i64, i64)> = None;
    let mut failure: Option<anyhow::Error> = None;
    let mut batch: Vec<Entry> = Vec::new();
    let mut records = 0u64;
    let apply = |batch: &mut Vec<Entry>, next: i64| {
        let writes = batch
            .iter()
            .map(|(key, value)| (key.as_slice(), value.as_deref()));
        let applied = table.apply(partition, writes, Some(next));
        batch.clear();
        applied
    };
    let marks = for_each_committed_since(
        kafka,
        topic,
        partition,
        |marks| match checkpoint {
            Some(at) if at > marks.high => {
                past_end = Some((at, marks.high));
                // Past the end: nothing is read.
                Some(i64::MAX)
            }
            at => at,
        },
        RESTORE_TIMEOUT,
        |message| {
            if failure.is_some() {
                return;
            }
            records += 1;
            batch.extend(entries(message));
            if batch.len() >= BATCH_RECORDS
                && let Err(error) = apply(&mut batch, message.offset() + 1)
            {
                failure = Some(error.into());
            }
        },
    )
    .with_context(|| {
        format!(
            "cannot read {topic}/{partition} into table {}",
            table.name()
        )
    })?;
    if let Some((at, end)) = past_end {
        anyhow::bail!(
            "{topic}/{partition} ends at offset {end}, but the local copy (table {}) was caught up to offset {at}: the topic was deleted and made again, or truncated, and what it held is lost. Nothing runs on a copy that silently started again: restore the topic (its records up to offset {at} at least), or, to start from nothing on purpose, stop the host, delete the stage's consumer group offsets and remove state.dir (see docs/operations.md)",
            table.name()
        );
    }
    if let Some(error) = failure {
        return Err(error).context(format!("cannot write table {}", table.name()));
    }
    apply(&mut batch, marks.high)
        .with_context(|| format!("cannot write table {}", table.name()))?;
    Ok(CaughtUp {
        records,
        from: checkpoint,
        to: marks.high,
        elapsed: started.elapsed(),
    })
}

/// A record as a plain table entry: its key, and its value (`None` for a tombstone). Records
/// without a key are skipped.
pub fn plain_entry(message: &BorrowedMessage<'_>) -> Option<Entry> {
    Some((
        message.key()?.to_vec(),
        message.payload().map(<[u8]>::to_vec),
    ))
}
