//! A 3-node Kafka cluster of one test binary alone (`scripts/kafka-cluster.sh` with its own
//! folder and ports), reset (every node stopped, its data deleted) when dropped, even when the
//! test fails; and what its metadata says about leaders and in-sync replicas.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::repo;

/// One partition as the cluster's metadata shows it.
#[derive(Debug, Clone)]
pub struct PartitionState {
    pub topic: String,
    pub partition: i32,
    /// The leader's node id; -1 without one.
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// The cluster: nodes 1–3 on `base`, `base + 2`, `base + 4` (controllers one port up).
pub struct Cluster {
    /// Its `KAFKA_HOME_DIR`.
    pub home: PathBuf,
    /// Node 1's broker port.
    pub base: u16,
}

impl Cluster {
    /// Resets and starts the cluster on the base port in `port_var` (or `default_base`), in
    /// `.kafka/cluster-<base>`; returns once every node listens.
    pub fn start(port_var: &str, default_base: u16) -> Self {
        let base: u16 = std::env::var(port_var)
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(default_base);
        let cluster = Cluster {
            home: repo().join(format!(".kafka/cluster-{base}")),
            base,
        };
        assert!(cluster.script(&["reset"]), "kafka-cluster.sh reset failed");
        assert!(
            cluster.script(&["start"]),
            "kafka-cluster.sh start failed (see {}/node*/logs)",
            cluster.home.display()
        );
        cluster
    }

    /// The bootstrap servers: every node.
    pub fn brokers(&self) -> String {
        (0..3)
            .map(|n| format!("127.0.0.1:{}", self.base + 2 * n))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Runs `scripts/kafka-cluster.sh <args>` for this cluster; whether it succeeded.
    pub fn script(&self, args: &[&str]) -> bool {
        Command::new(repo().join("scripts/kafka-cluster.sh"))
            .args(args)
            .env("KAFKA_HOME_DIR", &self.home)
            .env("KAFKA_CLUSTER_PORT", self.base.to_string())
            .env_remove("KAFKA_PORT")
            .env_remove("KAFKA_CONTROLLER_PORT")
            .status()
            .is_ok_and(|status| status.success())
    }

    /// Runs `kafka-cluster.sh <command> <node>`, failing the test if it fails.
    pub fn node(&self, command: &str, node: i32) {
        let node = node.to_string();
        assert!(
            self.script(&[command, &node]),
            "kafka-cluster.sh {command} {node} failed (see {}/node{node}/logs)",
            self.home.display()
        );
    }

    /// Every partition of every topic (internal ones too), as a node that answers sees it.
    pub fn partitions(&self) -> Option<Vec<PartitionState>> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .create()
            .unwrap();
        let metadata = consumer.fetch_metadata(None, Duration::from_secs(5)).ok()?;
        let mut partitions = Vec::new();
        for topic in metadata.topics() {
            for partition in topic.partitions() {
                partitions.push(PartitionState {
                    topic: topic.name().to_string(),
                    partition: partition.id(),
                    leader: partition.leader(),
                    replicas: partition.replicas().to_vec(),
                    isr: partition.isr().to_vec(),
                });
            }
        }
        Some(partitions)
    }

    /// Partitions led by each node.
    pub fn leaders(&self) -> BTreeMap<i32, usize> {
        let mut leaders = BTreeMap::new();
        for partition in self.partitions().unwrap_or_default() {
            *leaders.entry(partition.leader).or_default() += 1;
        }
        leaders
    }

    /// Waits until `condition` holds of the partitions (checking every 100 ms); how long that
    /// took. Fails the test naming `what` after `timeout`.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        condition: impl Fn(&[PartitionState]) -> bool,
    ) -> Duration {
        let started = Instant::now();
        loop {
            if let Some(partitions) = self.partitions()
                && !partitions.is_empty()
                && condition(&partitions)
            {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}: {:?}",
                self.partitions()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.script(&["reset"]) {
            eprintln!(
                "could not reset the test cluster in {}",
                self.home.display()
            );
        }
    }
}
