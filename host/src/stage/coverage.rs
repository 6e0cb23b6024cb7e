//! Partitions nobody reads: every input partition of a stage must be assigned to some member of
//! the stage's group.
//!
//! With the classic group protocol a static member that rejoins keeps its old assignment and the
//! group does not rebalance (KAFKA-12759), so partitions added to an input topic can stay
//! assigned to nobody — for as long as the members keep their sessions, that is for ever —
//! while the ingress keeps accepting orders that land on them. The host therefore compares, for
//! every topic-fed stage, the partitions of its inputs (the cluster's metadata) with what the
//! members of its group were assigned (the group's description, each member's assignment
//! decoded with the Kafka protocol crate). Partitions assigned to nobody in a stable group at
//! two looks in a row (2 s apart; a static member that went away keeps its partitions until its
//! session times out, so this is not a restart) are reported (`/readyz` part
//! `unassigned:<stage>`, and the log), and:
//!
//! - for a stage without keyed state, the host makes the group rebalance: a short-lived
//!   dynamic member (no `group.instance.id`, never committing) joins with the stage's
//!   subscription, which makes the leader assign again over the topics' current partitions,
//!   and leaves. The new partitions are read within seconds, without a restart;
//! - a stage with keyed state keeps its state per input partition, and a key that moved to a
//!   new partition would find none (its stock would start again from the catalog): it is
//!   left unready, with what to do, and never reads with a key's state missing.
//!
//! Assignments change only when a group rebalances, and a rebalance assigns every partition the
//! leader sees: a group seen covering its inputs stays covering them while their partition
//! counts stay the same. So every 2 s only the input topics' partition counts are read (one
//! metadata request per topic for every stage together, in one blocking task); a group is
//! described again when a count changed since it was last seen covered, or after
//! [`SAFETY_LOOK`] in any case. An idle host then asks the broker for its groups' descriptions
//! once a minute instead of seven times every 2 s.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Buf;
use kafka_protocol::messages::ConsumerProtocolAssignment;
use kafka_protocol::protocol::Decodable;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, ClientContext};
use tokio::sync::watch;

use crate::health::{Health, Reporter};
use crate::kafka::KafkaClients;

/// How often the input topics' partition counts are looked at.
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// How long a group seen covering its inputs is trusted while their partition counts stay the
/// same: it is described again after this anyway.
const SAFETY_LOOK: Duration = Duration::from_secs(60);
/// How long one look may wait for the broker.
const LOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the rebalancing member waits for its assignment.
const REBALANCE_PATIENCE: Duration = Duration::from_secs(30);

/// One topic-fed stage whose group is watched.
#[derive(Debug, Clone)]
pub struct CoverageTarget {
    /// The stage.
    pub stage: String,
    /// Its consumer group.
    pub group: String,
    /// Its input topics.
    pub inputs: Vec<String>,
    /// Whether it keeps keyed state per input partition.
    pub stateful: bool,
    /// Its consumer's settings (the rebalancing member takes them, without the static id).
    pub consumer: ClientConfig,
    /// How long a partition may be assigned to nobody before it counts. Only a stable group is
    /// looked at (a rebalance in progress is not), and a static member that went away keeps its
    /// partitions until its session times out, so a short grace does not mistake a restart
    /// for lost partitions.
    pub grace: Duration,
    /// The stage's processed-id topic (exactly-once): partition i keeps the ids of input
    /// partition i, so it grows with the inputs before the group rebalances onto them.
    pub processed: Option<String>,
}

/// The inputs' partition counts when a group was last seen covering them, and when.
type SeenCovering = (Vec<usize>, Instant);

/// What is known of one stage's coverage.
struct Watched {
    target: CoverageTarget,
    unassigned_since: Option<Instant>,
    reporter: Option<Reporter>,
    /// The inputs' partition counts when the group was last seen covering them, and when.
    seen_covering: Option<SeenCovering>,
}

/// What one tick found of one stage's group: `None` when it was not described (its inputs'
/// counts are those it was seen covering), otherwise the look's outcome; with the counts read.
type Look = (
    Vec<usize>,
    Option<anyhow::Result<Option<BTreeSet<(String, i32)>>>>,
);

/// Whether a group seen covering its inputs at `seen_covering` (their counts, when) still
/// does, its inputs now counting `now` partitions (0: unknown), without describing it.
fn still_covered(seen_covering: Option<&SeenCovering>, now: &[usize]) -> bool {
    seen_covering
        .is_some_and(|(seen, at)| seen == now && !now.contains(&0) && at.elapsed() < SAFETY_LOOK)
}

