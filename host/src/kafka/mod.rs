//! Kafka I/O: the one front door for clients ([`KafkaClients`]), the start-up access check,
//! topic creation, publishing with acknowledgement, reading a partition to its end, tailing.

mod access;
mod admin;
mod clients;
mod lag;
mod limits;
mod partitioner;
mod publish;
mod read;
pub mod tail;
mod transaction;

pub use access::{ACCESS_PATIENCE, AccessError, check_access};
pub use admin::{
    ensure_changelog, ensure_compacted, ensure_partitions, ensure_topics, refuse_lost_topic,
};
pub use clients::{DEFAULT_BROKERS, KafkaClients, Role};
pub use lag::{GroupLag, LagPeeker, PartitionLag};
pub use limits::RecordLimits;
pub use partitioner::{Partitioner, crc32};
pub use publish::{
    Ack, Delivery, FailedDelivery, OutRecord, RecordQueue, enqueue, failed_acks, publish_all,
    refused_for_good,
};
pub use read::{
    Watermarks, cluster_id, committed_payload_at, committed_reader, existing_topics,
    for_each_committed, for_each_committed_in, for_each_committed_since, partition_count,
    partition_count_of_new, watermarks,
};
#[cfg(test)]
pub(crate) use transaction::fake;
pub use transaction::{Transaction, TransactionalProducer, TxnError, TxnErrorKind};
