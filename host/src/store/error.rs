//! What can go wrong with the store, worded for the operator who has to fix it.

use std::path::PathBuf;
use std::time::Duration;

/// A failed store operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state directory cannot be created.
    #[error(
        "cannot create the state directory {dir}: {source}; check state.dir and its permissions"
    )]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The store cannot be opened at start-up.
    #[error(
        "cannot open the local store {path}: {cause} (is another stagehost using this state.dir? is the disk full or read-only?)"
    )]
    Open {
        /// The store's folder.
        path: PathBuf,
        /// What `fjall` reported.
        cause: String,
    },
    /// An operation failed on the disk: the store has been closed and is reopened from disk
    /// once the state directory accepts writes again.
    #[error(
        "the local store {path} failed: {cause}; it is reopened from disk once state.dir accepts writes again (free space there, or fix its permissions)"
    )]
    Failed {
        /// The store's folder.
        path: PathBuf,
        /// What `fjall` reported.
        cause: String,
    },
    /// The store failed earlier and has not been reopened yet: nothing is read or written.
    #[error(
        "the local store {path} is unavailable for {for_secs:.1}s ({cause}); it is reopened from disk once state.dir accepts writes again (free space there, or fix its permissions)",
        for_secs = down_for.as_secs_f64()
    )]
    Unavailable {
        /// The store's folder.
        path: PathBuf,
        /// Why it failed, or why it cannot be reopened yet.
        cause: String,
        /// How long it has been unavailable.
        down_for: Duration,
    },
    /// A stored ingress answer is not valid JSON (a bug, or a damaged store).
    #[error("the stored answer to request {key} cannot be read: {source}")]
    Undecodable {
        /// The request key.
        key: String,
        /// Why.
        source: serde_json::Error,
    },
}

/// A `fjall` error in plain words: `fjall` prints its variants' debug form.
pub(super) fn describe(error: &fjall::Error) -> String {
    match error {
        fjall::Error::Io(io) => io.to_string(),
        fjall::Error::Storage(fjall::LsmError::Io(io)) => io.to_string(),
        fjall::Error::Poisoned => {
            "an earlier write to disk failed, and fjall refuses every write after that (poisoned)"
                .into()
        }
        fjall::Error::Locked => "the database is locked by another handle".into(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fjall_errors_read_plainly() {
        let full = std::io::Error::from_raw_os_error(28);
        assert_eq!(
            describe(&fjall::Error::Io(full)),
            "No space left on device (os error 28)"
        );
        assert!(describe(&fjall::Error::Poisoned).contains("poisoned"));
        let unavailable = StoreError::Unavailable {
            path: "/s/store".into(),
            cause: "No space left on device (os error 28)".into(),
            down_for: Duration::from_millis(2500),
        };
        assert_eq!(
            unavailable.to_string(),
            "the local store /s/store is unavailable for 2.5s (No space left on device (os error 28)); \
             it is reopened from disk once state.dir accepts writes again (free space there, or fix its permissions)"
        );
    }
}

/// The local store came back from a failure as another database: its folder lost its files
/// while the host ran (deleted, a disk swapped, a volume remounted) or was replaced with
/// another's. Nothing cached about it holds any more (which copies are caught up, which ids are
/// known), so the host restarts its pipeline in process, and every copy is caught up from its
/// topic before its stage processes again.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the local store {path} came back as another database (state.dir lost its files while the host ran, or was replaced); restarting the pipeline so that every copy of a topic is caught up again"
)]
pub struct StoreReplaced {
    /// The store's folder.
    pub path: PathBuf,
}
