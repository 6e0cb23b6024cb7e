//! Development mode: watch every stage's plugin file and hot-swap it when it changes (after
//! `cargo build`), through the same checks as `stagehost plugin swap`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::admin::Slots;

/// How often the files are looked at.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &PathBuf) -> Option<Stamp> {
    let metadata = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: metadata.modified().ok(),
        len: metadata.len(),
    })
}

/// Polls the plugin files of `slots` (stage → file) until `stop`; a file that changed and
/// then stayed the same for one poll (the build finished writing it) is swapped in.
pub(super) async fn watch_plugins(
    slots: Slots,
    files: HashMap<String, PathBuf>,
    mut stop: watch::Receiver<bool>,
) {
    let mut seen: HashMap<String, Option<Stamp>> = files
        .iter()
        .map(|(stage, path)| (stage.clone(), stamp(path)))
        .collect();
    let mut changed: HashMap<String, Option<Stamp>> = HashMap::new();
    tracing::info!(
        files = files.len(),
        "watching plugin files for changes (dev mode)"
    );
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL_EVERY) => {}
            _ = stop.changed() => return,
        }
        for (stage, path) in &files {
            let now = stamp(path);
            if changed.get(stage) == Some(&now) {
                // Unchanged since the last poll: the write is complete.
                changed.remove(stage);
                seen.insert(stage.clone(), now);
                let Some(slot) = slots.get(stage).cloned() else {
                    continue;
                };
                let file = path.clone();
                match tokio::task::spawn_blocking(move || slot.swap_file(&file)).await {
                    Ok(Ok(outcome)) if outcome.changed => {
                        tracing::info!(stage, version = %outcome.version, previous = %outcome.previous,
                            "plugin file changed; swapped")
                    }
                    // Refusals are logged by the slot; the old version keeps running.
                    Ok(_) | Err(_) => {}
                }
            } else if seen.get(stage) != Some(&now) {
                changed.insert(stage.clone(), now);
            }
        }
    }
}
