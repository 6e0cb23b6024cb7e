//! `stagehost state republish`: writes a stateful stage's keyed state from the local copy back
//! into its changelog topic, after the topic was deleted (or made again empty).
//!
//! The changelog is the system of record of a stage's state and the local store keeps a copy
//! of it. When the topic is lost the host refuses to run the stage (its state would start again
//! from nothing), but the copy still holds the state as of the stage's last commit: every key's
//! latest committed value. This command makes the topic again if it is missing, writes every
//! key of every partition the copy was caught up on into that partition, and moves the copy's
//! checkpoint to the new end, so the stage goes on from exactly where it stopped. It runs with
//! the host stopped (the store is locked while a host runs) and says what it will do before it
//! does it.
//!
//! With several hosts, each holds the freshest copy of the partitions it processed last: run it
//! on each of them (a partition it does not hold a copy of, or whose topic partition is intact,
//! is left alone).

use std::fmt::Write as _;

use anyhow::Context;

use crate::config::PipelineConfig;
use crate::event::headers::RecordHeaders;
use crate::kafka::{
    ACCESS_PATIENCE, KafkaClients, OutRecord, RecordQueue, check_access, cluster_id,
    committed_reader, ensure_changelog, partition_count, publish_all, watermarks,
};
use crate::state::changelog_topic;
use crate::store::{LocalStore, Scope, Table};

/// What republishing does to one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionPlan {
    /// The changelog partition.
    pub partition: i32,
    /// Keys the local copy holds for it.
    pub keys: usize,
    /// The offset the local copy was caught up to (of the lost topic).
    pub checkpoint: i64,
    /// Where the topic partition ends now (0 when the topic is missing).
    pub end: i64,
    /// Whether the topic lost what the copy holds: it is missing, or ends before the copy's
    /// checkpoint.
    pub lost: bool,
}

/// Republishes (or, without `execute`, only describes) the keyed state of stage `stage` from
/// the local store in `config.state.dir` into its changelog; a report in words.
pub async fn republish(
    config: &PipelineConfig,
    stage: &str,
    execute: bool,
) -> anyhow::Result<String> {
    let stage_config = config
        .stages
        .iter()
        .find(|s| s.name == stage)
        .with_context(|| format!("there is no stage {stage} in the configuration"))?;
    let group = stage_config.group_id();
    let changelog = changelog_topic(&group);
    let first_input = stage_config
        .inputs()
        .first()
        .map(|s| s.to_string())
        .with_context(|| format!("stage {stage} reads no topic"))?;
    let kafka = KafkaClients::new(&config.kafka);
    let (cluster, partitions) = cluster_and_partitions(&kafka, &first_input).await?;
    let store = LocalStore::open_for_cluster(&config.state.dir, &cluster).with_context(|| {
        format!(
            "cannot open the local store in {} (stop the host that uses it first)",
            config.state.dir.display()
        )
    })?;
    let table = Table::new(&store, &format!("state:{group}"), Scope::Partition);
    let replication = config.replication_after(&stage_config.inputs());
    let plans = {
        let (kafka, changelog, table) = (kafka.clone(), changelog.clone(), table.clone());
        tokio::task::spawn_blocking(move || plan(&kafka, &changelog, partitions, &table)).await??
    };
    let mut report = describe(config, stage, &changelog, partitions, &plans)?;
    let lost: Vec<&PartitionPlan> = plans.iter().filter(|p| p.lost).collect();
    if lost.is_empty() {
        writeln!(report, "nothing to republish")?;
        return Ok(report);
    }
    if !execute {
        writeln!(
            report,
            "run again with --yes to write these keys into {changelog} (made again if missing) and go on from them"
        )?;
        return Ok(report);
    }
    ensure_changelog(&kafka, &changelog, partitions, replication).await?;
    let producer = kafka.shared_producer()?;
    for plan in lost {
        let (written, end) = write_back(&kafka, &producer, &table, &changelog, plan).await?;
        writeln!(
            report,
            "  partition {}: {written} keys written; the local copy now goes on from offset {end}",
            plan.partition,
        )?;
    }
    Ok(report)
}

