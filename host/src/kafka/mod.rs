//! Kafka I/O: client settings, topic creation, publishing with acknowledgement, reading a
//! partition to its end, tailing.

mod admin;
mod clients;
mod publish;
mod read;
pub mod tail;

pub use admin::{ensure_changelog, ensure_compacted, ensure_topics};
pub use clients::{admin_config, consumer_config, producer_config, transactional_producer_config};
pub use publish::{
    Delivery, FailedDelivery, OutRecord, acknowledged, enqueue, failed_deliveries, publish_all,
    refused_for_good, unacknowledged,
};
pub use read::{
    Watermarks, committed_reader, for_each_committed, for_each_committed_since, partition_count,
    watermarks,
};
