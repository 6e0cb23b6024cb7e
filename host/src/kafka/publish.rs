//! Publishing through the one shared producer: send a whole batch, wait until every record
//! is acknowledged, and send again whatever failed (ids are stable, so repeats are harmless).

use std::time::Duration;

use std::future::Future;

use futures::FutureExt;
use futures::future::join_all;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use crate::event::headers::RecordHeaders;

/// One record to publish.
#[derive(Debug, Clone)]
pub struct OutRecord {
    /// Destination topic.
    pub topic: String,
    /// Destination partition; `None` lets the partitioner pick by key.
    pub partition: Option<i32>,
    /// Record key.
    pub key: Option<String>,
    /// JSON body; `None` for a tombstone.
    pub payload: Option<Vec<u8>>,
    /// CloudEvents and extra headers.
    pub headers: RecordHeaders,
    /// The event id (also in the `ce_id` header), for logs.
    pub id: String,
}

/// Where an acknowledged record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

impl OutRecord {
    /// The record as librdkafka takes it (its headers built into librdkafka's list here, once
    /// per send).
    pub fn to_future_record(&self) -> FutureRecord<'_, str, [u8]> {
        let mut record = FutureRecord::to(&self.topic);
        if !self.headers.is_empty() {
            record = record.headers(self.headers.to_kafka());
        }
        if let Some(payload) = &self.payload {
            record = record.payload(payload.as_slice());
        }
        if let Some(key) = &self.key {
            record = record.key(key.as_str());
        }
        if let Some(partition) = self.partition {
            record = record.partition(partition);
        }
        record
    }
}

/// A queued record's acknowledgement: where it landed, or the broker's error code (when there
/// is one) and the error in words.
pub type Ack = std::pin::Pin<
    Box<dyn Future<Output = Result<Delivery, (Option<RDKafkaErrorCode>, String)>> + Send + 'static>,
>;

/// Where records are queued without waiting for their acknowledgement.
pub trait RecordQueue {
    /// Queues `record` (waiting only while the local queue is full).
    fn queue(&self, record: &OutRecord) -> impl Future<Output = KafkaResult<Ack>> + Send;
}

impl RecordQueue for FutureProducer {
    async fn queue(&self, record: &OutRecord) -> KafkaResult<Ack> {
        let delivery = enqueue(self, record).await?;
        Ok(delivery
            .map(|result| match result {
                Ok(Ok(delivery)) => Ok(Delivery {
                    partition: delivery.partition,
                    offset: delivery.offset,
                }),
                Ok(Err((error, _))) => Err((error.rdkafka_error_code(), error.to_string())),
                Err(_) => Err((None, "the producer dropped a record".to_string())),
            })
            .boxed())
    }
}

/// Sends every record and waits for all acknowledgements. Records that fail are sent again
/// after a pause, until they succeed or `attempts` rounds have been made; where each landed,
/// or the last error.
pub async fn publish_all<Q: RecordQueue>(
    producer: &Q,
    records: &[OutRecord],
    attempts: u32,
) -> Result<Vec<Delivery>, String> {
    let mut deliveries: Vec<Option<Delivery>> = vec![None; records.len()];
    let mut last_error = String::new();
    for round in 0..attempts.max(1) {
        let waiting: Vec<usize> = (0..records.len())
            .filter(|&i| deliveries[i].is_none())
            .collect();
        if waiting.is_empty() {
            break;
        }
        if round > 0 {
            let pause = crate::backoff::jittered(
                Duration::from_millis(100),
                Duration::from_secs(10),
                round - 1,
            );
            tracing::warn!(failed = waiting.len(), error = %last_error, ?pause, "publishing again after failure");
            tokio::time::sleep(pause).await;
        }
        let mut queued = Vec::with_capacity(waiting.len());
        let mut acks = Vec::with_capacity(waiting.len());
        for &i in &waiting {
            match producer.queue(&records[i]).await {
                Ok(ack) => {
                    queued.push(i);
                    acks.push(ack);
                }
                Err(error) => {
                    last_error = format!("{} to {}: {error}", records[i].id, records[i].topic)
                }
            }
        }
        for (&i, result) in queued.iter().zip(join_all(acks).await) {
            match result {
                Ok(delivery) => deliveries[i] = Some(delivery),
                Err((_, error)) => {
                    last_error = format!("{} to {}: {error}", records[i].id, records[i].topic)
                }
            }
        }
    }
    deliveries
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or(last_error)
}

/// Queues one record without waiting for its acknowledgement (waiting only while the local
/// queue is full); used inside transactions.
pub async fn enqueue(
    producer: &FutureProducer,
    record: &OutRecord,
) -> Result<DeliveryFuture, KafkaError> {
    loop {
        match producer.send_result(record.to_future_record()) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err((error, _)) => return Err(error),
        }
    }
}

/// A queued record that was not written: its position among the deliveries waited for, the
/// broker's (or librdkafka's) error code when there is one, and the error in words.
pub type FailedDelivery = (usize, Option<RDKafkaErrorCode>, String);

/// Waits for every acknowledgement; the records that were not written, by position.
pub async fn failed_acks(acks: Vec<Ack>) -> Vec<FailedDelivery> {
    join_all(acks)
        .await
        .into_iter()
        .enumerate()
        .filter_map(|(position, result)| result.err().map(|(code, error)| (position, code, error)))
        .collect()
}

/// Whether a record failed for good: the broker will refuse it however often it is sent (too
/// large for the topic, no permission to write the topic, rejected by a policy).
pub fn refused_for_good(code: Option<RDKafkaErrorCode>) -> bool {
    matches!(
        code,
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::PolicyViolation
                | RDKafkaErrorCode::InvalidRecord
        )
    )
}
