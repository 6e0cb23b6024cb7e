//! [`LoadReport`]: the outcome of a load run, and its one-line summary.

use hdrhistogram::Histogram;
use serde::Serialize;

/// The outcome of a load run.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// `open` (fixed rate) or `closed` (fixed number of clients).
    pub mode: &'static str,
    /// Target rate, requests/s (open loop).
    pub target_rate: Option<f64>,
    /// Concurrent clients (closed loop).
    pub clients: Option<usize>,
    /// Requests posted.
    pub sent: u64,
    /// Requests answered with a 2xx status.
    pub accepted: u64,
    /// Requests whose last done record arrived.
    pub completed: u64,
    /// Posts that failed or got another status.
    pub errors: u64,
    /// Requests posted per second while sending.
    pub achieved_rate: f64,
    /// Requests accepted per second while sending.
    pub accepted_rate: f64,
    /// Requests completed per second, from the start to the last completion.
    pub completed_rate: f64,
    /// Latency to the last done record (from the due time in open loop, from the send in
    /// closed loop), in microseconds: median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
    /// Latency to the HTTP answer, median, microseconds.
    pub answer_p50_us: u64,
    /// Latency to the HTTP answer, 99th percentile.
    pub answer_p99_us: u64,
    /// CPU seconds (user + system) the load generator's process used over the run.
    pub cpu_seconds: f64,
    /// The same as a share of one core over the run's wall time.
    pub cpu_cores: f64,
    /// Wall time of the whole run (sending and settling), seconds.
    pub wall_seconds: f64,
}

impl LoadReport {
    /// One line for people.
    pub fn summary(&self) -> String {
        let load = match (self.target_rate, self.clients) {
            (_, Some(clients)) => format!("{clients} clients (closed loop)"),
            (rate, None) => format!("{:.0}/s target (open loop)", rate.unwrap_or(0.0)),
        };
        format!(
            "{load}: sent {} ({:.0}/s), accepted {} ({:.0}/s), completed {} ({:.0}/s), errors {}; \
             to the last done record p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms; \
             HTTP answer p50 {:.1} ms, p99 {:.1} ms; load generator CPU {:.2} s ({:.2} cores)",
            self.sent,
            self.achieved_rate,
            self.accepted,
            self.accepted_rate,
            self.completed,
            self.completed_rate,
            self.errors,
            ms(self.p50_us),
            ms(self.p99_us),
            ms(self.p999_us),
            ms(self.max_us),
            ms(self.answer_p50_us),
            ms(self.answer_p99_us),
            self.cpu_seconds,
            self.cpu_cores,
        )
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// The value at quantile `q` of `histogram`, 0 when it is empty.
pub(super) fn quantile(histogram: &Histogram<u64>, q: f64) -> u64 {
    if histogram.is_empty() {
        0
    } else {
        histogram.value_at_quantile(q)
    }
}
