//! [`LocalStore`]: the shared handle to the store, and how it survives a failing disk.
//!
//! `fjall` treats a failed journal write (a full disk, an I/O error) as fatal: the database is
//! *poisoned* and refuses every later write with `Error::Poisoned`, even once the disk works
//! again; its background flush and compaction workers poison it the same way when they fail.
//! Its journal recovery, though, is built for crashes: reopening the folder truncates a torn
//! last batch and replays everything that was durable. So on the first failed operation the
//! store closes the database (dropping every handle releases its lock file), reports itself
//! unready, and refuses every call at once with [`StoreError::Unavailable`] until it is
//! reopened: at most once per [`REOPEN_EVERY`], and only after a probe file could be written
//! to `state.dir` (a database reopened on a still-full disk would only fail again).
//!
//! Nothing that was acknowledged is lost: a write returns `Ok` only after its batch was synced
//! (`fdatasync`), and only a batch that failed can be torn. A failed batch may still turn up
//! complete after the reopen (its bytes reached the file later); every writer here tolerates
//! that (a processed id recorded twice, an answer recorded though its request got `503`).
//!
//! Callers choose how long to wait for a failed store ([`LocalStore::patient`]): the ingress
//! not at all (its requests get `503` at once), at-least-once stages a while (they keep their
//! open work and go on when the store is back, instead of being rebuilt and reading it again).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::error::{StoreError, describe};
use super::keyspaces::{IngressRecord, Keyspaces, TableWrite};
use crate::health::Reporter;

/// Folder of the store inside `state.dir`.
const STORE_DIR: &str = "store";
/// The file written (and removed) in `state.dir` to check that it accepts writes again.
const PROBE_FILE: &str = ".store-probe";
/// Size of the probe: room for a few journal batches.
const PROBE_BYTES: usize = 256 * 1024;
/// Least time between two attempts to reopen a failed store.
pub const REOPEN_EVERY: Duration = Duration::from_secs(1);
/// How often a waiting caller looks whether the store is back.
const WAIT_STEP: Duration = Duration::from_millis(100);

/// Handle to the store; cheap to clone and safe to share between threads.
#[derive(Clone)]
pub struct LocalStore {
    shared: Arc<Shared>,
    /// How long a call waits for a failed store to be reopened before it fails; zero fails at
    /// once.
    patience: Duration,
}

struct Shared {
    /// `state.dir`, where the probe is written.
    dir: PathBuf,
    /// The database's folder.
    path: PathBuf,
    /// The open database, or why there is none.
    state: RwLock<State>,
    /// Where the store reports whether it works (`/readyz`), once the host gave it one.
    reporter: Mutex<Option<Reporter>>,
    /// Set when the host stops: waiting calls give up at once.
    closing: AtomicBool,
    /// Expiring tables and their retention, pruned with the rest.
    expiring: Mutex<HashMap<String, Duration>>,
    /// The identity of the database this store opened first (`None` while it could not be
    /// opened yet: the first database opened sets it).
    identity: Mutex<Option<String>>,
    /// Set when a reopened database turned out to be another one: the store stays closed. A
    /// watch channel, so that the host waits for it (`LocalStore::replacement`) instead of
    /// looking at a flag every 200 ms.
    replaced: watch::Sender<bool>,
    /// The Kafka cluster the store copies topics of, once known ([`LocalStore::open_for_cluster`]).
    cluster: Mutex<Option<String>>,
}

enum State {
    Open {
        keyspaces: Keyspaces,
        /// Counts reopenings, so that a failure seen on an older database does not close a
        /// newer one.
        generation: u64,
    },
    Down(Outage),
}

/// Why the store is closed, and how reopening it goes.
struct Outage {
    /// The failure that closed it.
    cause: String,
    /// When it failed.
    since: Instant,
    /// Why the last attempt to reopen it failed.
    not_reopened: Option<String>,
    /// When it was last tried (or when it failed).
    last_attempt: Instant,
    /// The generation that failed.
    generation: u64,
}