/// Reads every input topic's partition count once (a topic that cannot be read counts 0: its
/// partitions are not looked at, and its group is described at every tick until it can be) and
/// describes the groups that need it (see the module's doc). Blocking.
fn look_at_all(
    client: &BaseConsumer,
    targets: &[(CoverageTarget, Option<SeenCovering>)],
) -> Vec<Look> {
    let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    targets
        .iter()
        .map(|(target, covered)| {
            let now: Vec<usize> = target
                .inputs
                .iter()
                .map(|topic| {
                    *counts.entry(topic).or_insert_with(|| {
                        client
                            .fetch_metadata(Some(topic), LOOK_TIMEOUT)
                            .ok()
                            .and_then(|m| {
                                let topic = m.topics().first()?;
                                topic.error().is_none().then(|| topic.partitions().len())
                            })
                            .unwrap_or(0)
                    })
                })
                .collect();
            let look =
                (!still_covered(covered.as_ref(), &now)).then(|| unassigned(client, target, &now));
            (now, look)
        })
        .collect()
}

/// Watches every target's group until `stop` turns true.
pub async fn watch_coverage(
    targets: Vec<CoverageTarget>,
    kafka: KafkaClients,
    health: Health,
    mut stop: watch::Receiver<bool>,
) {
    let mut watched: Vec<Watched> = targets
        .into_iter()
        .map(|target| Watched {
            target,
            unassigned_since: None,
            reporter: None,
            seen_covering: None,
        })
        .collect();
    // One client for every look at every group.
    let mut client: Option<Arc<BaseConsumer>> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            _ = stop.changed() => return,
        }
        if client.is_none() {
            match kafka.reader("stagehost-coverage").create() {
                Ok(created) => client = Some(Arc::new(created)),
                Err(error) => {
                    tracing::debug!(%error, "cannot create the coverage watch's client");
                    continue;
                }
            }
        }
        let Some(client) = client.clone() else {
            continue;
        };
        let targets: Vec<_> = watched
            .iter()
            .map(|one| (one.target.clone(), one.seen_covering.clone()))
            .collect();
        let Ok(looks) = tokio::task::spawn_blocking(move || look_at_all(&client, &targets)).await
        else {
            continue;
        };
        for (one, (counts, look)) in watched.iter_mut().zip(looks) {
            match look {
                // Seen covering these counts a moment ago.
                None => {}
                Some(Ok(Some(missing))) if !missing.is_empty() => {
                    one.seen_covering = None;
                    one.missing(&missing, &health, &kafka).await;
                }
                Some(Ok(Some(_))) => {
                    one.seen_covering = Some((counts, Instant::now()));
                    one.covered();
                }
                // The group is rebalancing or empty (the stage's own readiness says so), or
                // the broker did not answer: nothing to conclude now.
                Some(Ok(None)) => one.seen_covering = None,
                Some(Err(error)) => {
                    one.seen_covering = None;
                    tracing::debug!(stage = %one.target.stage, error = format!("{error:#}"), "cannot look at the group's assignment")
                }
            }
        }
    }
}

impl Watched {
    fn covered(&mut self) {
        self.unassigned_since = None;
        if let Some(reporter) = self.reporter.take() {
            tracing::info!(stage = %self.target.stage, "every input partition is assigned again");
            reporter.remove();
        }
    }

    async fn missing(
        &mut self,
        missing: &BTreeSet<(String, i32)>,
        health: &Health,
        kafka: &KafkaClients,
    ) {
        let since = *self.unassigned_since.get_or_insert_with(Instant::now);
        if since.elapsed() < self.target.grace {
            return;
        }
        let list = missing
            .iter()
            .map(|(topic, partition)| format!("{topic}/{partition}"))
            .collect::<Vec<_>>()
            .join(", ");
        let stage = &self.target.stage;
        let reason = if self.target.stateful {
            format!(
                "input partitions {list} are assigned to no member of group {} for {:.0} s: partitions were added to an input topic. The stage keeps keyed state per input partition and a key that moved would find none, so the host does not read them; put the topic back to its partition count (or re-key the stage's state) and restart",
                self.target.group,
                since.elapsed().as_secs_f64()
            )
        } else {
            format!(
                "input partitions {list} are assigned to no member of group {} for {:.0} s (partitions added to an input topic: static members keep their old assignment); making the group rebalance",
                self.target.group,
                since.elapsed().as_secs_f64()
            )
        };
        if self.reporter.is_none() {
            tracing::error!(stage = %stage, partitions = %list, "{reason}");
        }
        self.reporter
            .get_or_insert_with(|| health.reporter(&format!("unassigned:{stage}"), "unassigned"))
            .unready(reason);
        if !self.target.stateful {
            if let Some(processed) = &self.target.processed {
                let wanted = missing.iter().map(|(_, p)| p + 1).max().unwrap_or(0);
                if let Err(error) = crate::kafka::ensure_partitions(kafka, processed, wanted).await
                {
                    tracing::warn!(stage = %stage, error = format!("{error:#}"), "cannot grow the processed-id topic with the input");
                }
            }
            let target = self.target.clone();
            let rebalanced =
                tokio::task::spawn_blocking(move || make_group_rebalance(&target)).await;
            match rebalanced {
                Ok(Ok(())) => {
                    tracing::info!(stage = %stage, "the group rebalanced over the current partitions")
                }
                Ok(Err(error)) => {
                    tracing::warn!(stage = %stage, error = format!("{error:#}"), "cannot make the group rebalance; trying again")
                }
                Err(_) => {}
            }
        }
    }
}

