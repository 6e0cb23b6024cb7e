//! Knowing when a request is done: a reader of the done topic (from its end as of the start)
//! matches each record to the request it names, and the request's last expected record
//! completes it and records its latency.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::request::Matcher;
use crate::kafka::KafkaClients;

/// Requests in flight and what completed, shared by the senders and the reader.
pub struct Tracker {
    /// How a done record names its request.
    matcher: Matcher,
    /// Done records that complete one request.
    per_request: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    /// Request id → (when its latency starts, done records seen).
    in_flight: HashMap<String, (Instant, usize)>,
    /// Latency to the last done record, microseconds.
    latency: Histogram<u64>,
    completed: u64,
    last_completion: Option<Instant>,
}

/// A latency histogram from 1 µs to 10 minutes, 3 significant digits.
pub fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000, 3).context("histogram bounds")
}

/// Records `elapsed` in `histogram` as microseconds (at least 1).
pub fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let micros = u64::try_from(elapsed.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    histogram.saturating_record(micros);
}

impl Tracker {
    /// An empty tracker.
    pub fn new(matcher: Matcher, per_request: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(per_request > 0, "--done-per-request must be at least 1");
        Ok(Self {
            matcher,
            per_request,
            inner: Mutex::new(Inner {
                in_flight: HashMap::new(),
                latency: histogram()?,
                completed: 0,
                last_completion: None,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Request `id` is on its way; its latency counts from `since`.
    pub fn expect(&self, id: &str, since: Instant) {
        self.lock().in_flight.insert(id.to_string(), (since, 0));
    }

    /// A done record (its key and payload) was read at `now`; true when it completed its
    /// request.
    pub fn saw(&self, key: Option<&[u8]>, payload: Option<&[u8]>, now: Instant) -> bool {
        let Some(id) = self.matcher.request_id(key, payload) else {
            return false;
        };
        let mut inner = self.lock();
        let Some((since, seen)) = inner.in_flight.get_mut(&id) else {
            return false;
        };
        *seen += 1;
        if *seen < self.per_request {
            return false;
        }
        let latency = now.saturating_duration_since(*since);
        inner.in_flight.remove(&id);
        record(&mut inner.latency, latency);
        inner.completed += 1;
        inner.last_completion = Some(now);
        true
    }

    /// Requests completed so far.
    pub fn completed(&self) -> u64 {
        self.lock().completed
    }

    /// The latency histogram and when the last request completed.
    pub fn finish(&self) -> (Histogram<u64>, Option<Instant>) {
        let inner = self.lock();
        (inner.latency.clone(), inner.last_completion)
    }
}

/// A consumer of `topic`'s every partition from its end as of now.
pub fn done_consumer(kafka: &KafkaClients, topic: &str) -> anyhow::Result<StreamConsumer> {
    let consumer: StreamConsumer = kafka
        .reader(&format!("stagehost-load-{}", uuid::Uuid::new_v4()))
        .create()
        .context("cannot create the done topic's reader")?;
    let partitions = crate::kafka::partition_count(kafka, topic)
        .with_context(|| format!("cannot read the partitions of the done topic {topic}"))?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        // The end as of now: `Offset::End` would be resolved at the first fetch, which may
        // come after the first done records.
        let (_, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .with_context(|| format!("cannot read the end of {topic}/{partition}"))?;
        assignment.add_partition_offset(topic, partition, Offset::Offset(high))?;
    }
    consumer.assign(&assignment)?;
    Ok(consumer)
}

/// Reads done records into `tracker` until aborted.
pub async fn read(consumer: StreamConsumer, tracker: std::sync::Arc<Tracker>) {
    loop {
        let Ok(message) = consumer.recv().await else {
            continue;
        };
        tracker.saw(message.key(), message.payload(), Instant::now());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_last_expected_record_completes_a_request_once() {
        let tracker = Tracker::new(Matcher::new(Some("ticket_id")), 2).unwrap();
        let start = Instant::now();
        tracker.expect("t-1", start);
        let record = br#"{"ticket_id": "t-1"}"#;
        let later = start + Duration::from_millis(5);
        assert!(!tracker.saw(None, Some(record), later));
        assert!(!tracker.saw(None, Some(br#"{"ticket_id": "other"}"#), later));
        assert!(tracker.saw(None, Some(record), later));
        // A repeat after completion is not counted again.
        assert!(!tracker.saw(None, Some(record), later));
        assert_eq!(tracker.completed(), 1);
        let (latency, last) = tracker.finish();
        assert_eq!(last, Some(later));
        assert!(latency.value_at_quantile(0.5) >= 4_990);
        assert!(Tracker::new(Matcher::Key, 0).is_err());
    }
}
