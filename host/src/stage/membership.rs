//! Static membership across a change of a stage's inputs.
//!
//! A stage's consumer is a static member of its group (`group.instance.id`): a restarted
//! instance takes its partitions back without a rebalance. The other side of that shortcut:
//! with the classic group protocol, a static member that rejoins with another subscription is
//! handed its old assignment and no rebalance follows (KAFKA-12759, and with one member the
//! member is also the leader, which KIP-814 lets skip the assignment), so topics added to the
//! stage's inputs would not be read while the member stays in the group: a restarted member
//! keeps its session alive, so that is for ever.
//!
//! The host therefore records each static member's input list in `state.dir` ([`InputsRecord`]).
//! When the list differs from the last run's, a short-lived consumer with the same
//! `group.instance.id` first rejoins with the old list (taking the member's place, no
//! rebalance) and then changes its subscription to the new one: a known member whose
//! subscription changed makes the coordinator rebalance. The stage's own consumer then takes the
//! member's place with the new list, which now matches, and gets the new assignment. That
//! consumer never commits, and it ends before the stage's consumer exists, so the stage's
//! offsets and transactions (fenced by the group's generation) are its own.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::RebalanceTracker;

/// How long each of the two joins of [`move_subscription`] may take.
pub const REJOIN_PATIENCE: Duration = Duration::from_secs(30);

/// Where a static member's input list of its last run is kept: one file per
/// `group.instance.id` under `<state.dir>/members/`, one topic a line.
#[derive(Debug, Clone)]
pub struct InputsRecord {
    path: PathBuf,
}

impl InputsRecord {
    /// The record of the static member `member` (its `group.instance.id`) in `state_dir`.
    pub fn new(state_dir: &Path, member: &str) -> Self {
        let file: String = member
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Self {
            path: state_dir.join("members").join(format!("{file}.inputs")),
        }
    }

    /// The inputs recorded by the last run, sorted; `None` when there is no record (the
    /// member's first run here) or it cannot be read.
    pub fn read(&self) -> Option<Vec<String>> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        Some(normalized(text.lines()))
    }

    /// Records `inputs` for the next run.
    pub fn write(&self, inputs: &[&str]) -> io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut text = normalized(inputs.iter().copied()).join("\n");
        text.push('\n');
        let partial = self.path.with_extension("inputs.partial");
        std::fs::write(&partial, text)?;
        std::fs::rename(&partial, &self.path)
    }

    /// The file, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Topic names sorted, without blanks or repeats: the order of a subscription does not matter.
fn normalized<'a>(topics: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut topics: Vec<String> = topics
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    topics.sort();
    topics.dedup();
    topics
}

/// Before a stage's consumer (of `settings`, a static member) subscribes to `inputs`: when the
/// member's last run in `state_dir` subscribed to other topics, moves the member's subscription
/// in the group from those to `inputs` ([`move_subscription`]); then records `inputs`. Never
/// fails: when the move does not complete, the stage starts anyway (and the next start tries
/// again), and the warning says why.
pub fn rejoin_if_inputs_changed(
    settings: &ClientConfig,
    state_dir: &Path,
    inputs: &[&str],
    stage: &str,
) {
    let Some(member) = settings.get("group.instance.id") else {
        return;
    };
    let record = InputsRecord::new(state_dir, member);
    let now = normalized(inputs.iter().copied());
    match record.read() {
        Some(before) if before != now => {
            let started = Instant::now();
            let before: Vec<&str> = before.iter().map(String::as_str).collect();
            match move_subscription(settings, &before, inputs, REJOIN_PATIENCE) {
                Ok(()) => tracing::info!(
                    stage,
                    member,
                    before = before.join(","),
                    now = now.join(","),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "inputs changed since the last run: the group rebalanced onto the new inputs"
                ),
                Err(error) => {
                    tracing::warn!(
                        stage,
                        member,
                        error = format!("{error:#}"),
                        "inputs changed since the last run, but the group could not be made \
                         to rebalance: the new inputs may be read only once the member's \
                         session times out (session.timeout.ms) or another member joins"
                    );
                    return;
                }
            }
        }
        Some(_) => return,
        None => {}
    }
    if let Err(error) = record.write(inputs) {
        tracing::warn!(stage, path = %record.path().display(), %error,
            "cannot record the stage's inputs; a later change of them may not rebalance its group");
    }
}

/// Makes the group of the static member configured by `settings` rebalance onto the
/// subscription `to`, the member having last joined with `from`: a consumer with the member's
/// settings (but never committing) joins with `from`, taking the member's place without a
/// rebalance, then subscribes to `to`, which as a known member with a changed subscription
/// makes the coordinator rebalance. Each join may take `patience`. The consumer leaves nothing
/// behind: as a static member it does not leave the group when it closes, and the stage's
/// consumer takes its place.
pub fn move_subscription(
    settings: &ClientConfig,
    from: &[&str],
    to: &[&str],
    patience: Duration,
) -> anyhow::Result<()> {
    let mut settings = settings.clone();
    settings
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    let strategy = settings
        .get("partition.assignment.strategy")
        .unwrap_or_default()
        .to_string();
    let consumer: BaseConsumer<RebalanceTracker> = settings
        .create_with_context(RebalanceTracker::for_strategy(&strategy))
        .context("cannot create a consumer")?;
    consumer
        .subscribe(from)
        .with_context(|| format!("cannot subscribe to the last run's inputs {from:?}"))?;
    join(&consumer, 1, patience).context("joining with the last run's inputs")?;
    consumer
        .subscribe(to)
        .with_context(|| format!("cannot subscribe to {to:?}"))?;
    join(&consumer, 2, patience).context("rejoining with the new inputs")?;
    Ok(())
}

/// Polls `consumer` (dropping what it fetches: nothing is committed) until it has been given
/// its `count`th assignment, for at most `patience`.
fn join(
    consumer: &BaseConsumer<RebalanceTracker>,
    count: u64,
    patience: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + patience;
    while consumer.context().assignments() < count {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the group gave no assignment within {patience:?}"
        );
        if let Some(Err(error)) = consumer.poll(Duration::from_millis(100)) {
            tracing::debug!(%error, "while rejoining with changed inputs");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_keeps_the_inputs_as_a_set() {
        let dir = tempfile::tempdir().unwrap();
        let record = InputsRecord::new(dir.path(), "group.host/0");
        assert_eq!(record.read(), None);
        record.write(&["b", "a", "b"]).unwrap();
        assert_eq!(record.read(), Some(vec!["a".to_string(), "b".to_string()]));
        assert!(record.path().ends_with("members/group.host_0.inputs"));
        record.write(&["c"]).unwrap();
        assert_eq!(record.read(), Some(vec!["c".to_string()]));
    }

    #[test]
    fn without_a_static_member_nothing_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = ClientConfig::new();
        settings.set("group.id", "g");
        rejoin_if_inputs_changed(&settings, dir.path(), &["a"], "s");
        assert!(!dir.path().join("members").exists());
    }

    #[test]
    fn a_first_run_or_unchanged_inputs_only_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = ClientConfig::new();
        // No broker here: a move would fail and leave the record as it was.
        settings
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("group.id", "g")
            .set("group.instance.id", "g.i");
        rejoin_if_inputs_changed(&settings, dir.path(), &["b", "a"], "s");
        let record = InputsRecord::new(dir.path(), "g.i");
        assert_eq!(record.read(), Some(vec!["a".to_string(), "b".to_string()]));
        rejoin_if_inputs_changed(&settings, dir.path(), &["a", "b"], "s");
        assert_eq!(record.read(), Some(vec!["a".to_string(), "b".to_string()]));
    }
}
