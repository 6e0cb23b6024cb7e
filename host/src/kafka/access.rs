//! The first contact with the cluster: credentials or TLS settings the brokers refuse are one
//! clear error at once, instead of every client retrying (and logging) forever.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use super::clients::{KafkaClients, Role};

/// How long [`check_access`] waits for the brokers before letting start-up go on (a cluster
/// that is down is not a configuration error: clients reconnect when it is back).
pub const ACCESS_PATIENCE: Duration = Duration::from_secs(15);

/// Why the brokers refused us, when they did.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// SASL authentication failed: wrong user name, password or mechanism.
    #[error(
        "Kafka at {brokers} refused the credentials (SASL authentication failed): {reason}; \
         check sasl.mechanism, sasl.username and sasl.password in [kafka]"
    )]
    Authentication {
        /// `kafka.brokers`.
        brokers: String,
        /// librdkafka's words.
        reason: String,
    },
    /// The TLS handshake failed: the brokers' certificate is not trusted, or TLS is not
    /// spoken on that port.
    #[error(
        "cannot open a TLS connection to Kafka at {brokers}: {reason}; check security.protocol, \
         ssl.ca.location and the broker address in [kafka]"
    )]
    Tls {
        /// `kafka.brokers`.
        brokers: String,
        /// librdkafka's words.
        reason: String,
    },
}

/// Remembers the first authentication or TLS failure librdkafka reports.
#[derive(Default)]
struct Watch {
    refused: Mutex<Option<(RDKafkaErrorCode, String)>>,
}

impl Watch {
    fn refused(&self) -> Option<(RDKafkaErrorCode, String)> {
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ClientContext for Watch {
    fn error(&self, error: KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            Some(code @ (RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SSL)) => {
                self.refused
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert_with(|| (code, reason.to_string()));
            }
            _ => tracing::debug!(%error, reason, "Kafka access check"),
        }
    }
}

impl ConsumerContext for Watch {}

/// Connects to the brokers and asks for metadata, within `patience`. Fails at once when the
/// brokers refuse the credentials or the TLS handshake; when they just do not answer in
/// time, logs a warning and returns `Ok` (clients reconnect once the cluster is back).
/// Blocking: call it off the async threads.
pub fn check_access(clients: &KafkaClients, patience: Duration) -> anyhow::Result<()> {
    let watch = Watch::default();
    let client: BaseConsumer<Watch> = clients
        .client(Role::Admin)
        .create_with_context(watch)
        .map_err(|error| anyhow::anyhow!("cannot create a Kafka client: {error}"))?;
    let deadline = Instant::now() + patience;
    loop {
        let answer = client.fetch_metadata(None, Duration::from_millis(500));
        // Errors reach the context only when the client is polled.
        let _ = client.poll(Duration::from_millis(100));
        if let Some((code, reason)) = client.context().refused() {
            let brokers = clients.brokers().to_string();
            return Err(match code {
                RDKafkaErrorCode::SSL => AccessError::Tls { brokers, reason },
                _ => AccessError::Authentication { brokers, reason },
            }
            .into());
        }
        match answer {
            Ok(_) => return Ok(()),
            Err(error) if Instant::now() >= deadline => {
                tracing::warn!(
                    brokers = clients.brokers(),
                    %error,
                    "Kafka does not answer yet; starting anyway, clients reconnect when it is back"
                );
                return Ok(());
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_cluster_is_not_an_access_error() {
        // Nothing listens on port 1: no refusal, just no answer within the patience.
        let clients = KafkaClients::plain("127.0.0.1:1");
        let started = Instant::now();
        check_access(&clients, Duration::from_millis(700)).unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
