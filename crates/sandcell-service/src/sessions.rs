//! The server's sessions: their metadata (kept in the [`Store`]), their working
//! directories (`sessions/ID` in the data directory) and, while they are live, their
//! Python processes.
//!
//! A session is *stopped* when it has no Python process: after a server restart, after
//! its idle time ran out, or when its process could not be driven. Its files and metadata
//! stay; the next execution starts a fresh process in the same directory and says so
//! (`restarted: true`). At most `max_sessions` processes are live at once, and at most
//! `max_sessions_per_user` of one user's ([`Places`]); when either is reached, the least
//! recently used idle session (the user's own, for the user's quota) is stopped to make
//! room before anyone is refused. Each session runs one execution at a time: the
//! execution holds the session's lock, and runs in a task of its own so that a client
//! that goes away does not cut it in the middle; its events go to an [`ExecutionLog`]
//! kept for a while, under an id, for clients to re-attach.
//!
//! With several nodes on one database, a session's process runs on one node at a time,
//! the one the database names as its owner ([`crate::nodes`]): a node claims a session
//! when it starts its process, checks that it still holds it before each use, and lets
//! it go when the process stops. A request for a session another live node runs is that
//! node's ([`Sessions::route`]); a door forwards it there. A session created on another
//! node is read from the database when first asked for here.

use crate::config::ServiceConfig;
use crate::error::{sentence, ServiceError};
use crate::executions::{ExecutionLog, ExecutionState, LoggedEvent};
use crate::files::{WorkDir, WriteBackTo};
use crate::limits::LimitsRequest;
use crate::limits::SessionLimits;
use crate::metrics::Metrics;
use crate::nodes::{Node, Route};
use crate::packages;
use crate::page::{Page, PageRequest};
use crate::places::{Full, Holder, Place, Places};
use crate::session_files::SessionFiles;
use crate::start_error::StartError;
use crate::store::{self, Claim, Owner, SessionRecord, Store, User};
use crate::users::random_hex;
use sandcell_session::{Allowlist, NetPolicy};
use sandcell_session::{
    Completion, Disks, ExecEvent, ExecOptions, Execution, Interrupter, Isolation, NetworkAccess,
    Runtime, Session, SessionConfig, SessionError,
};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OwnedMutexGuard};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

/// Finished executions a session keeps readable (besides the retention time).
const KEPT_EXECUTIONS: usize = 16;
/// What a client refused for want of room is told to wait before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// How long a session's node, as read from the database, is used to route requests
/// without reading it again, at most: a session changes nodes only when one stops it or
/// is gone for the node timeout, and a request sent to a node that just stopped it is
/// handled there (it claims the session again). Never more than a tenth of the timeout,
/// so that a gone node's sessions are not sought there for long after it is gone.
const ROUTE_KEPT: Duration = Duration::from_secs(1);
/// Routes kept before the expired ones are dropped.
const ROUTES_KEPT: usize = 4096;
/// What a client refused because its session is on another node is told to wait.
const RETRY_ELSEWHERE: Duration = Duration::from_secs(1);
/// How often the warm sessions are topped up when nothing wakes their task sooner.
const WARM_RECHECK: Duration = Duration::from_secs(1);

/// What a client sees of a session.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionInfo {
    pub id: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// The last execution's end (or the creation), RFC 3339, UTC.
    pub last_used_at: String,
    pub state: SessionState,
    pub limits: SessionLimits,
    /// What the session may reach on the network.
    pub network: NetworkAccess,
    /// The configured environment the session runs in (the base environment's packages
    /// plus its own); null: the base environment.
    #[schema(example = "geo")]
    pub environment: Option<String>,
    /// The conversation whose code runs in this session, if any.
    pub conversation_id: Option<String>,
    /// The execution running now, started by `execute`: a client re-attaches to it at
    /// `GET …/executions/{execution_id}/events`. Null when none runs (or the session
    /// runs a conversation's code).
    pub execution_id: Option<String>,
    /// The address of the node running the session's Python process, when several nodes
    /// share one database; null when it is stopped (or the node gives no address).
    pub node: Option<String>,
}

/// A configured environment, as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct EnvironmentInfo {
    /// What a session names to run in it.
    #[schema(example = "geo")]
    pub name: String,
    /// pip requirement lines installed on top of the base environment.
    pub requirements: Vec<String>,
    /// Modules its sessions start with imported, besides the base environment's.
    pub preload: Vec<String>,
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

/// All sessions.
pub struct Sessions {
    runtime: Runtime,
    store: Store,
    /// This node, which runs the sessions it holds in the database.
    node: Arc<Node>,
    /// Sessions other nodes run, as the database said lately: session id → the node's
    /// address and when it was read. Spares a forwarded request a read of the database.
    routes: Mutex<HashMap<String, (String, Instant)>>,
    metrics: Arc<Metrics>,
    /// Where the sessions' files are written back, if anywhere besides their directories.
    files: Arc<SessionFiles>,
    sessions_dir: PathBuf,
    idle_timeout: Duration,
    execution_retention: Duration,
    entries: RwLock<HashMap<String, Arc<Entry>>>,
    places: Arc<Places>,
    /// Sessions ready for the next client, oldest first, of every environment; refilled
    /// by a background task.
    warm: Mutex<VecDeque<WarmSession>>,
    /// Warm sessions kept for each environment (the base one and each configured one).
    warm_size: usize,
    /// Output (stdout and stderr) an execution keeps, in MiB: head and tail.
    output_mib: u64,
    /// The limits warm sessions have: a request's defaults.
    warm_limits: SessionLimits,
    /// The most network a session may ask for.
    network_ceiling: Allowlist,
    /// What a session that asks for nothing gets (warm sessions serve it when empty).
    network_default: Allowlist,
    /// Wakes the refill task when a warm session was taken.
    warm_taken: Notify,
    /// Held while a warm session starts (its place already taken): whoever needs that
    /// place waits for the session instead of finding the server full.
    warming: tokio::sync::Mutex<()>,
    shutting_down: Arc<AtomicBool>,
}

/// One session.
struct Entry {
    record: SessionRecord,
    /// The session's working directory (its `/mnt/data`).
    dir: WorkDirPlace,
    /// The conversation whose code runs here: set when the session is created for one,
    /// read from the store, or taken by one ([`Sessions::adopt`]).
    conversation_id: Mutex<Option<String>>,
    slot: Arc<tokio::sync::Mutex<Slot>>,
    /// The execution under way, for interrupts and shutdown.
    running: Mutex<Option<Running>>,
    /// The latest executions, newest last.
    executions: Mutex<VecDeque<Arc<ExecutionLog>>>,
    last_used: Mutex<(Instant, String)>,
    /// Set (under the slot lock) when the session is deleted.
    deleted: AtomicBool,
}

/// Where a session's working directory is, and whether it goes with the session.
#[derive(Debug, Clone)]
enum WorkDirPlace {
    /// `sessions/ID` in the data directory, deleted with the session.
    Own(PathBuf),
    /// A directory the session was created in ([`Sessions::create_in`]), kept.
    Given(PathBuf),
}

