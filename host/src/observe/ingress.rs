//! Events of the HTTP server: answered requests, and ingress requests answered from the
//! idempotency record.

use std::time::Duration;

use super::HostEvent;
use super::catalogue;

/// The HTTP server answered a request.
pub struct RequestAnswered<'a> {
    /// The route's path template (e.g. `/orders`).
    pub route: &'a str,
    /// The request's method.
    pub method: &'a str,
    /// The answer's status.
    pub status: u16,
    /// How long answering took.
    pub took: Duration,
}

impl HostEvent for RequestAnswered<'_> {
    fn emit(self) {
        let (route, method) = (self.route.to_string(), self.method.to_string());
        metrics::counter!(catalogue::HTTP_REQUESTS, "route" => route.clone(),
            "method" => method.clone(), "status" => self.status.to_string())
        .increment(1);
        metrics::histogram!(catalogue::HTTP_REQUEST_SECONDS, "route" => route, "method" => method)
            .record(self.took.as_secs_f64());
    }
}

/// An ingress request carried an id accepted before: answered as before (same body) or
/// refused with `409` (another body).
pub struct RepeatRequest<'a> {
    /// The route's path template.
    pub route: &'a str,
    /// The id's stage key.
    pub key: &'a str,
    /// Whether its body differs from the accepted one.
    pub conflict: bool,
}

impl HostEvent for RepeatRequest<'_> {
    fn emit(self) {
        let name = if self.conflict {
            tracing::info!(route = %self.route, key = %self.key,
                "request repeats an accepted id with another body: refused with 409");
            catalogue::INGRESS_CONFLICTS
        } else {
            tracing::debug!(route = %self.route, key = %self.key, "repeat of an accepted request: answered as before");
            catalogue::INGRESS_REPEATS
        };
        metrics::counter!(name, "route" => self.route.to_string()).increment(1);
    }
}

/// The exactly-once ingress ended a transaction carrying a group of requests.
pub struct IngressCommitted {
    /// Which of the ingress's producers committed it.
    pub producer: usize,
    /// Requests in the transaction.
    pub requests: usize,
    /// Whether it committed.
    pub committed: bool,
    /// How long committing took.
    pub took: Duration,
}

impl HostEvent for IngressCommitted {
    fn emit(self) {
        tracing::debug!(
            producer = self.producer,
            requests = self.requests,
            committed = self.committed,
            commit_ms = self.took.as_secs_f64() * 1000.0,
            "ingress transaction ended"
        );
        metrics::histogram!(catalogue::INGRESS_COMMIT_SECONDS).record(self.took.as_secs_f64());
    }
}
