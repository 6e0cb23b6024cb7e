//! The store's background care while the host runs: reopening it after a failure even when
//! no call comes (an idle ingress would otherwise stay unready for good), and forgetting
//! records older than the retention.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::handle::{LocalStore, REOPEN_EVERY};

/// How often the store forgets records older than the retention.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Reopens `store` whenever it failed (every [`REOPEN_EVERY`] until it works) and prunes it
/// every [`PRUNE_EVERY`], until `stop` turns; then lets calls that wait for it give up.
pub async fn upkeep(store: LocalStore, retention: Duration, mut stop: watch::Receiver<bool>) {
    let mut next_prune = Instant::now();
    loop {
        if !store.is_open() {
            let reopening = store.clone();
            tokio::task::spawn_blocking(move || reopening.reopen_if_due())
                .await
                .ok();
        } else if Instant::now() >= next_prune {
            next_prune = Instant::now() + PRUNE_EVERY;
            let pruning = store.clone();
            match tokio::task::spawn_blocking(move || pruning.prune(retention)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(removed)) => tracing::info!(removed, "pruned expired idempotency records"),
                Ok(Err(error)) => {
                    // Tried again at the next prune; the store reports its failure itself.
                    tracing::warn!(%error, "pruning the idempotency store failed");
                }
                Err(_) => {}
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(REOPEN_EVERY) => {}
            _ = stop.changed() => break,
        }
    }
    store.stop_waiting();
}