impl Outage {
    fn reason(&self) -> String {
        match &self.not_reopened {
            Some(why) => format!("{}; not reopened yet: {why}", self.cause),
            None => self.cause.clone(),
        }
    }
}

impl LocalStore {
    /// Opens (or creates) the store in `dir`. A disk that refuses writes (full, read-only,
    /// failing) does not stop the host: the store starts closed and unready, like a store that
    /// failed while running, and is opened once `state.dir` accepts writes again. Anything
    /// else (another stagehost holding the store, a damaged store) is an error.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(STORE_DIR);
        let mut identity = None;
        let state = match std::fs::create_dir_all(dir)
            .map_err(fjall::Error::Io)
            .and_then(|()| open_keyspaces(&path))
            .and_then(|keyspaces| {
                identity = Some(keyspaces.identity()?.0);
                Ok(keyspaces)
            }) {
            Ok(keyspaces) => State::Open {
                keyspaces,
                generation: 0,
            },
            Err(error) if is_disk_refusal(&error) => {
                let cause = describe(&error);
                tracing::error!(path = %path.display(), error = %cause,
                    "cannot open the local store; starting unready and opening it once state.dir accepts writes again");
                let now = Instant::now();
                State::Down(Outage {
                    cause: format!("cannot open it: {cause}"),
                    since: now,
                    not_reopened: None,
                    last_attempt: now,
                    generation: 0,
                })
            }
            Err(fjall::Error::Io(source)) if !path.exists() && !dir.exists() => {
                return Err(StoreError::CreateDir {
                    dir: dir.to_path_buf(),
                    source,
                });
            }
            Err(error) => {
                return Err(StoreError::Open {
                    path: path.clone(),
                    cause: describe(&error),
                });
            }
        };
        Ok(Self {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                path,
                state: RwLock::new(state),
                reporter: Mutex::new(None),
                closing: AtomicBool::new(false),
                expiring: Mutex::new(HashMap::new()),
                identity: Mutex::new(identity),
                replaced: watch::Sender::new(false),
                cluster: Mutex::new(None),
            }),
            patience: Duration::ZERO,
        })
    }

    /// Opens the store in `dir` as [`LocalStore::open`] does, for the Kafka cluster with id
    /// `cluster`. A store that holds the copies of another cluster's topics (a state dir moved
    /// to another cluster, or the cluster rebuilt) is moved aside to `store.cluster-<its
    /// cluster>` beside it and a new one is made, which every copy is caught up into from this
    /// cluster's topics: checkpoints are offsets of one cluster's partitions and mean nothing in
    /// another. A store that cannot be opened yet (a disk refusing writes) is bound when it can.
    pub fn open_for_cluster(dir: &Path, cluster: &str) -> Result<Self, StoreError> {
        let store = Self::open(dir)?;
        let other = match store.bind_to(cluster) {
            Ok(None) | Err(StoreError::Unavailable { .. }) => return Ok(store),
            Ok(Some(other)) => other,
            Err(error) => return Err(error),
        };
        let path = store.shared.path.clone();
        drop(store);
        let safe: String = other
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut aside = dir.join(format!("{STORE_DIR}.cluster-{safe}"));
        if aside.exists() {
            aside = dir.join(format!(
                "{STORE_DIR}.cluster-{safe}-{}",
                super::keyspaces::unix_ms(std::time::SystemTime::now())
            ));
        }
        std::fs::rename(&path, &aside).map_err(|source| StoreError::Open {
            path: path.clone(),
            cause: format!(
                "it holds the copies of Kafka cluster {other}, not of {cluster}, and cannot be moved aside to {}: {source}",
                aside.display()
            ),
        })?;
        tracing::warn!(path = %path.display(), aside = %aside.display(), was = %other, now = cluster,
            "the local store held copies of another Kafka cluster's topics; it was moved aside and every copy is caught up from this cluster's topics");
        let store = Self::open(dir)?;
        store.bind_to(cluster)?;
        Ok(store)
    }

    /// Binds the store to `cluster` (also when it is reopened later); the cluster it is bound
    /// to when that is another one.
    fn bind_to(&self, cluster: &str) -> Result<Option<String>, StoreError> {
        *self
            .shared
            .cluster
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(cluster.into());
        self.shared
            .attempt(&|keyspaces| keyspaces.bind_cluster(cluster))
    }

    /// The same store, with calls that wait up to `patience` for it to be reopened when it
    /// failed (trying to reopen it themselves), and repeat a write that failed once it is back.
    pub fn patient(&self, patience: Duration) -> Self {
        Self {
            shared: self.shared.clone(),
            patience,
        }
    }

    /// Reports the store's condition to `reporter` from now on (unready while it is failed).
    pub fn report_to(&self, reporter: Reporter) {
        match &*self.shared.read() {
            State::Open { .. } => reporter.ok(),
            State::Down(outage) => reporter.unready(unready_reason(&outage.reason())),
        }
        *self.shared.lock_reporter() = Some(reporter);
    }

    /// The database's folder.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Whether the store came back from a failure as another database (see
    /// [`super::StoreReplaced`]): it stays closed, and the host restarts its pipeline.
    pub fn was_replaced(&self) -> bool {
        *self.shared.replaced.borrow()
    }

    /// Completes once the store was replaced (see [`LocalStore::was_replaced`]); at once when
    /// it already was.
    pub async fn replacement(&self) {
        let mut replaced = self.shared.replaced.subscribe();
        // The sender lives as long as the store, which `self` borrows: this cannot fail.
        let _ = replaced.wait_for(|replaced| *replaced).await;
    }

    /// Whether the store works (it has not failed, or it was reopened since).
    pub fn is_open(&self) -> bool {
        matches!(&*self.shared.read(), State::Open { .. })
    }

    /// Tries to reopen a failed store from disk, unless it was tried less than
    /// [`REOPEN_EVERY`] ago; whether the store is open now. Blocks while it reopens.
    pub fn reopen_if_due(&self) -> bool {
        self.shared.reopen_if_due()
    }

    /// The host is stopping: calls waiting for a failed store give up now.
    pub fn stop_waiting(&self) {
        self.shared.closing.store(true, Ordering::Relaxed);
    }

    /// For each id, whether `stage` has already processed it.
    pub fn processed_among(&self, stage: &str, ids: &[&str]) -> Result<Vec<bool>, StoreError> {
        self.run(|keyspaces| keyspaces.processed_among(stage, ids))
    }

    /// Records that `stage` processed these ids, in one durable batch.
    pub fn mark_processed<'a>(
        &self,
        stage: &str,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), StoreError> {
        let ids: Vec<&str> = ids.into_iter().collect();
        self.run(|keyspaces| keyspaces.mark_processed(stage, ids.iter().copied()))
    }

    /// The recorded answer to ingress request `key`, if any.
    pub fn ingress_record(&self, key: &str) -> Result<Option<IngressRecord>, StoreError> {
        match self.run(|keyspaces| keyspaces.ingress_record(key))? {
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| StoreError::Undecodable {
                        key: key.to_string(),
                        source,
                    })
            }
            None => Ok(None),
        }
    }

    /// Records the answer to ingress request `key`.
    pub fn put_ingress_record(&self, key: &str, record: &IngressRecord) -> Result<(), StoreError> {
        self.put_ingress_records(&[(key.to_string(), record.clone())])
    }

    /// Records the answers to several ingress requests in one durable batch.
    pub fn put_ingress_records(
        &self,
        records: &[(String, IngressRecord)],
    ) -> Result<(), StoreError> {
        let encoded = records
            .iter()
            .map(|(key, record)| {
                serde_json::to_vec(record)
                    .map(|json| (key.as_str(), json))
                    .map_err(|source| StoreError::Undecodable {
                        key: key.clone(),
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.run(|keyspaces| keyspaces.put_ingress_records(&encoded))
    }

    /// Forgets everything recorded more than `retention` ago, and what expiring tables hold
    /// past their own retention; returns how many entries went.
    pub fn prune(&self, retention: Duration) -> Result<usize, StoreError> {
        let mut removed = self.run(|keyspaces| keyspaces.prune(retention))?;
        let tables: Vec<(String, Duration)> = self
            .shared
            .expiring
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(name, retention)| (name.clone(), *retention))
            .collect();
        for (name, retention) in tables {
            removed += self.run(|keyspaces| {
                keyspaces.table_prune(&name, &|value| super::stamp::kept(value, retention))
            })?;
        }
        Ok(removed)
    }

    /// Prunes table `name` with the others, forgetting values older than `retention`.
    pub(super) fn register_expiring(&self, name: &str, retention: Duration) {
        self.shared
            .expiring
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), retention);
    }

    pub(super) fn table_get(
        &self,
        name: &str,
        key: &[u8],
    ) -> Result<Option<fjall::Slice>, StoreError> {
        self.run(|keyspaces| keyspaces.table_get(name, key))
    }

    pub(super) fn table_apply(
        &self,
        name: &str,
        writes: &[TableWrite],
        checkpoint: Option<(i32, i64)>,
    ) -> Result<(), StoreError> {
        self.run(|keyspaces| keyspaces.table_apply(name, writes, checkpoint))
    }

    pub(super) fn table_checkpoint(
        &self,
        name: &str,
        partition: i32,
    ) -> Result<Option<i64>, StoreError> {
        self.run(|keyspaces| keyspaces.table_checkpoint(name, partition))
    }

    pub(super) fn table_clear(
        &self,
        name: &str,
        prefix: &[u8],
        partitions: &[i32],
    ) -> Result<usize, StoreError> {
        self.run(|keyspaces| keyspaces.table_clear(name, prefix, partitions))
    }

    pub(super) fn table_entries(
        &self,
        name: &str,
        prefix: &[u8],
    ) -> Result<Vec<super::keyspaces::TableEntry>, StoreError> {
        self.run(|keyspaces| keyspaces.table_entries(name, prefix))
    }

    pub(super) fn table_size(&self, name: &str) -> Result<(u64, u64), StoreError> {
        self.run(|keyspaces| keyspaces.table_size(name))
    }

    /// Runs `operation` on the open database. A failure closes the database; a patient handle
    /// then waits for it to be reopened and runs `operation` again.
    fn run<T>(&self, operation: impl Fn(&Keyspaces) -> fjall::Result<T>) -> Result<T, StoreError> {
        let started = Instant::now();
        let deadline = started + self.patience;
        let mut waiting = false;
        loop {
            let error = match self.shared.attempt(&operation) {
                Ok(value) => {
                    if waiting {
                        tracing::info!(path = %self.shared.path.display(),
                            waited_ms = started.elapsed().as_millis() as u64,
                            "the local store is back; going on");
                    }
                    return Ok(value);
                }
                Err(error) => error,
            };
            let now = Instant::now();
            if now >= deadline || self.shared.closing.load(Ordering::Relaxed) {
                return Err(error);
            }
            if !waiting {
                waiting = true;
                tracing::info!(path = %self.shared.path.display(), patience = ?self.patience,
                    "waiting for the local store to be reopened");
            }
            if !self.shared.reopen_if_due() {
                std::thread::sleep(WAIT_STEP.min(deadline - now));
            }
        }
    }

    /// Marks the store failed as if an operation had failed with `cause` (tests).
    #[cfg(test)]
    pub(super) fn break_for_test(&self, cause: &str) {
        let generation = match &*self.shared.read() {
            State::Open { generation, .. } => *generation,
            State::Down(_) => return,
        };
        self.shared.close(generation, cause.to_string());
    }
}

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_reporter(&self) -> std::sync::MutexGuard<'_, Option<Reporter>> {
        self.reporter.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn report(&self, reason: Option<String>) {
        if let Some(reporter) = &*self.lock_reporter() {
            match reason {
                None => reporter.ok(),
                Some(reason) => reporter.unready(unready_reason(&reason)),
            }
        }
    }

    /// One try of `operation`: its result, the error that closed the store, or
    /// [`StoreError::Unavailable`] when it is closed.
    fn attempt<T>(
        &self,
        operation: &impl Fn(&Keyspaces) -> fjall::Result<T>,
    ) -> Result<T, StoreError> {
        let (error, generation) = {
            let state = self.read();
            match &*state {
                State::Open {
                    keyspaces,
                    generation,
                } => match operation(keyspaces) {
                    Ok(value) => return Ok(value),
                    Err(error) => (error, *generation),
                },
                State::Down(outage) => {
                    return Err(StoreError::Unavailable {
                        path: self.path.clone(),
                        cause: outage.reason(),
                        down_for: outage.since.elapsed(),
                    });
                }
            }
        };
        let cause = describe(&error);
        self.close(generation, cause.clone());
        Err(StoreError::Failed {
            path: self.path.clone(),
            cause,
        })
    }

    /// Closes the database of `generation` after it failed with `cause` (unless that one is
    /// closed already), and reports it.
    fn close(&self, generation: u64, cause: String) {
        let mut state = self.write();
        if !matches!(&*state, State::Open { generation: open, .. } if *open == generation) {
            return;
        }
        let now = Instant::now();
        let failed = std::mem::replace(
            &mut *state,
            State::Down(Outage {
                cause: cause.clone(),
                since: now,
                not_reopened: None,
                last_attempt: now,
                generation,
            }),
        );
        drop(state);
        tracing::error!(path = %self.path.display(), error = %cause,
            "the local store failed; closing it and reopening it from disk once state.dir accepts writes again");
        self.report(Some(cause));
        // Closing stops fjall's workers and releases its lock file, so it can be reopened.
        drop(failed);
    }

    fn reopen_if_due(&self) -> bool {
        let generation = match self.attempt_due() {
            Ok(generation) => generation,
            Err(open) => return open,
        };
        if *self.replaced.borrow() {
            return false;
        }
        let reopened = std::fs::create_dir_all(&self.dir)
            .map_err(|error| format!("cannot create state.dir ({error})"))
            .and_then(|()| probe(&self.dir))
            .and_then(|()| {
                open_keyspaces(&self.path)
                    .and_then(|keyspaces| Ok((keyspaces.identity()?, keyspaces)))
                    .map_err(|error| format!("cannot open it again: {}", describe(&error)))
            })
            .and_then(|((identity, _), keyspaces)| self.same_database(identity, keyspaces));
        self.settle_reopen(generation, reopened)
    }

    /// Whether a reopen is due: the failed database's generation when it is (the attempt is
    /// recorded), or else whether the store is open.
    fn attempt_due(&self) -> Result<u64, bool> {
        let mut state = self.write();
        match &mut *state {
            State::Open { .. } => Err(true),
            State::Down(outage) => {
                if outage.last_attempt.elapsed() < REOPEN_EVERY {
                    return Err(false);
                }
                outage.last_attempt = Instant::now();
                Ok(outage.generation)
            }
        }
    }

    /// `keyspaces`, reopened, if it is the database the store opened first (`identity`) and
    /// holds the copies of the store's Kafka cluster; otherwise it stays closed, the store is
    /// marked replaced, and the error says why.
    fn same_database(&self, identity: String, keyspaces: Keyspaces) -> Result<Keyspaces, String> {
        let mut known = self.identity.lock().unwrap_or_else(|p| p.into_inner());
        match known.as_ref() {
            Some(first) if *first != identity => {
                // Dropping the database releases it; it stays closed.
                drop(keyspaces);
                self.replaced.send_replace(true);
                tracing::error!(path = %self.path.display(), was = %first, now = %identity,
                    "the local store came back as another database (state.dir lost its files while the host ran, or was replaced); it stays closed and the pipeline restarts, so that every copy of a topic is caught up again before its stage processes");
                Err("it came back as another database (state.dir lost its files, or was replaced); the pipeline restarts".to_string())
            }
            _ => {
                let cluster = self
                    .cluster
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                let other = match &cluster {
                    Some(cluster) => keyspaces
                        .bind_cluster(cluster)
                        .map_err(|error| format!("cannot open it again: {}", describe(&error)))?,
                    None => None,
                };
                if let Some(other) = other {
                    drop(keyspaces);
                    self.replaced.send_replace(true);
                    tracing::error!(path = %self.path.display(), was = %other,
                        "the local store came back holding another Kafka cluster's copies; it stays closed and the pipeline restarts");
                    return Err("it came back holding another Kafka cluster's copies; the pipeline restarts".to_string());
                }
                *known = Some(identity);
                Ok(keyspaces)
            }
        }
    }

    /// Puts the outcome of reopening the database of `generation` in place, unless the
    /// store's state moved on meanwhile; whether the store is open now.
    fn settle_reopen(&self, generation: u64, reopened: Result<Keyspaces, String>) -> bool {
        let mut state = self.write();
        let State::Down(outage) = &mut *state else {
            return true;
        };
        if outage.generation != generation {
            return false;
        }
        match reopened {
            Ok(keyspaces) => {
                let down_for = outage.since.elapsed();
                *state = State::Open {
                    keyspaces,
                    generation: generation + 1,
                };
                drop(state);
                tracing::info!(path = %self.path.display(), down_ms = down_for.as_millis() as u64,
                    "the local store was reopened from disk");
                self.report(None);
                true
            }
            Err(why) => {
                let changed = outage.not_reopened.as_deref() != Some(why.as_str());
                outage.not_reopened = Some(why);
                let reason = outage.reason();
                drop(state);
                if changed {
                    tracing::warn!(path = %self.path.display(), reason = %reason, "the local store cannot be reopened yet");
                    self.report(Some(reason));
                }
                false
            }
        }
    }
}