impl WorkDirPlace {
    fn path(&self) -> &Path {
        match self {
            Self::Own(path) | Self::Given(path) => path,
        }
    }
}

/// What the session lock guards.
struct Slot {
    live: Option<Live>,
}

/// A running Python process and its place.
struct Live {
    session: Session,
    place: Place,
    /// This node's hold on the session in the database; none for a warm session, which
    /// is nobody's yet.
    lease: Option<Lease>,
}

/// A node's hold on a session: the database names the node as the session's owner under
/// `epoch`, until the process stops (or another node takes the session over).
struct Lease {
    store: Store,
    node: Arc<Node>,
    session_id: String,
    epoch: i64,
}

/// A session started ahead of demand (its directory made, its process ready), waiting
/// to become the next new session with the default limits.
struct WarmSession {
    id: String,
    /// The configured environment it runs in (`None`: the base one).
    environment: Option<String>,
    live: Live,
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
    files: Arc<SessionFiles>,
    shutting_down: Arc<AtomicBool>,
    cancel: CancellationToken,
    /// The process was started for this use, in place of one whose state was lost.
    pub restarted: bool,
}

impl Sessions {
    /// The sessions recorded in the store, all stopped. Working directories no session
    /// owns any more (a deletion cut short) and unfinished uploads are removed.
    pub async fn load(
        config: &ServiceConfig,
        runtime: Runtime,
        store: Store,
        metrics: Arc<Metrics>,
        files: Arc<SessionFiles>,
        node: Arc<Node>,
    ) -> Result<Self, StartError> {
        // Whatever this node ran before it (re)started is gone.
        store.release_node(&node.id, false).await?;
        store
            .heartbeat(&node.id, &node.url, crate::nodes::now_ms())
            .await?;
        let records = store.sessions().await?;
        let owners = store.conversation_sessions().await?;
        let sessions_dir = config.sessions_dir();
        let known: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
        let dirs = (sessions_dir.clone(), config.staging_dir());
        let sweeping = runtime.clone();
        tokio::task::spawn_blocking(move || sweep(sweeping.disks(), &dirs.0, &known, &dirs.1))
            .await
            .map_err(|e| StartError::DataDir {
                path: config.data_dir.clone(),
                source: std::io::Error::other(e),
            })??;
        let entries = records
            .into_iter()
            .map(|mut record| {
                // The operator may have narrowed the ceiling since: a session keeps only
                // what is still within it.
                let kept = record.network.narrowed_to(&config.network_ceiling);
                if kept != record.network {
                    tracing::warn!(
                        "session {}: its network ({}) is narrowed to the ceiling's ({})",
                        record.id,
                        record.network,
                        kept
                    );
                    record.network = kept;
                }
                if let Some(name) = &record.environment {
                    if runtime.layer(name).is_err() {
                        tracing::warn!(
                            "session {}: its environment {name:?} is no longer configured; its executions are refused until it is again",
                            record.id
                        );
                    }
                }
                let conversation = owners.get(&record.id).cloned();
                (
                    record.id.clone(),
                    Arc::new(Entry::new(
                        WorkDirPlace::Own(sessions_dir.join(&record.id)),
                        record,
                        conversation,
                        None,
                    )),
                )
            })
            .collect();
        Ok(Self {
            runtime,
            store,
            node,
            routes: Mutex::default(),
            places: Places::new(
                config.max_sessions,
                config.max_sessions_per_user,
                metrics.sessions_live.clone(),
            ),
            warm: Mutex::default(),
            warm_size: config.warm_sessions.min(config.max_sessions),
            output_mib: config.output_mib,
            warm_limits: LimitsRequest::default()
                .resolve(&config.max_limits)
                .map_err(|e| StartError::Limits(e.to_string()))?,
            network_ceiling: config.network_ceiling.clone(),
            network_default: config.network_default.clone(),
            warm_taken: Notify::new(),
            warming: tokio::sync::Mutex::new(()),
            metrics,
            files,
            sessions_dir,
            idle_timeout: config.idle_timeout,
            execution_retention: config.execution_retention,
            entries: RwLock::new(entries),
            shutting_down: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Creates a session with its working directory and starts its Python process.
    /// `environment` names one of the configured environments (`None`: the base one).
    pub async fn create(
        &self,
        user: &User,
        limits: SessionLimits,
        network: Allowlist,
        environment: Option<&str>,
    ) -> Result<SessionInfo, ServiceError> {
        self.create_owned(user, limits, network, environment, None)
            .await
    }

    /// The environments a session may name besides the base one, with what they hold.
    pub fn environments(&self) -> Vec<EnvironmentInfo> {
        self.runtime
            .environments()
            .iter()
            .map(|layer| EnvironmentInfo {
                name: layer.name().to_owned(),
                requirements: layer.spec().requirements.clone(),
                preload: layer.spec().preload.clone(),
            })
            .collect()
    }

    /// `asked` if it names a configured environment; refused, with the configured names,
    /// if not.
    fn environment_named(&self, asked: Option<&str>) -> Result<Option<String>, ServiceError> {
        asked
            .map(|name| match self.runtime.layer(name) {
                Ok(layer) => Ok(layer.name().to_owned()),
                Err(unknown) => Err(ServiceError::invalid(sentence(&unknown.to_string()))),
            })
            .transpose()
    }

    /// The allowlist a session gets when it asks for `asked` (entries as written), or for
    /// nothing (`None`: the operator's default); refused outside the operator's ceiling.
    pub fn network_for(&self, asked: Option<&[String]>) -> Result<Allowlist, ServiceError> {
        let Some(asked) = asked else {
            return Ok(self.network_default.clone());
        };
        let allowlist =
            Allowlist::parse(asked).map_err(|e| ServiceError::invalid(e.to_string()))?;
        allowlist
            .within(&self.network_ceiling)
            .map_err(|e| ServiceError::invalid(e.to_string()))?;
        Ok(allowlist)
    }

    /// Creates a session whose working directory is `dir`, an existing directory that
    /// stays when the session is deleted (`sandcell mcp --workdir`). The directory is not
    /// recorded in the store: it is for a front end that lives as long as its service,
    /// on a data directory of its own; after a restart the session would look for its
    /// files in its own `sessions/ID`.
    pub async fn create_in(
        &self,
        user: &User,
        limits: SessionLimits,
        network: Allowlist,
        environment: Option<&str>,
        dir: PathBuf,
    ) -> Result<SessionInfo, ServiceError> {
        self.refuse_when_shutting_down()?;
        let environment = self.environment_named(environment)?;
        let id = random_hex(16).map_err(|e| ServiceError::internal("No random session id", &e))?;
        let record = new_record(id, user, limits, network, environment);
        let place = WorkDirPlace::Given(dir);
        let live = self.start(&record, &place).await?;
        self.register(record, place, None, live).await
    }

    /// Creates a session for conversation `conversation_id`, which it then belongs to.
    pub(crate) async fn create_owned(
        &self,
        user: &User,
        limits: SessionLimits,
        network: Allowlist,
        environment: Option<&str>,
        conversation_id: Option<&str>,
    ) -> Result<SessionInfo, ServiceError> {
        self.refuse_when_shutting_down()?;
        let environment = self.environment_named(environment)?;
        // Warm sessions have no network: their proxy would have to be started for a
        // policy nobody has asked for yet.
        let warm = if limits == self.warm_limits && network.is_empty() {
            self.take_warm(user.id, environment.as_deref()).await?
        } else {
            None
        };
        let (id, warm_live) = match warm {
            Some(WarmSession { id, live, .. }) => (id, Some(live)),
            None => {
                let id = random_hex(16)
                    .map_err(|e| ServiceError::internal("No random session id", &e))?;
                let dir = self.sessions_dir.join(&id);
                tokio::fs::create_dir(&dir).await.map_err(|e| {
                    ServiceError::internal("The session's directory cannot be made", &e)
                })?;
                if let Err(error) = self.make_disk(&dir, &limits).await {
                    self.remove_dir(dir).await;
                    return Err(ServiceError::internal(
                        "The session's disk cannot be made",
                        &error,
                    ));
                }
                (id, None)
            }
        };
        let dir = self.sessions_dir.join(&id);
        let record = new_record(id, user, limits, network, environment);
        let live = match warm_live {
            Some(live) => live,
            None => match self.start(&record, &WorkDirPlace::Own(dir.clone())).await {
                Ok(live) => live,
                Err(error) => {
                    self.remove_dir(dir).await;
                    return Err(error);
                }
            },
        };
        self.register(
            record,
            WorkDirPlace::Own(dir),
            conversation_id.map(str::to_owned),
            live,
        )
        .await
    }

    /// Makes the user's session `id` (a notebook's, say) the one conversation
    /// `conversation_id` runs its code in, so that the model sees the variables and files
    /// there. Refused while something runs in it, and when it already holds a conversation.
    pub(crate) fn adopt(
        &self,
        user: &User,
        id: &str,
        conversation_id: &str,
    ) -> Result<SessionInfo, ServiceError> {
        self.refuse_when_shutting_down()?;
        let entry = self.find(user, id)?;
        // Held while the owner is set: no execution starts in between.
        let slot = entry.lock().map_err(|error| match error {
            ServiceError::Busy(_) => ServiceError::Busy(format!(
                "Session {id} is running code; wait for it to end (or stop it), then start the conversation."
            )),
            other => other,
        })?;
        {
            let mut owner = lock(&entry.conversation_id);
            if let Some(existing) = owner.as_ref() {
                return Err(ServiceError::Conflict(format!(
                    "Session {id} already holds conversation {existing}; open that conversation to talk about it."
                )));
            }
            *owner = Some(conversation_id.to_owned());
        }
        drop(slot);
        Ok(entry.info(self.sandboxed(), &self.node, None))
    }

    /// Lets go of conversation `conversation_id`'s hold on session `id` (the conversation
    /// went; the session stays, for a notebook).
    pub(crate) fn release(&self, id: &str, conversation_id: &str) {
        if let Some(entry) = self.read_entries().get(id) {
            let mut owner = lock(&entry.conversation_id);
            if owner.as_deref() == Some(conversation_id) {
                *owner = None;
            }
        }
    }

    /// Records a new session whose process is `live` and makes it reachable; when it
    /// cannot be recorded, the process stops and a directory of its own goes.
    async fn register(
        &self,
        record: SessionRecord,
        place: WorkDirPlace,
        conversation_id: Option<String>,
        mut live: Live,
    ) -> Result<SessionInfo, ServiceError> {
        if let Err(error) = self
            .store
            .insert_session(record.clone(), &self.node.id)
            .await
        {
            live.shutdown().await;
            if let WorkDirPlace::Own(dir) = place {
                self.remove_dir(dir).await;
            }
            return Err(ServiceError::internal(
                "The session cannot be recorded",
                &error,
            ));
        }
        let id = record.id.clone();
        live.lease = Some(self.lease(&id, 1));
        let entry = Arc::new(Entry::new(place, record, conversation_id, Some(live)));
        self.write_entries().insert(id, entry.clone());
        Ok(entry.info(self.sandboxed(), &self.node, None))
    }

    /// A page of the user's sessions, oldest first: those of the database, wherever they
    /// were created and whichever node runs them.
    pub async fn list(
        &self,
        user: &User,
        page: &PageRequest,
    ) -> Result<Page<SessionInfo>, ServiceError> {
        let recorded = self
            .store
            .sessions_of(user.id, self.node.alive_since())
            .await
            .map_err(|e| ServiceError::internal("The sessions cannot be listed", &e))?;
        let mut sessions = Vec::with_capacity(recorded.len());
        for (id, elsewhere) in recorded {
            let entry = match self.find(user, &id) {
                Ok(entry) => entry,
                // Deleted since it was listed.
                Err(ServiceError::NotFound(_)) => continue,
                Err(error) => return Err(error),
            };
            let elsewhere = elsewhere.filter(|_| !entry.runs_here());
            sessions.push(entry.info(self.sandboxed(), &self.node, elsewhere));
        }
        sessions.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        page.page(sessions, |session| &session.id)
    }

    pub fn get(&self, user: &User, id: &str) -> Result<SessionInfo, ServiceError> {
        Ok(self
            .find(user, id)?
            .info(self.sandboxed(), &self.node, None))
    }

    /// The session's working directory. With a bucket, the directory of a session that
    /// does not run here is first brought up to date with it (another node may have run
    /// the session since, or this node never did).
    pub async fn workdir(&self, user: &User, id: &str) -> Result<WorkDir, ServiceError> {
        let entry = self.find(user, id)?;
        if let WorkDirPlace::Own(dir) = &entry.dir {
            if self.files.keeps_copies() && !entry.runs_here() {
                // Held so that no process starts in the directory meanwhile.
                let slot = entry.slot.clone().lock_owned().await;
                if slot.live.is_none() {
                    self.prepare_own_dir(&entry.record, dir).await?;
                }
            }
        }
        Ok(match &entry.dir {
            WorkDirPlace::Own(dir) => WorkDir::writing_back(
                dir,
                WriteBackTo {
                    files: self.files.clone(),
                    session_id: entry.record.id.clone(),
                    quota: entry.quota(),
                },
            ),
            WorkDirPlace::Given(dir) => WorkDir::new(dir),
        })
    }

    /// Starts running `code` in the session, in a task of its own, and returns its log.
    /// `timeout_secs` is this execution's time limit (more than 0, at most the session's;
    /// the session's when `None`); it applies to this execution only.
    pub async fn execute(
        &self,
        user: &User,
        id: &str,
        code: String,
        timeout_secs: Option<f64>,
    ) -> Result<Arc<ExecutionLog>, ServiceError> {
        let limits = self.find(user, id)?.record.limits.clone();
        let timeout = limits.execution_timeout(timeout_secs)?;
        let checkout = self.checkout(user, id).await?;
        let execution_id =
            random_hex(12).map_err(|e| ServiceError::internal("No random execution id", &e))?;
        let log = Arc::new(ExecutionLog::new(
            format!("exec_{execution_id}"),
            id.to_owned(),
            store::now(),
        ));
        checkout
            .entry
            .keep_execution(log.clone(), self.execution_retention);
        let restarted_before = checkout.restarted;
        if restarted_before {
            log.push(LoggedEvent::Restarted);
        }
        let task_log = log.clone();
        tokio::spawn(async move {
            let result = checkout
                .execute(code, timeout, |event| {
                    task_log.push(LoggedEvent::Output(event.clone()));
                })
                .await;
            // The process restarted on its own during the execution (a crash, a kill).
            if !restarted_before && result.as_ref().is_ok_and(|e| e.restarted) {
                task_log.push(LoggedEvent::Restarted);
            }
            task_log.push(LoggedEvent::End(result));
        });
        Ok(log)
    }

    /// Starts installing `requirements` (package names with optional extras and version
    /// specifiers) into the session's package layer, as `%pip install` does, and returns
    /// the execution's log: pip's output, and an error when it failed. Refused when the
    /// operator configured no package index.
    pub async fn install_packages(
        &self,
        user: &User,
        id: &str,
        requirements: &[String],
    ) -> Result<Arc<ExecutionLog>, ServiceError> {
        self.find(user, id)?;
        let cell = packages::install_cell(requirements)?;
        if self.runtime.package_index().is_none() {
            return Err(ServiceError::Conflict(packages::NO_INDEX.into()));
        }
        self.execute(user, id, cell, None).await
    }

    /// What IPython's completer offers at `cursor_pos` (in Unicode code points, as Jupyter
    /// counts) of `code`, in the session's live kernel. The kernel answers one request at a
    /// time, so while the session runs something (a cell, a conversation's turn) this is
    /// `Busy`, as any other use would be; a stopped session is started first, like for an
    /// execution.
    pub async fn complete(
        &self,
        user: &User,
        id: &str,
        code: &str,
        cursor_pos: usize,
    ) -> Result<Completion, ServiceError> {
        let length = code.chars().count();
        if cursor_pos > length {
            return Err(ServiceError::invalid(format!(
                "cursor_pos {cursor_pos} is past the end of the code ({length} characters); count characters (Unicode code points) from 0."
            )));
        }
        let mut checkout = self.checkout(user, id).await?;
        // In a task of its own: a client that gives up (an editor aborts the request when
        // its text changes) must not cut the exchange short, which would leave the reply
        // on the socket for the next request to read.
        let code = code.to_owned();
        let task = tokio::spawn(async move {
            let completion = checkout.session()?.complete(&code, cursor_pos).await;
            checkout.finish(completion.is_err()).await;
            completion
                .map_err(|e| ServiceError::internal("The session could not complete the code", &e))
        });
        task.await
            .map_err(|e| ServiceError::internal("The completion task failed", &e))?
    }

    /// An execution of the session, running or finished within the retention time.
    pub fn execution(
        &self,
        user: &User,
        id: &str,
        execution_id: &str,
    ) -> Result<Arc<ExecutionLog>, ServiceError> {
        self.find(user, id)?
            .execution(execution_id, self.execution_retention)
            .ok_or_else(|| {
                ServiceError::NotFound(format!(
                    "There is no execution {execution_id} in session {id} (finished executions are kept for {} s).",
                    self.execution_retention.as_secs()
                ))
            })
    }

    /// Locks the session for one use, starting its Python process if it is stopped.
    pub async fn checkout(&self, user: &User, id: &str) -> Result<Checkout, ServiceError> {
        self.refuse_when_shutting_down()?;
        let entry = self.find(user, id)?;
        let mut slot = entry.lock()?;
        if let Some(live) = slot.live.take() {
            if self.still_holds(&live).await? {
                slot.live = Some(live);
            } else {
                // Another node took the session over while this one was cut off: this
                // process's state is no longer the session's, and this node must not act
                // for it.
                tracing::warn!(session = %id, "another node took this session over; its process here stops");
                live.abandon().await;
            }
        }
        let restarted = slot.live.is_none();
        let live = match slot.live.take() {
            Some(live) => live,
            None => {
                let mut live = self.resume(&entry).await?;
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
            files: self.files.clone(),
            shutting_down: self.shutting_down.clone(),
            cancel,
            restarted,
        })
    }

    /// Interrupts the session's running execution; false when none is running.
    pub fn interrupt(&self, user: &User, id: &str) -> Result<bool, ServiceError> {
        Ok(self.find(user, id)?.interrupt())
    }

    /// Gives the session a fresh Python process (variables go, files stay).
    pub async fn restart(&self, user: &User, id: &str) -> Result<SessionInfo, ServiceError> {
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
                    return Err(ServiceError::internal(
                        "The Python session could not restart",
                        &error,
                    ));
                }
            }
            None => slot.live = Some(self.resume(&entry).await?),
        }
        entry.touch();
        drop(slot);
        Ok(entry.info(self.sandboxed(), &self.node, None))
    }

