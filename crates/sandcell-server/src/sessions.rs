//! The server's sessions: their metadata (kept in the [`Store`]), their working
//! directories (`sessions/ID` in the data directory) and, while they are live, their
//! Python processes.
//!
//! A session is *stopped* when it has no Python process: after a server restart, after
//! its idle time ran out, or when its process could not be driven. Its files and metadata
//! stay; the next execution starts a fresh process in the same directory and says so
//! (`restarted: true`). At most `max_sessions` processes are live at once (a semaphore
//! permit each). Each session runs one execution at a time: the execution holds the
//! session's lock, and runs in a task of its own so that a client that goes away does not
//! cut it in the middle.

use crate::auth::random_hex;
use crate::config::ServerConfig;
use crate::error::{ApiError, ErrorCode, ServerError};
use crate::files::WorkDir;
use crate::limits::SessionLimits;
use crate::metrics::Metrics;
use crate::store::{self, SessionRecord, Store, User};
use prometheus_client::metrics::gauge::Gauge;
use sandcell_session::{
    ExecEvent, ExecOptions, Execution, Interrupter, Runtime, Session, SessionConfig,
};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

/// What the API shows of a session.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionInfo {
    pub id: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// The last execution's end (or the creation), RFC 3339, UTC.
    pub last_used_at: String,
    pub state: SessionState,
    pub limits: SessionLimits,
}

/// Whether a session's Python process is running, and busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// The Python process is running and waits for code.
    Idle,
    /// An execution (or a start or restart) is under way.
    Busy,
    /// No Python process: variables are gone, files remain; the next execution starts one.
    Stopped,
}

/// The sentence a client sees when an execution ran in a fresh Python process.
pub const RESTARTED_NOTICE: &str = "The Python session was restarted before this execution: variables from earlier executions are gone; files in /mnt/data remain.";

/// All sessions of the server.
pub struct Sessions {
    runtime: Runtime,
    store: Store,
    metrics: Arc<Metrics>,
    sessions_dir: PathBuf,
    idle_timeout: Duration,
    entries: RwLock<HashMap<String, Arc<Entry>>>,
    /// One permit per live Python process.
    permits: Arc<Semaphore>,
    shutting_down: Arc<AtomicBool>,
}

/// One session.
struct Entry {
    record: SessionRecord,
    slot: Arc<tokio::sync::Mutex<Slot>>,
    /// The execution under way, for interrupts and shutdown.
    running: Mutex<Option<Running>>,
    last_used: Mutex<(Instant, String)>,
    /// Set (under the slot lock) when the session is deleted.
    deleted: AtomicBool,
}

/// What the session lock guards.
struct Slot {
    live: Option<Live>,
}

/// A running Python process and its permit.
struct Live {
    session: Session,
    _permit: LivePermit,
}

/// Holds one of the `max_sessions` places, and keeps the live-sessions gauge true.
struct LivePermit {
    _permit: OwnedSemaphorePermit,
    gauge: Gauge,
}

struct Running {
    interrupter: Interrupter,
    /// Cancelled when a shutdown cannot wait any longer for the execution.
    cancel: CancellationToken,
}

/// A session locked for one use (an execution, or a conversation's turn), with its
/// Python process started. While it is out, an interrupt reaches its running code and a
/// shutdown cancels [`Checkout::cancellation`]; [`Checkout::finish`] gives it back.
pub struct Checkout {
    entry: Arc<Entry>,
    slot: OwnedMutexGuard<Slot>,
    store: Store,
    metrics: Arc<Metrics>,
    shutting_down: Arc<AtomicBool>,
    cancel: CancellationToken,
    /// The process was started for this use, in place of one whose state was lost.
    pub restarted: bool,
}

/// An execution running in its own task.
pub struct RunningExecution {
    /// Output as it is produced; closed when the execution ends.
    pub events: mpsc::UnboundedReceiver<ExecEvent>,
    pub done: JoinHandle<Result<Execution, ApiError>>,
    /// See [`Checkout::restarted`].
    pub restarted: bool,
}