/// The input partitions of `target` (its inputs count `counts` partitions) assigned to no member
/// of its group; `None` when the group is not stable (rebalancing, empty, or not a consumer
/// group).
fn unassigned(
    client: &BaseConsumer,
    target: &CoverageTarget,
    counts: &[usize],
) -> anyhow::Result<Option<BTreeSet<(String, i32)>>> {
    let groups = client
        .fetch_group_list(Some(&target.group), LOOK_TIMEOUT)
        .context("cannot describe the group")?;
    let Some(group) = groups.groups().first() else {
        return Ok(None);
    };
    if group.state() != "Stable"
        || group.protocol_type() != "consumer"
        || group.members().is_empty()
    {
        return Ok(None);
    }
    let mut assigned = BTreeSet::new();
    for member in group.members() {
        if let Some(bytes) = member.assignment() {
            assigned.extend(decode_assignment(bytes)?);
        }
    }
    let expected = target.inputs.iter().zip(counts).flat_map(|(topic, count)| {
        (0..*count as i32).map(move |partition| (topic.clone(), partition))
    });
    Ok(Some(
        expected
            .filter(|partition| !assigned.contains(partition))
            .collect(),
    ))
}

/// The partitions of a member's assignment (the consumer protocol's `ConsumerProtocolAssignment`
/// after its version).
fn decode_assignment(bytes: &[u8]) -> anyhow::Result<Vec<(String, i32)>> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut buf = bytes::Bytes::copy_from_slice(bytes);
    anyhow::ensure!(
        buf.remaining() >= 2,
        "an assignment of {} bytes",
        bytes.len()
    );
    // A newer version is read as the newest known one: later versions only add fields.
    let version = buf.get_i16().clamp(0, 3);
    let assignment = ConsumerProtocolAssignment::decode(&mut buf, version)
        .context("cannot decode a member's assignment")?;
    Ok(assignment
        .assigned_partitions
        .into_iter()
        .flat_map(|topic| {
            let name = topic.topic.to_string();
            topic
                .partitions
                .into_iter()
                .map(move |partition| (name.clone(), partition))
        })
        .collect())
}

/// Makes `target`'s group assign again: a dynamic member joins with the stage's subscription
/// (a new member always rebalances the group, and the leader assigns over the topics' current
/// partitions), waits for its assignment, and leaves without having committed anything.
fn make_group_rebalance(target: &CoverageTarget) -> anyhow::Result<()> {
    let mut settings = target.consumer.clone();
    settings.remove("group.instance.id");
    settings
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    let consumer: BaseConsumer<Joined> = settings
        .create_with_context(Joined::default())
        .context("cannot create a consumer")?;
    let inputs: Vec<&str> = target.inputs.iter().map(String::as_str).collect();
    consumer.subscribe(&inputs).context("cannot subscribe")?;
    let deadline = Instant::now() + REBALANCE_PATIENCE;
    while !consumer.context().joined() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "no assignment within {REBALANCE_PATIENCE:?}"
        );
        consumer.poll(Duration::from_millis(100));
    }
    consumer.unsubscribe();
    Ok(())
}

/// Notes that the rebalancing member got an assignment.
#[derive(Default)]
struct Joined(std::sync::atomic::AtomicBool);

impl Joined {
    fn joined(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl ClientContext for Joined {}

impl rdkafka::consumer::ConsumerContext for Joined {
    fn post_rebalance(
        &self,
        _consumer: &BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        if matches!(rebalance, rdkafka::consumer::Rebalance::Assign(_)) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    #[test]
    fn a_group_is_described_again_when_a_count_changed_or_a_minute_passed() {
        let now = Instant::now();
        assert!(still_covered(Some(&(vec![3, 3], now)), &[3, 3]));
        assert!(!still_covered(None, &[3, 3]), "never seen covering");
        assert!(
            !still_covered(Some(&(vec![3, 3], now)), &[3, 6]),
            "partitions added"
        );
        assert!(
            !still_covered(Some(&(vec![3], now)), &[3, 3]),
            "an input added"
        );
        assert!(
            !still_covered(Some(&(vec![0], now)), &[0]),
            "counts unknown"
        );
        let long_ago = now.checked_sub(SAFETY_LOOK).unwrap();
        assert!(
            !still_covered(Some(&(vec![3], long_ago)), &[3]),
            "the safety look"
        );
    }

    #[test]
    fn a_members_assignment_is_decoded_whatever_its_version() {
        let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
            TopicPartition::default()
                .with_topic(TopicName(StrBytes::from_static_str("orders")))
                .with_partitions(vec![0, 2]),
        ]);
        for version in [0i16, 1, 3] {
            let mut bytes = bytes::BytesMut::new();
            bytes.put_i16(version);
            assignment.encode(&mut bytes, version).unwrap();
            assert_eq!(
                decode_assignment(&bytes).unwrap(),
                vec![("orders".to_string(), 0), ("orders".to_string(), 2)]
            );
        }
        assert!(decode_assignment(&[]).unwrap().is_empty());
        assert!(decode_assignment(&[0]).is_err());
    }
}