    /// Stops the session (interrupting what runs and waiting for it) and deletes its
    /// files and metadata. A session that a conversation runs its code in is refused:
    /// deleting the conversation deletes it.
    pub async fn delete(&self, user: &User, id: &str) -> Result<(), ServiceError> {
        let entry = self.find(user, id)?;
        if let Some(conversation) = entry.conversation() {
            return Err(ServiceError::Conflict(format!(
                "Session {id} holds the code and files of conversation {conversation}; delete the conversation instead, which deletes its session too."
            )));
        }
        self.remove(user, id).await
    }

    /// Deletes a session whatever uses it (a conversation going with its session).
    pub(crate) async fn remove(&self, user: &User, id: &str) -> Result<(), ServiceError> {
        let entry = self.find(user, id)?;
        entry.interrupt();
        let mut slot = entry.slot.clone().lock_owned().await;
        // The row goes before the entry: a request in between would read the session
        // back from the database (as one created on another node is).
        self.store.delete_session(id).await.map_err(|e| {
            ServiceError::internal("The session cannot be removed from the database", &e)
        })?;
        entry.deleted.store(true, Ordering::SeqCst);
        self.write_entries().remove(id);
        if let Some(live) = slot.live.take() {
            live.shutdown().await;
        }
        let WorkDirPlace::Own(dir) = entry.dir.clone() else {
            return Ok(()); // a directory the session was given is not the session's to delete
        };
        let runtime = self.runtime.clone();
        tokio::task::spawn_blocking(move || runtime.disks().remove(&disk_image(&dir), &dir))
            .await
            .map_err(|e| ServiceError::internal("The session's files cannot be removed", &e))?
            .map_err(|e| ServiceError::internal("The session's files cannot be removed", &e))?;
        // After the directory is gone: a write-back still waiting (an upload's) then finds
        // nothing to write, and cannot bring the manifest back.
        self.files.forget(id).await;
        Ok(())
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
            if entry.idle_for() >= self.idle_timeout && entry.stop_if_idle().await {
                tracing::info!(session = %entry.record.id, "stopped an idle session's Python process");
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

    /// Stops every Python process (after the executions ended), warm ones included.
    pub async fn stop_all(&self) {
        let warm: Vec<WarmSession> = lock(&self.warm).drain(..).collect();
        for session in warm {
            session.discard(self).await;
        }
        let entries: Vec<Arc<Entry>> = self.read_entries().values().cloned().collect();
        let stops = entries.into_iter().map(|entry| async move {
            let mut slot = entry.slot.clone().lock_owned().await;
            if let Some(live) = slot.live.take() {
                live.shutdown().await;
            }
        });
        futures_util::future::join_all(stops).await;
        if let Err(error) = self.store.release_node(&self.node.id, true).await {
            tracing::warn!("cannot record that this node leaves: {error}");
        }
        // The files stay in the disk images, mounted again at the next start.
        let runtime = self.runtime.clone();
        let _ = tokio::task::spawn_blocking(move || runtime.disks().unmount_all()).await;
    }

    /// Claims a stopped session for this node and starts its Python process. Refused when
    /// another live node runs it.
    async fn resume(&self, entry: &Entry) -> Result<Live, ServiceError> {
        let id = &entry.record.id;
        let claim = self
            .store
            .claim_session(id, &self.node.id, self.node.alive_since())
            .await
            .map_err(|e| {
                ServiceError::internal("The session cannot be claimed for this node", &e)
            })?;
        let epoch = match claim {
            Claim::Held { epoch } => epoch,
            Claim::Elsewhere { url } => return Err(runs_elsewhere(id, &url)),
            Claim::Gone => {
                // Deleted through another node.
                self.write_entries().remove(id);
                return Err(ServiceError::not_found(format!("session {id}")));
            }
        };
        let lease = self.lease(id, epoch);
        match self.start(&entry.record, &entry.dir).await {
            Ok(mut live) => {
                live.lease = Some(lease);
                Ok(live)
            }
            Err(error) => {
                lease.release().await;
                Err(error)
            }
        }
    }

    /// Whether this node still holds the session `live` runs (no other node took it over).
    /// When the database cannot say, the session is not used: acting for a session
    /// another node may run is what the epoch exists to prevent.
    async fn still_holds(&self, live: &Live) -> Result<bool, ServiceError> {
        let Some(lease) = &live.lease else {
            return Ok(true);
        };
        self.store
            .holds_session(&lease.session_id, &self.node.id, lease.epoch)
            .await
            .map_err(|e| ServiceError::Unavailable {
                message: format!(
                    "The database cannot confirm that this node still runs session {}: {e}; try again.",
                    lease.session_id
                ),
                retry_after: RETRY_ELSEWHERE,
            })
    }

    fn lease(&self, session_id: &str, epoch: i64) -> Lease {
        Lease {
            store: self.store.clone(),
            node: self.node.clone(),
            session_id: session_id.to_owned(),
            epoch,
        }
    }

    /// Where a request for session `id` is to be handled: here, or on the live node that
    /// runs it. A session this node runs is here without asking the database.
    pub async fn route(&self, id: &str) -> Result<Route, ServiceError> {
        if let Some(entry) = self.read_entries().get(id) {
            if entry.runs_here() {
                return Ok(Route::Here);
            }
        }
        let kept = ROUTE_KEPT.min(self.node.timeout / 10);
        if let Some((url, read)) = lock(&self.routes).get(id) {
            if read.elapsed() < kept {
                return Ok(Route::Node(url.clone()));
            }
        }
        let owner = self
            .store
            .session_owner(id, &self.node.id, self.node.alive_since())
            .await
            .map_err(|e| ServiceError::internal("The session's node cannot be looked up", &e))?;
        let mut routes = lock(&self.routes);
        routes.remove(id);
        Ok(match owner {
            Owner::Node { url } => {
                if routes.len() >= ROUTES_KEPT {
                    routes.retain(|_, (_, read)| read.elapsed() < kept);
                }
                routes.insert(id.to_owned(), (url.clone(), Instant::now()));
                Route::Node(url)
            }
            Owner::Gone => {
                // Deleted through another node: forget it here too (unless it runs here).
                let mut entries = self.write_entries();
                if entries.get(id).is_some_and(|entry| !entry.runs_here()) {
                    entries.remove(id);
                }
                Route::Here
            }
            Owner::Free => Route::Here,
        })
    }

    /// This node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Writes this node's heartbeat until aborted (see [`Node::spawn_heartbeat`]).
    pub fn spawn_heartbeat(&self) -> JoinHandle<()> {
        self.node.spawn_heartbeat(self.store.clone())
    }

    /// Takes a place among the live sessions and starts a Python process in `dir`.
    async fn start(
        &self,
        record: &SessionRecord,
        workdir: &WorkDirPlace,
    ) -> Result<Live, ServiceError> {
        let place = self.take_place(record.user_id).await?;
        if let WorkDirPlace::Own(dir) = workdir {
            self.prepare_own_dir(record, dir).await?;
        }
        let session = self
            .runtime
            .create_session(SessionConfig {
                workdir: Some(workdir.path().to_path_buf()),
                limits: self.runtime_limits(&record.limits),
                network: NetPolicy::from_allowlist(record.network.clone()),
                environment: record.environment.clone(),
            })
            .await
            .map_err(|e| match e {
                // A session recorded before the operator removed its environment.
                SessionError::UnknownEnvironment { name, .. } => ServiceError::Conflict(format!(
                    "Session {} runs in the environment {name:?}, which this server no longer configures; add [environments.{name}] back to the config file and restart the server, or create a new session.",
                    record.id
                )),
                e => ServiceError::internal("The Python session could not start", &e),
            })?;
        Ok(Live {
            session,
            place,
            lease: None,
        })
    }

    /// Readies a session's own directory for its process (or for its files to be read):
    /// its disk mounted (at load, or again now), and, with a bucket, its files fetched when
    /// the directory is missing or empty (a node that never ran it, a lost disk) or
    /// another node wrote them since ([`SessionFiles::sync_down`]).
    async fn prepare_own_dir(
        &self,
        record: &SessionRecord,
        dir: &Path,
    ) -> Result<(), ServiceError> {
        // Only a bucket can give a missing directory its files back.
        let present = tokio::fs::try_exists(dir).await.unwrap_or(false);
        if !present && !self.files.keeps_copies() {
            return Err(ServiceError::Conflict(format!(
                "Session {}'s files are not on this node: it ran on another node, and files are kept only where a session runs (--files local); serve every node with --files s3://BUCKET/PREFIX so that any node can take a session over.",
                record.id
            )));
        }
        if !present {
            tokio::fs::create_dir(dir).await.map_err(|e| {
                ServiceError::internal("The session's directory cannot be made", &e)
            })?;
            self.make_disk(dir, &record.limits)
                .await
                .map_err(|e| ServiceError::internal("The session's disk cannot be made", &e))?;
        }
        let (runtime, owned) = (self.runtime.clone(), dir.to_path_buf());
        tokio::task::spawn_blocking(move || runtime.disks().attach(&disk_image(&owned), &owned))
            .await
            .map_err(|e| ServiceError::internal("The session's disk cannot be mounted", &e))?
            .map_err(|e| ServiceError::internal("The session's disk cannot be mounted", &e))?;
        let restored = self
            .files
            .sync_down(&record.id, dir, workdir_quota(record))
            .await
            .map_err(|e| ServiceError::internal("The session's files cannot be fetched", &e))?;
        if restored > 0 {
            tracing::info!(session = %record.id, "fetched {restored} files from the bucket");
        }
        Ok(())
    }

    /// A place for one more live session of `user_id`, making room when a quota is full
    /// (see [`Sessions::make_room`]); refused only when nothing can give way.
    async fn take_place(&self, user_id: i64) -> Result<Place, ServiceError> {
        loop {
            let elsewhere = self.run_elsewhere(user_id).await;
            match Places::take(&self.places, Holder::User(user_id), elsewhere) {
                Ok(place) => return Ok(place),
                Err(full) => {
                    if !self.make_room(full, user_id).await {
                        return Err(self.refusal(full));
                    }
                }
            }
        }
    }

    /// How many of `user_id`'s sessions other live nodes run (0 when the database cannot
    /// say: the quota then counts this node's only, as it does with one node).
    async fn run_elsewhere(&self, user_id: i64) -> usize {
        match self
            .store
            .sessions_run_elsewhere(user_id, &self.node.id, self.node.alive_since())
            .await
        {
            Ok(count) => usize::try_from(count).unwrap_or(usize::MAX),
            Err(error) => {
                tracing::warn!("the sessions other nodes run cannot be counted: {error}");
                0
            }
        }
    }

    /// Frees one place for `user_id` under the quota that is `full`: for the server's, a
    /// warm session goes first; then the least recently used idle session that frees a
    /// place (the user's own for the user's quota, anyone's for the server's) is stopped.
    /// False when every candidate is busy.
    async fn make_room(&self, full: Full, user_id: i64) -> bool {
        if full == Full::Server {
            let warm = self.pop_warm(|_| true).await;
            if let Some(warm) = warm {
                warm.discard(self).await;
                return true;
            }
        }
        let mut idle: Vec<Arc<Entry>> = self
            .read_entries()
            .values()
            .filter(|entry| full == Full::Server || entry.record.user_id == user_id)
            .cloned()
            .collect();
        idle.sort_by_key(|entry| std::cmp::Reverse(entry.idle_for()));
        for entry in idle {
            if entry.stop_if_idle().await {
                tracing::info!(session = %entry.record.id, "stopped an idle session's Python process to make room");
                return true;
            }
        }
        false
    }

    fn refusal(&self, full: Full) -> ServiceError {
        match full {
            Full::User => ServiceError::UserLimit {
                message: format!(
                    "You already have {} sessions running code, as many as this server allows one user; wait for one to finish, or delete one.",
                    self.places.max_per_user
                ),
                retry_after: RETRY_AFTER,
            },
            Full::Server => ServiceError::ServerFull {
                message: "The server already runs as many live sessions as it allows, all of them busy; try again later.".into(),
                retry_after: RETRY_AFTER,
            },
        }
    }

    /// A warm session of `environment` handed to `user_id` (its place becomes theirs),
    /// or `None` when there is none ready.
    async fn take_warm(
        &self,
        user_id: i64,
        environment: Option<&str>,
    ) -> Result<Option<WarmSession>, ServiceError> {
        let Some(mut warm) = self
            .pop_warm(|warm| warm.environment.as_deref() == environment)
            .await
        else {
            return Ok(None);
        };
        self.warm_taken.notify_one();
        loop {
            let elsewhere = self.run_elsewhere(user_id).await;
            match warm.live.place.transfer(Holder::User(user_id), elsewhere) {
                Ok(()) => return Ok(Some(warm)),
                Err(full) => {
                    if !self.make_room(full, user_id).await {
                        lock(&self.warm).push_front(warm);
                        return Err(self.refusal(full));
                    }
                }
            }
        }
    }

    /// The oldest warm session that is `wanted`, after the one starting (if any) is ready.
    async fn pop_warm(&self, wanted: impl Fn(&WarmSession) -> bool) -> Option<WarmSession> {
        let _started = self.warming.lock().await;
        let mut warm = lock(&self.warm);
        let at = warm.iter().position(wanted)?;
        warm.remove(at)
    }

    /// Keeps `warm_sessions` sessions started ahead of demand, each holding a place, as
    /// far as the server's quota allows; until aborted.
    pub fn spawn_warm_refill(self: &Arc<Self>) -> JoinHandle<()> {
        let sessions = self.clone();
        tokio::spawn(async move {
            loop {
                sessions.refill_warm().await;
                // Taken sessions wake the task at once; a full server is looked at again.
                let _ = tokio::time::timeout(WARM_RECHECK, sessions.warm_taken.notified()).await;
            }
        })
    }

    /// Tops up the warm sessions of the base environment, then of each configured one.
    async fn refill_warm(&self) {
        let configured = self.runtime.environments().iter().map(|l| l.name());
        for environment in std::iter::once(None).chain(configured.map(Some)) {
            let warm_of = || {
                lock(&self.warm)
                    .iter()
                    .filter(|warm| warm.environment.as_deref() == environment)
                    .count()
            };
            while warm_of() < self.warm_size && !self.shutting_down.load(Ordering::SeqCst) {
                if !self.start_warm(environment).await {
                    break;
                }
            }
        }
    }

    /// Starts one warm session of `environment`; false when none could be (no place:
    /// live sessions come first; or a failure, after a pause).
    async fn start_warm(&self, environment: Option<&str>) -> bool {
        let _starting = self.warming.lock().await;
        let Ok(place) = Places::take(&self.places, Holder::Warm, 0) else {
            return false;
        };
        let Ok(id) = random_hex(16) else {
            return false;
        };
        let dir = self.sessions_dir.join(&id);
        if let Err(error) = tokio::fs::create_dir(&dir).await {
            tracing::warn!("cannot make a warm session's directory: {error}");
            return false;
        }
        if let Err(error) = self.make_disk(&dir, &self.warm_limits).await {
            tracing::warn!("cannot make a warm session's disk: {error}");
            self.remove_dir(dir).await;
            return false;
        }
        let started = self
            .runtime
            .create_session(SessionConfig {
                workdir: Some(dir.clone()),
                limits: self.runtime_limits(&self.warm_limits),
                network: NetPolicy::None,
                environment: environment.map(str::to_owned),
            })
            .await;
        match started {
            Ok(session) => {
                lock(&self.warm).push_back(WarmSession {
                    id,
                    environment: environment.map(str::to_owned),
                    live: Live {
                        session,
                        place,
                        lease: None,
                    },
                });
                true
            }
            Err(error) => {
                tracing::warn!("a warm session could not start: {error}");
                drop(place);
                self.remove_dir(dir).await;
                false
            }
        }
    }

    /// Gives a new session directory its filesystem (when the kernel enforces quotas).
    async fn make_disk(
        &self,
        dir: &Path,
        limits: &SessionLimits,
    ) -> Result<bool, sandcell_session::SessionError> {
        let quota = self.runtime_limits(limits).workdir_quota_bytes();
        let (runtime, dir) = (self.runtime.clone(), dir.to_path_buf());
        tokio::task::spawn_blocking(move || runtime.disks().create(&disk_image(&dir), &dir, quota))
            .await
            .map_err(|e| sandcell_session::SessionError::Disk(e.to_string()))?
    }

    /// Removes a session's own directory, with its disk; failures are logged.
    async fn remove_dir(&self, dir: PathBuf) {
        let shown = dir.display().to_string();
        let runtime = self.runtime.clone();
        let removed =
            tokio::task::spawn_blocking(move || runtime.disks().remove(&disk_image(&dir), &dir))
                .await;
        match removed {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!("cannot remove {shown}: {error}"),
            Err(error) => tracing::warn!("cannot remove {shown}: {error}"),
        }
    }

    /// Whether sessions run in the sandbox (without it, they reach the host's network).
    fn sandboxed(&self) -> bool {
        matches!(self.runtime.isolation(), Isolation::Sandbox(_))
    }

    /// The runtime's limits for a session with `limits`, under the server's output bound.
    fn runtime_limits(&self, limits: &SessionLimits) -> sandcell_session::Limits {
        sandcell_session::Limits {
            output_mib: self.output_mib,
            ..limits.to_runtime()
        }
    }

    /// The session `id` if it belongs to `user`; another user's session is "not found",
    /// so ids reveal nothing.
    /// A session created through another node since this one started is read from the
    /// database the first time it is asked for.
    fn find(&self, user: &User, id: &str) -> Result<Arc<Entry>, ServiceError> {
        let known = self.read_entries().get(id).cloned();
        let entry = match known {
            Some(entry) => entry,
            None => self.load_entry(id)?,
        };
        Some(entry)
            .filter(|entry| entry.record.user_id == user.id)
            .ok_or_else(|| ServiceError::not_found(format!("session {id}")))
    }

    /// Session `id` from the database, now known here (stopped); not found when the
    /// database has no such session.
    fn load_entry(&self, id: &str) -> Result<Arc<Entry>, ServiceError> {
        let (record, conversation) = self
            .store
            .session_blocking(id)
            .map_err(|e| {
                ServiceError::internal("The session cannot be read from the database", &e)
            })?
            .ok_or_else(|| ServiceError::not_found(format!("session {id}")))?;
        let dir = WorkDirPlace::Own(self.sessions_dir.join(id));
        let entry = Arc::new(Entry::new(dir, record, conversation, None));
        // Another request may have loaded it meanwhile: the first one stays.
        Ok(self
            .write_entries()
            .entry(id.to_owned())
            .or_insert(entry)
            .clone())
    }

    fn refuse_when_shutting_down(&self) -> Result<(), ServiceError> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(ServiceError::shutting_down());
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
    fn new(
        dir: WorkDirPlace,
        record: SessionRecord,
        conversation_id: Option<String>,
        live: Option<Live>,
    ) -> Self {
        let last_used = (Instant::now(), record.last_used_at.clone());
        Self {
            dir,
            record,
            conversation_id: Mutex::new(conversation_id),
            slot: Arc::new(tokio::sync::Mutex::new(Slot { live })),
            running: Mutex::new(None),
            executions: Mutex::default(),
            last_used: Mutex::new(last_used),
            deleted: AtomicBool::new(false),
        }
    }

    /// The session's lock, or `Busy` when an execution holds it.
    fn lock(self: &Arc<Self>) -> Result<OwnedMutexGuard<Slot>, ServiceError> {
        let slot = self.slot.clone().try_lock_owned().map_err(|_| {
            ServiceError::Busy(
                "This session is busy with another execution; wait for it to end or interrupt it."
                    .into(),
            )
        })?;
        if self.deleted.load(Ordering::SeqCst) {
            return Err(ServiceError::not_found(format!(
                "session {}",
                self.record.id
            )));
        }
        Ok(slot)
    }

    /// Stops the Python process if the session is live and not in use; true if it did.
    async fn stop_if_idle(self: &Arc<Self>) -> bool {
        let Ok(mut slot) = self.slot.clone().try_lock_owned() else {
            return false;
        };
        match slot.live.take() {
            Some(live) => {
                live.shutdown().await;
                true
            }
            None => false,
        }
    }

    /// The session as clients see it, on a runtime that is `sandboxed` or not.
    /// The session as this node sees it; `elsewhere`: the address of another live node
    /// that runs it (its process is idle or busy there; this node cannot tell which).
    fn info(&self, sandboxed: bool, here: &Node, elsewhere: Option<String>) -> SessionInfo {
        let state = match self.slot.try_lock() {
            Err(_) => SessionState::Busy,
            Ok(slot) if slot.live.is_some() => SessionState::Idle,
            Ok(_) if elsewhere.is_some() => SessionState::Idle,
            Ok(_) => SessionState::Stopped,
        };
        let node = match state {
            SessionState::Stopped => None,
            _ => elsewhere.or_else(|| Some(here.url.clone()).filter(|url| !url.is_empty())),
        };
        SessionInfo {
            id: self.record.id.clone(),
            created_at: self.record.created_at.clone(),
            last_used_at: self.last_used().1.clone(),
            state,
            limits: self.record.limits.clone(),
            network: NetworkAccess::of(sandboxed, &self.record.network),
            environment: self.record.environment.clone(),
            conversation_id: self.conversation(),
            execution_id: self.running_execution(),
            node,
        }
    }

    /// Whether this node runs the session's process now (or is starting it).
    fn runs_here(&self) -> bool {
        match self.slot.try_lock() {
            Err(_) => true,
            Ok(slot) => slot.live.is_some(),
        }
    }

    fn quota(&self) -> u64 {
        workdir_quota(&self.record)
    }

    fn running_execution(&self) -> Option<String> {
        lock(&self.executions)
            .iter()
            .rev()
            .find(|log| log.state() == ExecutionState::Running)
            .map(|log| log.id.clone())
    }

    fn conversation(&self) -> Option<String> {
        lock(&self.conversation_id).clone()
    }

    fn interrupt(&self) -> bool {
        self.running()
            .as_ref()
            .is_some_and(|running| running.interrupter.interrupt())
    }

    /// Keeps `log` among the session's executions, dropping those past their time.
    fn keep_execution(&self, log: Arc<ExecutionLog>, retention: Duration) {
        let mut executions = lock(&self.executions);
        executions.retain(|kept| !kept.expired(retention));
        executions.push_back(log);
        while executions.len() > KEPT_EXECUTIONS {
            executions.pop_front();
        }
    }

    fn execution(&self, id: &str, retention: Duration) -> Option<Arc<ExecutionLog>> {
        lock(&self.executions)
            .iter()
            .find(|log| log.id == id && !log.expired(retention))
            .cloned()
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
        lock(&self.running)
    }

    fn last_used(&self) -> MutexGuard<'_, (Instant, String)> {
        lock(&self.last_used)
    }
}

/// Locks a mutex whose data stays whole even if a holder panicked (each is replaced or
/// appended to in one step).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl WarmSession {
    /// Stops the process and removes the directory: it was never anyone's.
    async fn discard(self, sessions: &Sessions) {
        self.live.shutdown().await;
        sessions
            .remove_dir(sessions.sessions_dir.join(&self.id))
            .await;
    }
}

