//! Stop signals of `stagehost run`: SIGINT and SIGTERM, handled from the first thing it does.

use std::time::{Duration, Instant};

/// SIGINT and SIGTERM, handled from the first thing `stagehost run` does.
///
/// Before the handlers are installed a SIGTERM kills the process (the default action); after,
/// a stop signal is remembered, and [`stagehost::app::run`] stops as soon as it has started
/// what it was starting (compiling plugins, connecting to Kafka): everything that started is
/// stopped in order and the process exits with status 0. Installing the SIGINT handler also
/// re-enables a SIGINT the parent ignored: a shell script's `stagehost run &`
/// inherits SIGINT as ignored, and Ctrl-C or `kill -INT` would otherwise do nothing.
///
/// Further signals while stopping are logged and ignored (a terminal's Ctrl-C and a script's
/// `kill -TERM` often arrive together), except one that comes [`FORCE_STOP_AFTER`] or more
/// after the first: it ends the process at once, for a stop that hangs (exit status 128 +
/// the signal's number).
#[derive(Clone)]
pub struct StopSignals {
    /// Becomes true at the first stop signal.
    requested: tokio::sync::watch::Receiver<bool>,
}

/// How long after the first stop signal another one ends the process without a clean stop.
const FORCE_STOP_AFTER: Duration = Duration::from_secs(5);

impl StopSignals {
    /// Installs the handlers (inside the runtime) and starts the task that watches them.
    pub fn install() -> anyhow::Result<Self> {
        let (requested_tx, requested) = tokio::sync::watch::channel(false);
        let mut signals = Signals::install()?;
        tracing::debug!("stop signals handled");
        tokio::spawn(async move {
            let mut first: Option<Instant> = None;
            while let Some((name, number)) = signals.next().await {
                match first {
                    None => {
                        first = Some(Instant::now());
                        requested_tx.send_replace(true);
                        tracing::info!(
                            signal = name,
                            "stop requested; stopping once what is starting has started"
                        );
                    }
                    Some(at) if at.elapsed() >= FORCE_STOP_AFTER => {
                        tracing::error!(
                            signal = name,
                            "second stop signal; exiting now without a clean stop"
                        );
                        std::process::exit(128 + number);
                    }
                    Some(_) => {
                        tracing::info!(
                            signal = name,
                            "already stopping; a signal {FORCE_STOP_AFTER:?} after the first \
                             exits at once"
                        )
                    }
                }
            }
        });
        Ok(Self { requested })
    }

    /// Whether a stop signal came.
    pub fn is_requested(&self) -> bool {
        *self.requested.borrow()
    }

    /// Completes at the first stop signal (at once if one came already).
    pub async fn requested(mut self) {
        // An error means the watcher is gone: the signals can no longer be seen, so wait on.
        if self.requested.wait_for(|&stop| stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The installed SIGINT and SIGTERM handlers.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use anyhow::Context;
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
                terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// The next signal's name and number; `None` once signals can no longer be received.
    async fn next(&mut self) -> Option<(&'static str, i32)> {
        #[cfg(unix)]
        {
            tokio::select! {
                Some(()) = self.interrupt.recv() => Some(("SIGINT", 2)),
                Some(()) = self.terminate.recv() => Some(("SIGTERM", 15)),
                else => None,
            }
        }
        #[cfg(not(unix))]
        tokio::signal::ctrl_c().await.ok().map(|()| ("Ctrl-C", 2))
    }
}