/// Checks that the brokers accept the host, and returns the cluster's id and how many
/// partitions `input` has.
async fn cluster_and_partitions(
    kafka: &KafkaClients,
    input: &str,
) -> anyhow::Result<(String, i32)> {
    let (kafka, input) = (kafka.clone(), input.to_string());
    tokio::task::spawn_blocking(move || {
        check_access(&kafka, ACCESS_PATIENCE)?;
        anyhow::Ok((cluster_id(&kafka)?, partition_count(&kafka, &input)?))
    })
    .await?
}

/// The report's beginning: the stage, its changelog, and what each partition's plan is.
fn describe(
    config: &PipelineConfig,
    stage: &str,
    changelog: &str,
    partitions: i32,
    plans: &[PartitionPlan],
) -> anyhow::Result<String> {
    let mut report = String::new();
    writeln!(
        report,
        "stage {stage}: changelog {changelog}, {partitions} partitions; local copy in {}",
        config.state.dir.display()
    )?;
    for plan in plans {
        let what = if plan.lost {
            format!(
                "{} keys from the local copy (caught up to offset {} of the lost topic); the topic partition ends at {}",
                plan.keys, plan.checkpoint, plan.end
            )
        } else {
            format!(
                "intact (the topic ends at {}, the copy was caught up to {}): left alone",
                plan.end, plan.checkpoint
            )
        };
        writeln!(report, "  partition {}: {what}", plan.partition)?;
    }
    Ok(report)
}

/// Writes every key the local copy holds of `plan`'s partition into `changelog`, then moves
/// the copy's checkpoint to the partition's new end; returns how many keys were written and
/// that end.
async fn write_back(
    kafka: &KafkaClients,
    producer: &impl RecordQueue,
    table: &Table,
    changelog: &str,
    plan: &PartitionPlan,
) -> anyhow::Result<(usize, i64)> {
    let records: Vec<OutRecord> = table
        .entries(plan.partition)?
        .into_iter()
        .map(|(key, value)| {
            let key = String::from_utf8_lossy(&key).into_owned();
            OutRecord {
                topic: changelog.to_string(),
                partition: Some(plan.partition),
                id: format!("state:{key}"),
                key: Some(key),
                payload: Some(value),
                headers: RecordHeaders::new(),
            }
        })
        .collect();
    publish_all(producer, &records, 5)
        .await
        .map_err(|error| anyhow::anyhow!("cannot write {changelog}/{}: {error}", plan.partition))?;
    let end = {
        let (kafka, changelog, partition) = (kafka.clone(), changelog.to_string(), plan.partition);
        tokio::task::spawn_blocking(move || {
            let reader = committed_reader(&kafka)?;
            anyhow::Ok(watermarks(&reader, &changelog, partition)?.1)
        })
        .await??
    };
    table.apply(plan.partition, std::iter::empty(), Some(end))?;
    Ok((records.len(), end))
}

/// What the local copy and the topic hold of each partition the copy was caught up on.
fn plan(
    kafka: &KafkaClients,
    changelog: &str,
    partitions: i32,
    table: &Table,
) -> anyhow::Result<Vec<PartitionPlan>> {
    let reader = committed_reader(kafka)?;
    let exists = partition_count(kafka, changelog).is_ok();
    let mut plans = Vec::new();
    for partition in 0..partitions {
        let Some(checkpoint) = table.checkpoint(partition)? else {
            continue;
        };
        let end = if exists {
            watermarks(&reader, changelog, partition)?.1
        } else {
            0
        };
        plans.push(PartitionPlan {
            partition,
            keys: table.entries(partition)?.len(),
            checkpoint,
            end,
            lost: !exists || checkpoint > end,
        });
    }
    Ok(plans)
}
