//! The two ways of sending: open loop (requests due at a fixed rate whatever the answers'
//! speed) and closed loop (N clients, each sending its next request when the previous one is
//! answered).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::Mutex;

use super::done::{Tracker, histogram, record};
use super::request::RequestTemplate;

/// What was sent and how it was answered.
pub struct Sent {
    /// Requests sent.
    pub sent: u64,
    /// Requests answered with a 2xx status.
    pub accepted: u64,
    /// Requests that failed or got another status.
    pub errors: u64,
    /// From the start to the last request sent (open loop) or answered (closed loop).
    pub sending: Duration,
    /// Time to the HTTP answer (from the due time in open loop), microseconds.
    pub answers: Histogram<u64>,
}

/// Everything a sender needs.
pub struct Sender {
    /// The HTTP client (pooled).
    pub client: reqwest::Client,
    /// URL and body of each request.
    pub requests: RequestTemplate,
    /// The `content-type` header of each request.
    pub content_type: String,
    /// Where requests are expected and completed.
    pub tracker: Arc<Tracker>,
    /// Prefix of request ids; request `i` is `<prefix>-<i>`.
    pub id_prefix: String,
    accepted: AtomicU64,
    errors: AtomicU64,
    answers: Mutex<Histogram<u64>>,
}

impl Sender {
    /// A sender with nothing sent yet.
    pub fn new(
        client: reqwest::Client,
        requests: RequestTemplate,
        content_type: String,
        tracker: Arc<Tracker>,
        id_prefix: String,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            client,
            requests,
            content_type,
            tracker,
            id_prefix,
            accepted: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            answers: Mutex::new(histogram()?),
        })
    }

    /// Sends request `i`, whose latency counts from `since`; true when it got an answer
    /// (any status), false when it did not reach the server.
    async fn send(&self, i: u64, since: Instant) -> bool {
        let id = format!("{}-{i}", self.id_prefix);
        self.tracker.expect(&id, since);
        let (url, body) = self.requests.render(&id);
        let response = self
            .client
            .post(url)
            .header("content-type", &self.content_type)
            .body(body)
            .send()
            .await;
        let answered = Instant::now();
        record(&mut *self.answers.lock().await, answered - since);
        match response {
            Ok(response) if response.status().is_success() => {
                self.accepted.fetch_add(1, Relaxed);
                true
            }
            Ok(_) => {
                self.errors.fetch_add(1, Relaxed);
                true
            }
            Err(_) => {
                self.errors.fetch_add(1, Relaxed);
                false
            }
        }
    }

    /// Requests accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Relaxed)
    }

    async fn outcome(&self, sent: u64, sending: Duration) -> Sent {
        Sent {
            sent,
            accepted: self.accepted(),
            errors: self.errors.load(Relaxed),
            sending,
            answers: self.answers.lock().await.clone(),
        }
    }
}

/// Open loop: request `i` is due at `start + i / rate` and its latencies count from that due
/// time, not from when it was actually sent, so a stalled system cannot hide its stall by
/// slowing the generator down (no coordinated omission).
pub async fn open_loop(sender: Arc<Sender>, rate: f64, duration: Duration) -> Sent {
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let mut posts = tokio::task::JoinSet::new();
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let sender = sender.clone();
        posts.spawn(async move { sender.send(i, due).await });
        // Reap finished posts so the set stays small.
        while posts.try_join_next().is_some() {}
    }
    let sending = start.elapsed();
    while posts.join_next().await.is_some() {}
    sender.outcome(total, sending).await
}

/// Closed loop: `clients` clients, each sending its next request as soon as the previous one
/// is answered, until `duration` has passed; latencies count from each send.
pub async fn closed_loop(sender: Arc<Sender>, clients: usize, duration: Duration) -> Sent {
    let start = Instant::now();
    let end = start + duration;
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (sender, next) = (sender.clone(), next.clone());
        tasks.spawn(async move {
            while Instant::now() < end {
                let i = next.fetch_add(1, Relaxed);
                let sent_at = Instant::now();
                if !sender.send(i, sent_at).await {
                    // Nothing answered (refused, timed out): do not spin on a dead server.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    // Until the last answer: every request sent was answered (or failed) by then.
    sender.outcome(next.load(Relaxed), start.elapsed()).await
}