impl Checkout {
    /// The Python session, for the work this checkout was taken for.
    pub fn session(&mut self) -> Result<&mut Session, ServiceError> {
        match self.slot.live.as_mut() {
            Some(live) => Ok(&mut live.session),
            None => Err(ServiceError::Internal(
                "The session has no Python process.".into(),
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
    pub async fn finish(mut self, mut broken: bool) {
        *self.entry.running() = None;
        if let WorkDirPlace::Own(dir) = &self.entry.dir {
            if self.files.keeps_copies() && !self.still_held().await {
                // Taken over while this use ran (this node was cut off): the session's
                // files in the bucket are the new owner's now.
                tracing::warn!(session = %self.entry.record.id, "another node took this session over; its files here are not written back");
                broken = true;
            } else {
                self.files
                    .write_back(&self.entry.record.id, dir, self.entry.quota())
                    .await;
            }
        }
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

    /// Whether this node still holds the session (true when it cannot tell: the write-back
    /// then goes ahead, as it does on one node).
    async fn still_held(&self) -> bool {
        let Some(lease) = self.slot.live.as_ref().and_then(|live| live.lease.as_ref()) else {
            return true;
        };
        self.store
            .holds_session(&lease.session_id, &lease.node.id, lease.epoch)
            .await
            .unwrap_or(true)
    }

    async fn execute(
        mut self,
        code: String,
        timeout: Duration,
        mut on_event: impl FnMut(&ExecEvent) + Send,
    ) -> Result<Execution, ServiceError> {
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
            Some(Err(error)) => Err(ServiceError::internal(
                "The Python session could not be driven",
                &error,
            )),
            None => Err(ServiceError::ShuttingDown(
                "The server shut down during this execution and stopped its Python process; variables are gone, files in /mnt/data remain.".into(),
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
    /// Stops the process and lets the session go, for any node to run next.
    async fn shutdown(self) {
        if let Err(error) = self.session.shutdown().await {
            tracing::warn!("a session did not shut down cleanly: {error}");
        }
        if let Some(lease) = self.lease {
            lease.release().await;
        }
    }

    /// Stops the process of a session another node took over (its hold is not this
    /// node's to release).
    async fn abandon(mut self) {
        self.lease = None;
        self.shutdown().await;
    }
}

impl Lease {
    async fn release(self) {
        if let Err(error) = self
            .store
            .release_session(&self.session_id, &self.node.id, self.epoch)
            .await
        {
            // The session stays this node's in the database until the node restarts or
            // claims it again; other nodes send its requests here meanwhile.
            tracing::warn!(session = %self.session_id, "cannot record that this node stopped the session: {error}");
        }
    }
}

/// The refusal of a request for a session that the live node at `url` runs (a door that
/// forwards such requests does so before asking the core).
fn runs_elsewhere(id: &str, url: &str) -> ServiceError {
    let message = if url.is_empty() {
        format!("Session {id} runs on another node, which gives no address to reach it by; try again once that node stopped it or is gone.")
    } else {
        format!("Session {id} runs on another node ({url}); send the request there, or try again once that node stopped it.")
    };
    ServiceError::Unavailable {
        message,
        retry_after: RETRY_ELSEWHERE,
    }
}

/// A session's disk quota, in bytes: also the most of its files written back or fetched.
fn workdir_quota(record: &SessionRecord) -> u64 {
    record.limits.to_runtime().workdir_quota_bytes()
}

/// The disk image of a session's own directory `sessions/ID`: `sessions/ID.disk`.
fn disk_image(dir: &Path) -> PathBuf {
    dir.with_extension("disk")
}

/// Removes what belongs to no session: directories of sessions not in the database (and
/// their disks), and every staged upload (none is in progress before the server
/// starts). The disks of the sessions that are kept are mounted again.
fn sweep(
    disks: &Disks,
    sessions_dir: &Path,
    known: &[String],
    staging_dir: &Path,
) -> Result<(), StartError> {
    let data_dir_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StartError::DataDir { path, source }
    };
    std::fs::create_dir_all(sessions_dir).map_err(data_dir_error(sessions_dir))?;
    for entry in std::fs::read_dir(sessions_dir).map_err(data_dir_error(sessions_dir))? {
        let entry = entry.map_err(data_dir_error(sessions_dir))?;
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        // `ID`, or `ID.disk` beside it.
        let id = if is_dir {
            path.file_name()
        } else {
            path.file_stem()
        };
        let known_id = id.is_some_and(|id| known.iter().any(|k| id == k.as_str()));
        if known_id && is_dir {
            if let Err(error) = disks.attach(&disk_image(&path), &path) {
                tracing::warn!("{error}; it is mounted again when the session starts");
            }
        } else if !known_id {
            tracing::info!("removing {}, which belongs to no session", path.display());
            if is_dir {
                disks
                    .remove(&disk_image(&path), &path)
                    .map_err(|e| StartError::DataDir {
                        path: path.clone(),
                        source: std::io::Error::other(e.to_string()),
                    })?;
            } else {
                match std::fs::remove_file(&path) {
                    // An image removed just before, with its directory.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    removed => removed.map_err(data_dir_error(&path))?,
                }
            }
        }
    }
    if staging_dir.exists() {
        std::fs::remove_dir_all(staging_dir).map_err(data_dir_error(staging_dir))?;
    }
    std::fs::create_dir_all(staging_dir).map_err(data_dir_error(staging_dir))
}

/// The record of a session created now.
fn new_record(
    id: String,
    user: &User,
    limits: SessionLimits,
    network: Allowlist,
    environment: Option<String>,
) -> SessionRecord {
    let now = store::now();
    SessionRecord {
        id,
        user_id: user.id,
        created_at: now.clone(),
        last_used_at: now,
        limits,
        network,
        environment,
    }
}