/// Opens the database in `path`. A database whose creation failed half-way (the disk refused
/// its first writes, so its `version` file is empty or missing) holds nothing: it is removed
/// and created again.
fn open_keyspaces(path: &Path) -> fjall::Result<Keyspaces> {
    match Keyspaces::open(path) {
        Err(fjall::Error::InvalidVersion(None)) if never_created(path) => {
            tracing::warn!(path = %path.display(),
                "the local store was left half-created by a failed start; creating it again");
            std::fs::remove_dir_all(path)?;
            Keyspaces::open(path)
        }
        opened => opened,
    }
}

/// Whether the database in `path` was never completely created: its `version` file, written
/// when it is created, is missing or empty.
fn never_created(path: &Path) -> bool {
    std::fs::metadata(path.join("version")).map_or(true, |version| version.len() == 0)
}

/// Whether `error` is the disk refusing writes (full, over quota, read-only, failing), which
/// heals once it accepts them again, rather than a store that cannot be used at all.
fn is_disk_refusal(error: &fjall::Error) -> bool {
    const EIO: i32 = 5;
    const ENOSPC: i32 = 28;
    const EROFS: i32 = 30;
    const EDQUOT: i32 = 122;
    let io = match error {
        fjall::Error::Io(io) | fjall::Error::Storage(fjall::LsmError::Io(io)) => io,
        fjall::Error::Poisoned => return true,
        _ => return false,
    };
    matches!(io.raw_os_error(), Some(EIO | ENOSPC | EROFS | EDQUOT))
        || io.kind() == std::io::ErrorKind::StorageFull
        || io.kind() == std::io::ErrorKind::ReadOnlyFilesystem
}

