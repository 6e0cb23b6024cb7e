//! Fault injection for the host's own tests (never set it in production): a consumer that
//! silently stops fetching, the way a member stuck outside its group after a broker outage
//! looks from inside the stage (no error, no records), which cannot be made to happen on demand.
//!
//! `STAGEHOST_FAULT_SILENT_PAUSE=<stage>:<records>`: once the first incarnation of `<stage>` in
//! this process has consumed `<records>` records, it pauses every partition it owns without a
//! word. Only the stage's watchdog can notice; the rebuilt stage runs normally.

use std::sync::atomic::{AtomicBool, Ordering};

use rdkafka::consumer::Consumer;

use super::positions::StageConsumer;

/// The environment variable that asks for the fault.
pub const SILENT_PAUSE_VARIABLE: &str = "STAGEHOST_FAULT_SILENT_PAUSE";

/// Whether the fault was injected already in this process.
static INJECTED: AtomicBool = AtomicBool::new(false);

/// A silent pause waiting to be injected into one stage.
#[derive(Debug)]
pub struct SilentPause {
    after: u64,
    consumed: u64,
}

impl SilentPause {
    /// The fault for `stage`, if the environment asks for it and it was not injected yet.
    pub fn from_env(stage: &str) -> Option<Self> {
        let wanted = std::env::var(SILENT_PAUSE_VARIABLE).ok()?;
        let (name, after) = wanted.split_once(':')?;
        if name != stage || INJECTED.load(Ordering::Relaxed) {
            return None;
        }
        Some(Self {
            after: after.parse().ok()?,
            consumed: 0,
        })
    }

    /// The stage consumed `records` more records: pauses its partitions once enough were.
    pub fn consumed(&mut self, consumer: &StageConsumer, records: usize) {
        self.consumed += records as u64;
        if self.consumed < self.after || INJECTED.swap(true, Ordering::Relaxed) {
            return;
        }
        if let Ok(owned) = consumer.assignment() {
            tracing::warn!(
                partitions = owned.count(),
                "fault injection ({SILENT_PAUSE_VARIABLE}): pausing the stage's partitions silently"
            );
            consumer.pause(&owned).ok();
        }
    }
}