impl Sessions {
    /// The sessions recorded in the store, all stopped. Working directories no session
    /// owns any more (a deletion cut short) and unfinished uploads are removed.
    pub async fn load(
        config: &ServerConfig,
        runtime: Runtime,
        store: Store,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ServerError> {
        let records = store.sessions().await?;
        let sessions_dir = config.sessions_dir();
        let known: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
        let dirs = (sessions_dir.clone(), config.staging_dir());
        tokio::task::spawn_blocking(move || sweep(&dirs.0, &known, &dirs.1))
            .await
            .map_err(|e| ServerError::Serve(std::io::Error::other(e)))??;
        let entries = records
            .into_iter()
            .map(|record| (record.id.clone(), Arc::new(Entry::new(record, None))))
            .collect();
        Ok(Self {
            runtime,
            store,
            metrics,
            sessions_dir,
            idle_timeout: config.idle_timeout,
            entries: RwLock::new(entries),
            permits: Arc::new(Semaphore::new(config.max_sessions)),
            shutting_down: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Creates a session with its working directory and starts its Python process.
    pub async fn create(
        &self,
        user: &User,
        limits: SessionLimits,
    ) -> Result<SessionInfo, ApiError> {
        self.refuse_when_shutting_down()?;
        let id = random_hex(16).map_err(|e| ApiError::internal("No random session id", &e))?;
        let dir = self.sessions_dir.join(&id);
        tokio::fs::create_dir(&dir)
            .await
            .map_err(|e| ApiError::internal("The session's directory cannot be made", &e))?;
        let now = store::now();
        let record = SessionRecord {
            id: id.clone(),
            user_id: user.id,
            created_at: now.clone(),
            last_used_at: now,
            limits,
        };
        let live = match self.start(&record).await {
            Ok(live) => live,
            Err(error) => {
                remove_dir(dir).await;
                return Err(error);
            }
        };
        if let Err(error) = self.store.insert_session(record.clone()).await {
            live.shutdown().await;
            remove_dir(dir).await;
            return Err(ApiError::internal("The session cannot be recorded", &error));
        }
        let entry = Arc::new(Entry::new(record, Some(live)));
        self.write_entries().insert(id, entry.clone());
        Ok(entry.info())
    }

    /// The user's sessions, oldest first.
    pub fn list(&self, user: &User) -> Vec<SessionInfo> {
        let mut sessions: Vec<SessionInfo> = self
            .read_entries()
            .values()
            .filter(|entry| entry.record.user_id == user.id)
            .map(|entry| entry.info())
            .collect();
        sessions.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        sessions
    }

    pub fn get(&self, user: &User, id: &str) -> Result<SessionInfo, ApiError> {
        Ok(self.find(user, id)?.info())
    }

    /// The session's working directory.
    pub fn workdir(&self, user: &User, id: &str) -> Result<WorkDir, ApiError> {
        let entry = self.find(user, id)?;
        Ok(WorkDir::new(self.sessions_dir.join(&entry.record.id)))
    }

    /// Locks the session for an execution, starting its Python process if it is stopped.
    pub async fn checkout(&self, user: &User, id: &str) -> Result<Checkout, ApiError> {
        self.refuse_when_shutting_down()?;
        let entry = self.find(user, id)?;
        let mut slot = entry.lock()?;
        let restarted = slot.live.is_none();
        let live = match slot.live.take() {
            Some(live) => live,
            None => {
                let mut live = self.start(&entry.record).await?;
                live.session.mark_state_lost();
                live
            }
        };
        let cancel = CancellationToken::new();
        *entry.running() = Some(Running {
            interrupter: live.session.interrupter(),
            cancel: cancel.clone(),
        });
        slot.live = Some(live);
        Ok(Checkout {
            entry,
            slot,
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            shutting_down: self.shutting_down.clone(),
            cancel,
            restarted,
        })
    }

    /// Interrupts the session's running execution; false when none is running.
    pub fn interrupt(&self, user: &User, id: &str) -> Result<bool, ApiError> {
        Ok(self.find(user, id)?.interrupt())
    }

    /// Gives the session a fresh Python process (variables go, files stay).
    pub async fn restart(&self, user: &User, id: &str) -> Result<SessionInfo, ApiError> {
        self.refuse_when_shutting_down()?;
        let entry = self.find(user, id)?;
        let mut slot = entry.lock()?;
        match slot.live.as_mut() {
            Some(live) => {
                if let Err(error) = live.session.restart().await {
                    // Stopped, not dropped: a shutdown also releases the session's cgroup.
                    if let Some(live) = slot.live.take() {
                        live.shutdown().await;
                    }
                    return Err(ApiError::internal(
                        "The Python session could not restart",
                        &error,
                    ));
                }
            }
            None => slot.live = Some(self.start(&entry.record).await?),
        }
        entry.touch();
        drop(slot);
        Ok(entry.info())
    }

    /// Stops the session (interrupting what runs and waiting for it) and deletes its
    /// files and metadata.
    pub async fn delete(&self, user: &User, id: &str) -> Result<(), ApiError> {
        let entry = self.find(user, id)?;
        self.write_entries().remove(id);
        entry.interrupt();
        let mut slot = entry.slot.clone().lock_owned().await;
        entry.deleted.store(true, Ordering::SeqCst);
        if let Some(live) = slot.live.take() {
            live.shutdown().await;
        }
        self.store.delete_session(id).await.map_err(|e| {
            ApiError::internal("The session cannot be removed from the database", &e)
        })?;
        let dir = self.sessions_dir.join(id);
        tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir))
            .await
            .map_err(|e| ApiError::internal("The session's files cannot be removed", &e))?
            .map_err(|e| ApiError::internal("The session's files cannot be removed", &e))
    }

    /// Stops the Python process of every session idle for the idle timeout.
    pub async fn stop_idle(&self) {
        let idle: Vec<Arc<Entry>> = self
            .read_entries()
            .values()
            .filter(|entry| entry.idle_for() >= self.idle_timeout)
            .cloned()
            .collect();
        for entry in idle {
            // A busy session is not idle; and one used since the list was made is spared.
            let Ok(mut slot) = entry.slot.clone().try_lock_owned() else {
                continue;
            };
            if entry.idle_for() < self.idle_timeout {
                continue;
            }
            if let Some(live) = slot.live.take() {
                tracing::info!(session = %entry.record.id, "stopping an idle session's Python process");
                live.shutdown().await;
            }
        }
    }

    /// Checks for idle sessions, often enough for the idle timeout, until aborted.
    pub fn spawn_idle_reaper(self: &Arc<Self>) -> JoinHandle<()> {
        let sessions = self.clone();
        let every =
            (self.idle_timeout / 10).clamp(Duration::from_millis(50), Duration::from_secs(60));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                sessions.stop_idle().await;
            }
        })
    }

    /// From now on no execution starts, and those running are interrupted.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        for entry in self.read_entries().values() {
            entry.interrupt();
        }
    }

    /// Abandons the executions still running (their processes are then stopped).
    pub fn cancel_running(&self) {
        for entry in self.read_entries().values() {
            if let Some(running) = entry.running().as_ref() {
                running.cancel.cancel();
            }
        }
    }

    /// Stops every Python process (after the executions ended).
    pub async fn stop_all(&self) {
        let entries: Vec<Arc<Entry>> = self.read_entries().values().cloned().collect();
        let stops = entries.into_iter().map(|entry| async move {
            let mut slot = entry.slot.clone().lock_owned().await;
            if let Some(live) = slot.live.take() {
                live.shutdown().await;
            }
        });
        futures_util::future::join_all(stops).await;
    }

    /// Takes a place among the live sessions and starts a Python process.
    async fn start(&self, record: &SessionRecord) -> Result<Live, ApiError> {
        let permit = self.permits.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                ErrorCode::TooManySessions,
                "The server already runs as many live sessions as it allows; try again later, or delete or let idle sessions stop.",
            )
        })?;
        let permit = LivePermit::new(permit, self.metrics.sessions_live.clone());
        let session = self
            .runtime
            .create_session(SessionConfig {
                workdir: Some(self.sessions_dir.join(&record.id)),
                limits: record.limits.to_runtime(),
            })
            .await
            .map_err(|e| ApiError::internal("The Python session could not start", &e))?;
        Ok(Live {
            session,
            _permit: permit,
        })
    }

    /// The session `id` if it belongs to `user`; another user's session is "not found",
    /// so ids reveal nothing.
    fn find(&self, user: &User, id: &str) -> Result<Arc<Entry>, ApiError> {
        self.read_entries()
            .get(id)
            .filter(|entry| entry.record.user_id == user.id)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&format!("session {id}")))
    }

    fn refuse_when_shutting_down(&self) -> Result<(), ApiError> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(ApiError::new(
                ErrorCode::ShuttingDown,
                "The server is shutting down and starts nothing new.",
            ));
        }
        Ok(())
    }

    fn read_entries(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Entry>>> {
        // The map is only inserted into and removed from: a panic cannot leave it torn.
        self.entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_entries(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Entry>>> {
        self.entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Entry {
    fn new(record: SessionRecord, live: Option<Live>) -> Self {
        let last_used = (Instant::now(), record.last_used_at.clone());
        Self {
            record,
            slot: Arc::new(tokio::sync::Mutex::new(Slot { live })),
            running: Mutex::new(None),
            last_used: Mutex::new(last_used),
            deleted: AtomicBool::new(false),
        }
    }

    /// The session's lock, or 409 when an execution holds it.
    fn lock(self: &Arc<Self>) -> Result<OwnedMutexGuard<Slot>, ApiError> {
        let slot = self.slot.clone().try_lock_owned().map_err(|_| {
            ApiError::new(
                ErrorCode::SessionBusy,
                "This session is busy with another execution; wait for it to end or interrupt it.",
            )
        })?;
        if self.deleted.load(Ordering::SeqCst) {
            return Err(ApiError::not_found(&format!("session {}", self.record.id)));
        }
        Ok(slot)
    }

    fn info(&self) -> SessionInfo {
        let state = match self.slot.try_lock() {
            Err(_) => SessionState::Busy,
            Ok(slot) if slot.live.is_some() => SessionState::Idle,
            Ok(_) => SessionState::Stopped,
        };
        SessionInfo {
            id: self.record.id.clone(),
            created_at: self.record.created_at.clone(),
            last_used_at: self.last_used().1.clone(),
            state,
            limits: self.record.limits.clone(),
        }
    }

    fn interrupt(&self) -> bool {
        self.running()
            .as_ref()
            .is_some_and(|running| running.interrupter.interrupt())
    }

    /// Marks the session used now; returns the time as stored.
    fn touch(&self) -> String {
        let now = store::now();
        *self.last_used() = (Instant::now(), now.clone());
        now
    }

    fn idle_for(&self) -> Duration {
        self.last_used().0.elapsed()
    }

    fn running(&self) -> MutexGuard<'_, Option<Running>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn last_used(&self) -> MutexGuard<'_, (Instant, String)> {
        self.last_used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Checkout {
    /// Runs `code` in a task of its own; see [`RunningExecution`].
    pub fn spawn(self, code: String, timeout: Duration) -> RunningExecution {
        let (sender, events) = mpsc::unbounded_channel();
        let restarted = self.restarted;
        let done = tokio::spawn(self.execute(code, timeout, move |event| {
            // A client that went away no longer reads; the execution still finishes.
            let _ = sender.send(event.clone());
        }));
        RunningExecution {
            events,
            done,
            restarted,
        }
    }

    /// The Python session, for the work this checkout was taken for.
    pub fn session(&mut self) -> Result<&mut Session, ApiError> {
        match self.slot.live.as_mut() {
            Some(live) => Ok(&mut live.session),
            None => Err(ApiError::new(
                ErrorCode::Internal,
                "The session has no Python process.",
            )),
        }
    }

    /// Cancelled when a shutdown can wait no longer: the work must stop.
    pub fn cancellation(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Whether the server began to shut down (and so starts no new work).
    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Gives the session back, marked used now. With `broken`, its Python process could
    /// not be driven (or the work was abandoned): it is stopped, and the next use starts
    /// a fresh one.
    pub async fn finish(mut self, broken: bool) {
        *self.entry.running() = None;
        let at = self.entry.touch();
        if let Err(error) = self.store.touch_session(&self.entry.record.id, at).await {
            tracing::warn!(
                "cannot record when session {} was used: {error}",
                self.entry.record.id
            );
        }
        if broken {
            if let Some(live) = self.slot.live.take() {
                live.shutdown().await;
            }
        }
    }

    async fn execute(
        mut self,
        code: String,
        timeout: Duration,
        mut on_event: impl FnMut(&ExecEvent) + Send,
    ) -> Result<Execution, ApiError> {
        let cancel = self.cancellation();
        // A shutdown that began before this checkout was registered could not interrupt
        // this execution: it does not start.
        let outcome = if self.shutting_down() {
            None
        } else {
            let session = self.session()?;
            let options = ExecOptions {
                timeout: Some(timeout),
            };
            tokio::select! {
                outcome = session.execute(&code, &options, &mut on_event) => Some(outcome),
                () = cancel.cancelled() => None,
            }
        };
        let result = match outcome {
            Some(Ok(execution)) => {
                self.metrics.record_execution(&execution);
                Ok(execution)
            }
            Some(Err(error)) => Err(ApiError::internal(
                "The Python session could not be driven",
                &error,
            )),
            None => Err(ApiError::new(
                ErrorCode::ShuttingDown,
                "The server shut down during this execution and stopped its Python process; variables are gone, files in /mnt/data remain.",
            )),
        };
        self.finish(result.is_err()).await;
        result
    }
}

impl Drop for Checkout {
    /// A checkout given up without [`Checkout::finish`] (an error before its work began)
    /// must not leave its session looking busy to interrupts.
    fn drop(&mut self) {
        *self.entry.running() = None;
    }
}

impl Live {
    async fn shutdown(self) {
        if let Err(error) = self.session.shutdown().await {
            tracing::warn!("a session did not shut down cleanly: {error}");
        }
    }
}

impl LivePermit {
    fn new(permit: OwnedSemaphorePermit, gauge: Gauge) -> Self {
        gauge.inc();
        Self {
            _permit: permit,
            gauge,
        }
    }
}

impl Drop for LivePermit {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Removes what belongs to no session: directories of sessions not in the database,
/// and every staged upload (none is in progress before the server starts).
fn sweep(sessions_dir: &Path, known: &[String], staging_dir: &Path) -> Result<(), ServerError> {
    let data_dir_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ServerError::DataDir { path, source }
    };
    std::fs::create_dir_all(sessions_dir).map_err(data_dir_error(sessions_dir))?;
    for entry in std::fs::read_dir(sessions_dir).map_err(data_dir_error(sessions_dir))? {
        let entry = entry.map_err(data_dir_error(sessions_dir))?;
        let name = entry.file_name();
        if !known.iter().any(|id| name.as_os_str() == id.as_str()) {
            tracing::info!(
                "removing {}, which belongs to no session",
                entry.path().display()
            );
            let path = entry.path();
            let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.map_err(data_dir_error(&path))?;
        }
    }
    if staging_dir.exists() {
        std::fs::remove_dir_all(staging_dir).map_err(data_dir_error(staging_dir))?;
    }
    std::fs::create_dir_all(staging_dir).map_err(data_dir_error(staging_dir))
}

async fn remove_dir(dir: PathBuf) {
    let shown = dir.display().to_string();
    match tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!("cannot remove {shown}: {error}"),
        Err(error) => tracing::warn!("cannot remove {shown}: {error}"),
    }
}