/// The readiness reason of a failed store.
fn unready_reason(cause: &str) -> String {
    format!(
        "failed: {cause}; the ingress answers 503 and at-least-once stages wait until it is reopened (free space in state.dir, or fix its permissions)"
    )
}

/// Writes, syncs and removes a file of [`PROBE_BYTES`] in `dir`: whether it accepts writes.
fn probe(dir: &Path) -> Result<(), String> {
    use std::io::Write;
    let path = dir.join(PROBE_FILE);
    let written = std::fs::File::create(&path).and_then(|mut file| {
        file.write_all(&vec![0u8; PROBE_BYTES])?;
        file.sync_data()
    });
    let removed = std::fs::remove_file(&path);
    written.map_err(|error| format!("state.dir does not accept writes ({error})"))?;
    removed.map_err(|error| format!("cannot remove the probe {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Health;
    use crate::store::unix_ms;
    use futures::FutureExt;
    use std::time::SystemTime;

    fn answer(recorded_at_ms: u64) -> IngressRecord {
        IngressRecord {
            body_hash: "h".into(),
            status: 202,
            response: "{}".into(),
            recorded_at_ms,
        }
    }

    #[test]
    fn remembers_processed_ids_per_stage_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = LocalStore::open(dir.path()).unwrap();
            store.mark_processed("tickets", ["a", "b"]).unwrap();
        }
        let store = LocalStore::open(dir.path()).unwrap();
        assert_eq!(
            store.processed_among("tickets", &["a", "b", "c"]).unwrap(),
            vec![true, true, false]
        );
        assert_eq!(
            store.processed_among("warehouse", &["a"]).unwrap(),
            vec![false]
        );
    }

    #[test]
    fn replays_ingress_answers() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        assert_eq!(store.ingress_record("ticket-1").unwrap(), None);
        let record = answer(unix_ms(SystemTime::now()));
        store.put_ingress_record("ticket-1", &record).unwrap();
        assert_eq!(store.ingress_record("ticket-1").unwrap(), Some(record));
    }

    #[test]
    fn a_store_of_another_kafka_cluster_is_moved_aside_and_a_new_one_made() {
        let dir = tempfile::tempdir().unwrap();
        let record = answer(unix_ms(SystemTime::now()));
        {
            let store = LocalStore::open_for_cluster(dir.path(), "cluster-a").unwrap();
            store.put_ingress_record("ticket-1", &record).unwrap();
        }
        {
            let same = LocalStore::open_for_cluster(dir.path(), "cluster-a").unwrap();
            assert_eq!(
                same.ingress_record("ticket-1").unwrap(),
                Some(record.clone())
            );
        }
        let other = LocalStore::open_for_cluster(dir.path(), "cluster-b").unwrap();
        assert_eq!(other.ingress_record("ticket-1").unwrap(), None);
        assert!(dir.path().join("store.cluster-cluster-a").is_dir());
        drop(other);
        let again = LocalStore::open_for_cluster(dir.path(), "cluster-b").unwrap();
        assert_eq!(again.ingress_record("ticket-1").unwrap(), None);
    }

    #[test]
    fn prune_forgets_only_old_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        store.mark_processed("s", ["new"]).unwrap();
        store.put_ingress_record("old", &answer(1)).unwrap();
        assert_eq!(store.prune(Duration::from_secs(3600)).unwrap(), 1);
        assert_eq!(store.processed_among("s", &["new"]).unwrap(), vec![true]);
        assert_eq!(store.ingress_record("old").unwrap(), None);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(store.prune(Duration::ZERO).unwrap(), 1);
        assert_eq!(store.processed_among("s", &["new"]).unwrap(), vec![false]);
    }

    #[test]
    fn a_failed_store_is_unready_refuses_calls_at_once_and_reopens_with_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let health = Health::default();
        store.report_to(health.reporter("store", "opening"));
        assert!(health.ready());
        store.mark_processed("s", ["kept"]).unwrap();
        store.put_ingress_record("ticket-1", &answer(7)).unwrap();

        store.break_for_test("No space left on device (os error 28)");
        assert!(!store.is_open());
        let problems = health.problems();
        let reason = problems["store"]["reason"].as_str().unwrap();
        assert!(reason.contains("No space left on device"), "{reason}");
        let started = Instant::now();
        let refused = store.ingress_record("ticket-1").unwrap_err();
        assert!(
            matches!(refused, StoreError::Unavailable { .. }),
            "{refused}"
        );
        assert!(store.mark_processed("s", ["lost"]).is_err());
        assert!(started.elapsed() < Duration::from_millis(100), "fails fast");
        assert!(!store.reopen_if_due(), "not within REOPEN_EVERY");

        std::thread::sleep(REOPEN_EVERY);
        assert!(
            store.reopen_if_due(),
            "the database was closed and opens again"
        );
        assert!(health.ready());
        assert_eq!(
            store.processed_among("s", &["kept", "lost"]).unwrap(),
            vec![true, false]
        );
        assert_eq!(store.ingress_record("ticket-1").unwrap(), Some(answer(7)));
        store.mark_processed("s", ["after"]).unwrap();
    }

    #[test]
    fn a_store_that_comes_back_as_another_database_stays_closed_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        store.mark_processed("s", ["kept"]).unwrap();
        assert!(!store.was_replaced());
        assert!(
            store.replacement().now_or_never().is_none(),
            "nothing to wake the host for yet"
        );
        // The folder loses its files while the host runs, then the store fails.
        std::fs::remove_dir_all(dir.path().join(STORE_DIR)).unwrap();
        store.break_for_test("No such file or directory (os error 2)");
        std::thread::sleep(REOPEN_EVERY);
        assert!(
            !store.reopen_if_due(),
            "an empty database is not the store that failed"
        );
        assert!(store.was_replaced());
        assert!(
            store.replacement().now_or_never().is_some(),
            "the host waiting for it is woken"
        );
        assert!(!store.is_open());
        assert!(store.processed_among("s", &["kept"]).is_err());
        std::thread::sleep(REOPEN_EVERY);
        assert!(!store.reopen_if_due(), "it stays closed");
        // A new start takes the new database as its own.
        drop(store);
        let again = LocalStore::open(dir.path()).unwrap();
        assert_eq!(again.processed_among("s", &["kept"]).unwrap(), vec![false]);
        assert!(!again.was_replaced());
    }

    #[test]
    fn a_patient_call_waits_for_the_store_and_an_impatient_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let patient = store.patient(Duration::from_secs(20));
        store.break_for_test("Input/output error (os error 5)");
        // The state folder refuses the probe (a folder where the probe file goes) for a while.
        let blocker = dir.path().join(PROBE_FILE);
        std::fs::create_dir(&blocker).unwrap();
        std::thread::sleep(REOPEN_EVERY);
        assert!(!store.reopen_if_due(), "the probe fails");
        let waiting = std::thread::spawn({
            let patient = patient.clone();
            move || {
                let started = Instant::now();
                patient
                    .mark_processed("s", ["a"])
                    .map(|()| started.elapsed())
            }
        });
        std::thread::sleep(Duration::from_millis(1500));
        assert!(!waiting.is_finished(), "waits while the store is down");
        assert!(
            store.ingress_record("x").is_err(),
            "impatient: fails at once"
        );
        std::fs::remove_dir(&blocker).unwrap();
        let waited = waiting.join().unwrap().unwrap();
        assert!(waited >= Duration::from_millis(1500), "{waited:?}");
        assert_eq!(store.processed_among("s", &["a"]).unwrap(), vec![true]);
    }

    #[test]
    fn a_store_left_half_created_is_created_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STORE_DIR);
        std::fs::create_dir_all(path.join("keyspaces")).unwrap();
        std::fs::write(path.join("version"), b"").unwrap();
        assert!(matches!(
            Keyspaces::open(&path),
            Err(fjall::Error::InvalidVersion(None))
        ));
        let store = LocalStore::open(dir.path()).unwrap();
        assert!(store.is_open());
        store.mark_processed("s", ["a"]).unwrap();
        assert_eq!(store.processed_among("s", &["a"]).unwrap(), vec![true]);
    }

    #[test]
    fn waiting_calls_give_up_when_the_host_stops() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        std::fs::create_dir(dir.path().join(PROBE_FILE)).unwrap();
        store.break_for_test("Input/output error (os error 5)");
        store.stop_waiting();
        let started = Instant::now();
        let patient = store.patient(Duration::from_secs(20));
        assert!(patient.processed_among("s", &["a"]).is_err());
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
