//! A session: a live Python process (forked from the template, inside its sandbox) whose
//! state persists across executions, and everything needed to drive and recover it.

use crate::cgroup_drain::wait_until_empty;
use crate::disks::{Disks, TempWorkDir};
use crate::error::{io_error, SessionError};
use crate::execution::{
    Completion, ExecEvent, ExecOptions, Execution, ExecutionError, NetworkAccess, Status,
};
use crate::isolation::{session_cgroup_name, Isolation};
use crate::launcher::Launcher;
use crate::limits::Limits;
use crate::network::SessionNetwork;
use crate::outputs::{thousands, Outputs};
use crate::ownership::give_to;
use crate::protocol::{
    write_frame, DoneStatus, Frame, FrameReader, HostMessage, KeeperEvent, Received, SessionMessage,
};
use crate::uids::UidLease;
use crate::workdir::{disk_usage, Snapshot};
use nix::sys::signal::Signal;
use sandcell_netproxy::{Allowlist, NetPolicy, PackageIndex};
use sandcell_pyenv::Package;
use sandcell_sandbox::disk;
use sandcell_sandbox::{CgroupLimits, Identity, SessionCgroup};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot, watch};

/// How long an interrupted execution has to stop before its process is killed.
const INTERRUPT_GRACE: Duration = Duration::from_secs(3);
/// How long a new session has to report that it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait for a keeper to report how its session ended.
const EXIT_REPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the kernel may take to answer a completion request (Jedi's first use, which
/// imports it, takes a second or two) before the session counts as broken.
const COMPLETE_TIMEOUT: Duration = Duration::from_secs(15);
/// At most this many matches of one completion are kept.
const MAX_MATCHES: usize = 1000;
/// At most this many bytes of one match are kept.
const MAX_MATCH_BYTES: usize = 1000;
/// How often a running execution's working directory is measured against the quota
/// (when the kernel does not enforce it).
const QUOTA_CHECK: Duration = Duration::from_millis(500);
/// What Python (and the C library) say for ENOSPC.
const NO_SPACE: &str = "No space left on device";
/// How long a killed session's keeper has to reap it and exit before the rest of the
/// cgroup is killed too.
const KEEPER_REAP_GRACE: Duration = Duration::from_secs(2);
/// How long a new process waits for the old one's tasks to leave the cgroup, and how
/// often it looks.
const CGROUP_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
const CGROUP_DRAIN_POLL: Duration = Duration::from_millis(5);
/// Frames read ahead of the execution that consumes them (their bytes are bounded too,
/// by the [`FrameReader`]).
const FRAME_QUEUE: usize = 64;
/// Room for a frame's JSON around the largest result it may carry.
const FRAME_OVERHEAD: usize = 1 << 20;

/// Where a session is in its life: one value at a time. [`Session::state`] reads it,
/// [`Session::watch_state`] follows it (also while an execution holds the session).
///
/// ```text
///  create() ─► Starting ──ready──► Idle ──execute()──► Running ──ended, or stopped by an
///                 ▲                 │ ▲                  │  │     interrupt in time──► Idle
///                 │   died while    │ └──────────────────┘  │
///                 │   idle (seen by │                       ├─ the process died (crash, OOM,
///                 │   the next      ▼                       │  exit) ──► Stopped { Died }
///                 │   execute)  Stopped { Died }            └─ sandcell killed it (an interrupt
///                 │                                            did not stop it, unreadable
///                 │                                            frames) ──► Stopped { Killed }
///                 └── execute() on Stopped {…}: a fresh process, and that execution reports
///                     `restarted: true`
///
///  a start that fails (Starting) ──► Stopped { StartFailed }
///  an execution or start given up midway (its future dropped) stays Running or Starting:
///  the next execution kills what is left and starts afresh, reporting `restarted: true`
///  restart() ──► Starting ──► Idle                 (fresh state, asked for: not "restarted")
///  mark_state_lost() on Idle ──► Idle { replaces_lost: true }   (the next execution reports
///                                                                `restarted: true`)
///  shutdown() ──► Stopped { ShutDown }, and the session is gone
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// A process is being started.
    Starting,
    /// A process is live and waiting for code. `replaces_lost`: its state stands in for
    /// one that was lost, and the next execution says so (`restarted: true`).
    Idle { replaces_lost: bool },
    /// An execution is running.
    Running,
    /// No process; the next execution starts a fresh one and says so.
    Stopped { reason: StopReason },
}

/// Why a session has no process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// It died by itself: a crash, the memory limit, an exit.
    Died,
    /// sandcell killed it: a time limit or quota an interrupt did not enforce, or frames
    /// it could not read.
    Killed,
    /// Starting a new one failed.
    StartFailed,
    /// The session was shut down.
    ShutDown,
}

/// What a session is created with.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Host directory mounted at `/mnt/data`; it must exist. `None`: a fresh directory
    /// that belongs to the session and is removed when the session goes (such sessions
    /// can come ready-made from the runtime's pool); it is a filesystem of its own when
    /// the runtime's [`Disks`] say so. A directory given here has the kernel's quota
    /// when it was made by [`Disks::create`] or [`Disks::attach`], else a measured one.
    pub workdir: Option<PathBuf>,
    pub limits: Limits,
    /// What the session may reach on the network: nothing (the default), or an
    /// allowlist enforced by the host's proxy (sandboxed sessions only).
    pub network: NetPolicy,
    /// The configured environment the session runs in (`None`: the base environment).
    pub environment: Option<String>,
}

/// What every session of a runtime is created with: where its processes come from and
/// how they are isolated.
pub(crate) struct SessionFactory {
    /// Where sessions of the base environment come from.
    pub(crate) launcher: Arc<dyn Launcher>,
    /// Where sessions of each configured environment come from (its own template).
    pub(crate) layer_launchers: BTreeMap<String, LayerTemplate>,
    /// Held for as long as the runtime or any of its sessions lives, so that no setup
    /// removes the environment under them.
    pub(crate) environment: Option<sandcell_pyenv::Environment>,
    pub(crate) isolation: Isolation,
    pub(crate) disks: Disks,
    /// The index `%pip install` uses in sandboxed sessions, if the operator gave one.
    pub(crate) package_index: Option<PackageIndex>,
}

/// Numbers sessions across all runtimes of this process: their cgroups share a parent.
static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

impl SessionFactory {
    /// A new session with a process started. Its cgroup's name says which process owns it,
    /// so that a later sandcell can remove it if this one dies without doing so.
    pub(crate) async fn create(
        self: &Arc<Self>,
        config: SessionConfig,
    ) -> Result<Session, SessionError> {
        let n = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
        let name = session_cgroup_name(std::process::id(), n);
        Session::create(self.clone(), name, config).await
    }

    /// Where sessions of the environment `name` (`None`: the base one) come from, and
    /// what its layer adds.
    fn template_of(&self, name: Option<&str>) -> Result<LayerTemplate, SessionError> {
        let Some(name) = name else {
            return Ok(LayerTemplate {
                launcher: self.launcher.clone(),
                packages: Arc::new([]),
            });
        };
        self.layer_launchers
            .get(name)
            .cloned()
            .ok_or_else(|| SessionError::UnknownEnvironment {
                name: name.to_owned(),
                configured: self.layer_launchers.keys().cloned().collect(),
            })
    }
}

/// Where the sessions of one environment come from, and the packages its layer adds to
/// the base environment (none for the base itself).
#[derive(Clone)]
pub(crate) struct LayerTemplate {
    pub(crate) launcher: Arc<dyn Launcher>,
    pub(crate) packages: Arc<[Package]>,
}

/// A stateful Python session. Executions run one at a time (`&mut self`); use
/// [`Session::interrupter`] to interrupt one from elsewhere.
pub struct Session {
    factory: Arc<SessionFactory>,
    /// Where this session's processes come from: its environment's template.
    launcher: Arc<dyn Launcher>,
    /// The configured environment it runs in (`None`: the base one).
    environment: Option<String>,
    /// The packages that environment's layer adds to the base environment.
    layer_packages: Arc<[Package]>,
    workdir: PathBuf,
    /// The session's own directory, when it was not given one; removed on drop.
    _owned_workdir: Option<TempWorkDir>,
    /// The kernel enforces the working directory's quota (a filesystem of its own);
    /// otherwise the host measures it while a cell runs.
    kernel_quota: bool,
    limits: Limits,
    /// Who the session's processes run as (in a sandbox); kept across restarts.
    identity: Identity,
    /// The session's own ids, given back when it goes.
    _uid_lease: Option<UidLease>,
    cgroup: Option<SessionCgroup>,
    /// The proxy of a session whose policy has an allowlist.
    network: Option<SessionNetwork>,
    process: Option<Process>,
    interrupter: Interrupter,
    /// Invariant: `process` is `Some` exactly in `Idle` and `Running`.
    state: watch::Sender<SessionState>,
}

/// The live Python process of a session.
struct Process {
    pid: i32,
    launcher: Arc<dyn Launcher>,
    writer: OwnedWriteHalf,
    frames: mpsc::Receiver<std::io::Result<Option<Received>>>,
    exit: watch::Receiver<Option<ProcessExit>>,
}

/// How a session process ended, as its keeper saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProcessExit {
    Code(i32),
    Signal(i32),
    /// The keeper itself vanished before it could say.
    Unknown,
}

/// Interrupts the running execution of a session; cheap to clone and `Send`.
#[derive(Clone)]
pub struct Interrupter {
    inner: Arc<InterruptState>,
}

struct InterruptState {
    launcher: Arc<dyn Launcher>,
    pid: AtomicI32,
    requested: AtomicBool,
}

impl std::fmt::Debug for Interrupter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interrupter")
            .field("pid", &self.inner.pid.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl Interrupter {
    fn new(launcher: Arc<dyn Launcher>) -> Self {
        Self {
            inner: Arc::new(InterruptState {
                launcher,
                pid: AtomicI32::new(0),
                requested: AtomicBool::new(false),
            }),
        }
    }

    /// Sends the session a KeyboardInterrupt. Returns false when no process is live.
    pub fn interrupt(&self) -> bool {
        let pid = self.inner.pid.load(Ordering::SeqCst);
        if pid <= 0 {
            return false;
        }
        self.inner.requested.store(true, Ordering::SeqCst);
        self.inner.launcher.signal(pid, Signal::SIGINT)
    }

    fn take_request(&self) -> bool {
        self.inner.requested.swap(false, Ordering::SeqCst)
    }
}

/// Why sandcell stopped an execution itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Timeout,
    Quota,
}

/// How the wait for an execution's `done` ended.
enum Ending {
    /// The cell ran to its end, with its execution count.
    Done(DoneStatus, Option<u64>),
    /// The process died (crash, OOM, `os._exit`).
    Died,
    /// sandcell killed the process because an interrupt did not stop it.
    Killed(Stop),
    /// The session sent something unreadable on its socket.
    Broken(String),
}

impl Session {
    async fn create(
        factory: Arc<SessionFactory>,
        name: String,
        config: SessionConfig,
    ) -> Result<Self, SessionError> {
        let LayerTemplate {
            launcher,
            packages: layer_packages,
        } = factory.template_of(config.environment.as_deref())?;
        let (given, owned_workdir) = match config.workdir.clone() {
            Some(dir) => (dir, None),
            None => {
                // mkfs and mount block: off the async threads.
                let quota = config.limits.workdir_quota_bytes();
                let disks = factory.clone();
                let owned = tokio::task::spawn_blocking(move || disks.disks.temporary(quota))
                    .await
                    .map_err(|e| SessionError::Disk(e.to_string()))??;
                (owned.workdir.clone(), Some(owned))
            }
        };
        let workdir = given.canonicalize().map_err(io_error(&given))?;
        let mut uid_lease = None;
        let mut identity = Identity::for_current_process();
        let kernel_quota = match &owned_workdir {
            Some(owned) => owned.kernel_quota,
            None => factory.disks.enforces(&workdir),
        };
        let cgroup = match &factory.isolation {
            Isolation::Sandbox(policy) => {
                (identity, uid_lease) = policy.session_identity()?;
                if let Identity::DropFromRoot { uid, gid } = identity {
                    // The session runs as an unprivileged user: its directory must be its own.
                    // A directory that was a session's (under other ids) is given over
                    // whole; anyone else's keeps its files' owners.
                    let was_sessions = |owner: u32| {
                        owner == Identity::NOBODY
                            || policy.session_id_range().is_some_and(|range| {
                                owner.wrapping_sub(range.first_uid) < range.count
                            })
                    };
                    give_to(&workdir, uid, gid, was_sessions)
                        .map_err(|e| io_error(&workdir)(e.into()))?;
                }
                match &policy.cgroup {
                    Some(parent) => Some(
                        SessionCgroup::create(
                            parent,
                            &name,
                            &CgroupLimits {
                                memory_bytes: config.limits.memory_bytes(),
                                processes: config.limits.processes,
                                cpu_cores: config.limits.cpu_cores,
                            },
                        )
                        .map_err(|e| SessionError::Sandbox(e.to_string()))?,
                    ),
                    None => None,
                }
            }
            Isolation::None => None,
        };
        let network = match &factory.isolation {
            Isolation::None if config.network != NetPolicy::None => {
                return Err(SessionError::NetworkNeedsSandbox)
            }
            Isolation::None => None,
            Isolation::Sandbox(_) => SessionNetwork::start(
                &name,
                &config.network,
                factory.package_index.as_ref(),
                identity,
            )?,
        };
        let interrupter = Interrupter::new(launcher.clone());
        let mut session = Self {
            factory,
            launcher,
            environment: config.environment,
            layer_packages,
            workdir,
            _owned_workdir: owned_workdir,
            kernel_quota,
            limits: config.limits,
            identity,
            _uid_lease: uid_lease,
            cgroup,
            network,
            process: None,
            interrupter,
            state: watch::Sender::new(SessionState::Starting),
        };
        session.start_process().await?;
        Ok(session)
    }

    /// The host directory that is the session's `/mnt/data`.
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The configured environment the session runs in (`None`: the base one).
    pub fn environment(&self) -> Option<&str> {
        self.environment.as_deref()
    }

    /// The packages the session's configured environment adds to the base environment
    /// (none in the base environment), sorted by name.
    pub fn layer_packages(&self) -> &[Package] {
        &self.layer_packages
    }

    /// The session's network policy.
    pub fn network_policy(&self) -> &NetPolicy {
        static NONE: NetPolicy = NetPolicy::None;
        self.network.as_ref().map_or(&NONE, SessionNetwork::policy)
    }

    /// What the session's code can reach on the network, as an execution reports it.
    pub fn network_access(&self) -> NetworkAccess {
        let sandboxed = matches!(self.factory.isolation, Isolation::Sandbox(_));
        let empty = Allowlist::default();
        NetworkAccess::of(
            sandboxed,
            self.network_policy().allowlist().unwrap_or(&empty),
        )
    }

    /// Whether `%pip install` reaches a package index from this session (a sandboxed
    /// session of a runtime given one).
    pub fn installs_packages(&self) -> bool {
        self.network.is_some() && self.factory.package_index.is_some()
    }

    /// Bytes the session has moved through its proxy (both ways).
    pub fn network_bytes(&self) -> u64 {
        self.network.as_ref().map_or(0, SessionNetwork::bytes_used)
    }

    pub fn state(&self) -> SessionState {
        *self.state.borrow()
    }

    /// Follows the session's state from elsewhere, also while an execution runs.
    pub fn watch_state(&self) -> watch::Receiver<SessionState> {
        self.state.subscribe()
    }

    fn set_state(&self, state: SessionState) {
        self.state.send_replace(state);
    }

    /// The host pid of the session's process while it is live: in a sandbox, its init
    /// (PID 1 of its namespace), whose one child runs Python.
    pub fn pid(&self) -> Option<i32> {
        self.process.as_ref().map(|p| p.pid)
    }

    /// A handle that interrupts this session's running execution.
    pub fn interrupter(&self) -> Interrupter {
        self.interrupter.clone()
    }

    /// Runs `code` as one cell, with `options` for this execution only. `on_event` sees
    /// output as it is produced, within the execution's output limits (exactly what the
    /// returned [`Execution`] keeps). Failures of the code (exceptions, crashes, timeouts)
    /// are in the returned [`Execution`]; an `Err` means the session itself could not be
    /// driven.
    pub async fn execute(
        &mut self,
        code: &str,
        options: &ExecOptions,
        on_event: &mut (dyn FnMut(&ExecEvent) + Send),
    ) -> Result<Execution, SessionError> {
        let timeout = options.timeout.unwrap_or(self.limits.timeout);
        let started = Instant::now();
        if self.process.as_ref().is_some_and(Process::has_exited) {
            self.kill_process().await; // what is left of it
            self.set_state(SessionState::Stopped {
                reason: StopReason::Died,
            });
        }
        let restarted = match self.state() {
            SessionState::Idle { replaces_lost } => replaces_lost,
            // Stopped; or Running or Starting, left so by an execution or a start whose
            // caller gave up on it midway: its process, if any, cannot be trusted.
            _ => {
                self.kill_process().await;
                self.start_process().await?;
                true
            }
        };
        self.set_state(SessionState::Running);
        let before = Snapshot::take(&self.workdir);
        let oom_kills_before = self.oom_kills();
        self.interrupter.take_request();

        let mut outputs = Outputs::new(&self.limits);
        let usage_before = (!self.kernel_quota).then(|| before.disk_usage());
        let (ending, stop) = self
            .run(code, timeout, usage_before, &mut outputs, on_event)
            .await;
        let user_interrupted = self.interrupter.take_request();

        let stopped_by_interrupt = outputs
            .error()
            .is_some_and(|e| e.ename == "KeyboardInterrupt");
        let execution_count = match ending {
            Ending::Done(_, count) => {
                self.set_state(SessionState::Idle {
                    replaces_lost: false,
                });
                count
            }
            _ => None,
        };
        let (status, error) = match (ending, stop) {
            (Ending::Done(DoneStatus::Error, _), Some(stop)) if stopped_by_interrupt => {
                // Interrupted by sandcell in time: the state survives.
                let what = self.stop_description(stop, timeout);
                let evalue =
                    format!("{what} and was interrupted; the session's variables are kept.");
                let mut error = stop_error(stop, evalue);
                if let Some(interrupt) = outputs.take_error() {
                    // Where the cell was when it was stopped, then why it was stopped.
                    let mut traceback = interrupt.traceback;
                    traceback.pop();
                    traceback.append(&mut error.traceback);
                    error.traceback = traceback;
                }
                (stop_status(stop), Some(error))
            }
            // A cell that finished just as sandcell stopped it reports what it did.
            (Ending::Done(DoneStatus::Ok, _), _) => (Status::Ok, outputs.take_error()),
            (Ending::Done(DoneStatus::Error, _), _) => {
                let status = if stopped_by_interrupt && user_interrupted {
                    Status::Interrupted
                } else {
                    Status::Error
                };
                (status, outputs.take_error())
            }
            (Ending::Died, _) => {
                let exit = self.wait_for_exit().await;
                let out_of_memory = self.oom_kills() > oom_kills_before;
                let reason = crash_reason(exit, out_of_memory, &self.limits);
                // Whatever is left of it (a keeper, a child the session started) goes too.
                self.kill_process().await;
                self.set_state(SessionState::Stopped {
                    reason: StopReason::Died,
                });
                let evalue = format!(
                    "The Python process died: {reason}. Its variables are lost; files in /mnt/data are kept, and the next execution starts a fresh session."
                );
                (
                    Status::Crashed,
                    Some(ExecutionError::sandcell("SessionCrashed", evalue)),
                )
            }
            (Ending::Broken(why), _) => {
                self.kill_process().await;
                self.set_state(SessionState::Stopped {
                    reason: StopReason::Killed,
                });
                let evalue = format!(
                    "The Python process broke the session protocol ({why}), so it was stopped. Its variables are lost; files in /mnt/data are kept, and the next execution starts a fresh session."
                );
                (
                    Status::Crashed,
                    Some(ExecutionError::sandcell("SessionCrashed", evalue)),
                )
            }
            (Ending::Killed(stop), _) => {
                self.kill_process().await;
                self.set_state(SessionState::Stopped {
                    reason: StopReason::Killed,
                });
                let what = self.stop_description(stop, timeout);
                let evalue = format!(
                    "{what} and did not stop when interrupted, so its Python process was stopped. Variables are lost; files in /mnt/data are kept, and the next execution starts a fresh session."
                );
                (stop_status(stop), Some(stop_error(stop, evalue)))
            }
        };

        let mut kept = outputs.finish(on_event);
        if error.as_ref().is_some_and(|e| e.evalue.contains(NO_SPACE)) {
            if let Some(note) = self.full_disk_note() {
                on_event(&ExecEvent::Stderr(note.clone()));
                kept.stderr.push_str(&note);
            }
        }
        let after = Snapshot::take(&self.workdir);
        Ok(Execution {
            status,
            stdout: kept.stdout,
            stderr: kept.stderr,
            results: kept.results,
            execute_result: kept.execute_result,
            execution_count,
            error,
            files: before.changes(&after),
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            restarted,
            truncated: kept.truncated,
            network: self.network_access(),
        })
    }

    /// One sentence for a cell that failed with "No space left on device" on a full
    /// working directory of its own (not on a full `/tmp`): which limit it reached. Full
    /// means less room than a write of a few MiB needs (a twentieth of the quota, at
    /// least 1 MiB), or no inode left.
    fn full_disk_note(&self) -> Option<String> {
        if !self.kernel_quota {
            return None;
        }
        let usage = disk::usage(&self.workdir).ok()?;
        let quota = self.limits.workdir_quota_bytes();
        let limit = if usage.free_inodes == 0 {
            format!(
                "its limit of {} files and directories",
                thousands(disk::inode_count(quota))
            )
        } else if usage.free_bytes < (quota / 20).max(1 << 20) {
            format!("its {} MiB quota", self.limits.workdir_quota_mib)
        } else {
            return None;
        };
        Some(format!(
            "[sandcell: /mnt/data is full: it reached {limit}. Delete files there to make room.]\n"
        ))
    }

    /// Sends the code and collects outputs until `done`, the process's death, or a kill
    /// after an interrupt that did not work. Also says whether sandcell interrupted it.
    /// `usage_before`: the directory's measured usage, when the host enforces its quota.
    async fn run(
        &mut self,
        code: &str,
        timeout: Duration,
        usage_before: Option<u64>,
        outputs: &mut Outputs,
        on_event: &mut (dyn FnMut(&ExecEvent) + Send),
    ) -> (Ending, Option<Stop>) {
        let workdir = self.workdir.clone();
        let quota = self.limits.workdir_quota_bytes();
        let request = HostMessage::Execute {
            code,
            output_limit: self.limits.output_bytes(),
            results_limit: self.limits.results_bytes(),
            max_results: usize::try_from(self.limits.max_results).unwrap_or(usize::MAX),
        };
        let Some(process) = self.process.as_mut() else {
            return (Ending::Died, None);
        };
        if write_frame(&mut process.writer, &request).await.is_err() {
            return (Ending::Died, None);
        }
        // Only growth during this cell counts (`usage_before`): a directory already over
        // quota must still let the user run the cell that cleans it up.
        let mut stop: Option<Stop> = None;
        let mut deadline = tokio::time::Instant::now() + timeout;
        let mut quota_check =
            tokio::time::interval_at(tokio::time::Instant::now() + QUOTA_CHECK, QUOTA_CHECK);
        quota_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                frame = process.frames.recv() => match frame {
                    Some(Ok(Some(received))) => match received.frame {
                        Frame::Message { message: SessionMessage::Done { status, execution_count }, .. } => {
                            return (Ending::Done(status, execution_count), stop)
                        }
                        frame => outputs.apply(frame, on_event),
                    },
                    Some(Err(e)) => return (Ending::Broken(e.to_string()), stop),
                    Some(Ok(None)) | None => return (Ending::Died, stop),
                },
                _ = tokio::time::sleep_until(deadline) => match stop {
                    None => {
                        stop = Some(Stop::Timeout);
                        process.signal(Signal::SIGINT);
                        deadline = tokio::time::Instant::now() + INTERRUPT_GRACE;
                    }
                    Some(reason) => return (Ending::Killed(reason), stop),
                },
                _ = quota_check.tick(), if stop.is_none() && usage_before.is_some() => {
                    let usage = measure(&workdir).await;
                    if usage > quota && Some(usage) > usage_before {
                        stop = Some(Stop::Quota);
                        process.signal(Signal::SIGINT);
                        deadline = tokio::time::Instant::now() + INTERRUPT_GRACE;
                    }
                }
            }
        }
    }

    /// What IPython's completer offers at `cursor_pos` (in code points) of `code`, asked of
    /// the idle kernel between executions. A session with no live process offers nothing:
    /// completion starts none. A kernel that does not answer within `COMPLETE_TIMEOUT`, or
    /// dies meanwhile, is stopped, and the next execution starts a fresh one. What the
    /// kernel answers is bounded (matches and their size) and its positions kept within
    /// the code.
    pub async fn complete(
        &mut self,
        code: &str,
        cursor_pos: usize,
    ) -> Result<Completion, SessionError> {
        let length = code.chars().count();
        let cursor_pos = cursor_pos.min(length);
        let idle = matches!(self.state(), SessionState::Idle { .. });
        let Some(process) = self.process.as_mut().filter(|p| idle && !p.has_exited()) else {
            return Ok(Completion::none(cursor_pos));
        };
        let request = HostMessage::Complete { code, cursor_pos };
        let reply = match write_frame(&mut process.writer, &request).await {
            Ok(()) => tokio::time::timeout(COMPLETE_TIMEOUT, next_reply(process)).await,
            Err(e) => Ok(Err(e.to_string())),
        };
        let why = match reply {
            Ok(Ok((mut matches, cursor_start, cursor_end))) => {
                matches.truncate(MAX_MATCHES);
                matches.retain(|m| m.len() <= MAX_MATCH_BYTES);
                let cursor_end = cursor_end.min(length);
                return Ok(Completion {
                    matches,
                    cursor_start: cursor_start.min(cursor_end),
                    cursor_end,
                });
            }
            Ok(Err(why)) => why,
            Err(_) => format!(
                "no answer to a completion request within {} s",
                COMPLETE_TIMEOUT.as_secs()
            ),
        };
        self.kill_process().await;
        self.set_state(SessionState::Stopped {
            reason: StopReason::Killed,
        });
        Err(SessionError::Protocol(why))
    }

    fn stop_description(&self, stop: Stop, timeout: Duration) -> String {
        match stop {
            Stop::Timeout => format!(
                "The execution ran longer than its {} time limit",
                seconds(timeout)
            ),
            Stop::Quota => format!(
                "The working directory grew past its {} MiB quota",
                self.limits.workdir_quota_mib
            ),
        }
    }

    /// Starts a fresh Python process for this session (same directory, cgroup, limits):
    /// `Starting`, then `Idle`, or `Stopped { StartFailed }`.
    async fn start_process(&mut self) -> Result<(), SessionError> {
        self.set_state(SessionState::Starting);
        let started = self.launch_process().await;
        self.set_state(match started {
            Ok(()) => SessionState::Idle {
                replaces_lost: false,
            },
            Err(_) => SessionState::Stopped {
                reason: StopReason::StartFailed,
            },
        });
        started
    }

    async fn launch_process(&mut self) -> Result<(), SessionError> {
        // A process that died by itself (crash, lost template) may not be reaped yet.
        self.wait_for_empty_cgroup().await;
        let cgroup_procs = self
            .cgroup
            .as_ref()
            .map(SessionCgroup::procs_files)
            .unwrap_or_default();
        let request = self.factory.isolation.spawn_request(
            &self.workdir,
            &self.limits,
            self.identity,
            cgroup_procs,
            self.network.as_ref(),
        );
        let spawned = self.launcher.launch(&request).await?;

        let (started_tx, started_rx) = oneshot::channel();
        let (exit_tx, exit_rx) = watch::channel(None);
        let status = tokio::net::unix::pipe::Receiver::from_owned_fd(spawned.status)
            .map_err(|e| SessionError::Spawn(format!("status pipe: {e}")))?;
        tokio::spawn(follow_keeper(status, started_tx, exit_tx));

        let pid = match tokio::time::timeout(START_TIMEOUT, started_rx).await {
            Ok(Ok(Ok(pid))) => pid,
            Ok(Ok(Err(message))) => return Err(SessionError::Sandbox(message)),
            Ok(Err(_)) => {
                return Err(SessionError::Spawn(
                    "the session's keeper process exited before starting it".into(),
                ))
            }
            Err(_) => {
                return Err(SessionError::Spawn(format!(
                    "the session did not start within {} s",
                    START_TIMEOUT.as_secs()
                )))
            }
        };

        let socket = std::os::unix::net::UnixStream::from(spawned.socket);
        socket
            .set_nonblocking(true)
            .map_err(|e| SessionError::Spawn(e.to_string()))?;
        let socket = tokio::net::UnixStream::from_std(socket)
            .map_err(|e| SessionError::Spawn(e.to_string()))?;
        let (reader, writer) = socket.into_split();
        let mut reader = FrameReader::new(
            reader,
            self.limits.results_bytes().saturating_add(FRAME_OVERHEAD),
        );
        let (frames_tx, mut frames) = mpsc::channel(FRAME_QUEUE);
        // A dedicated reader keeps frame reads whole even when an execution's wait is
        // abandoned midway (timeouts), since reading a frame is not cancel-safe. While
        // no execution consumes frames (between cells) it waits, and the session's
        // writes wait with it: nothing queues up on the host.
        tokio::spawn(async move {
            loop {
                let frame = reader.next().await;
                let last = !matches!(frame, Ok(Some(_)));
                if frames_tx.send(frame).await.is_err() || last {
                    break;
                }
            }
        });
        let first = tokio::time::timeout(START_TIMEOUT, frames.recv()).await;
        let mut process = Process {
            pid,
            launcher: self.launcher.clone(),
            writer,
            frames,
            exit: exit_rx,
        };
        let first = match first {
            Ok(Some(Ok(Some(received)))) => Ok(Some(received.frame)),
            Ok(_) => Ok(None),
            Err(elapsed) => Err(elapsed),
        };
        match first {
            Ok(Some(Frame::Message {
                message: SessionMessage::Ready,
                ..
            })) => {}
            Ok(Some(Frame::Message {
                message: SessionMessage::Failed { message },
                ..
            })) => {
                process.signal(Signal::SIGKILL);
                return Err(SessionError::Sandbox(message));
            }
            Ok(_) => {
                let exit = wait_exit(&mut process.exit).await;
                return Err(SessionError::Spawn(format!(
                    "the Python process ended before it was ready: {}",
                    crash_reason(exit, false, &self.limits)
                )));
            }
            Err(_) => {
                process.signal(Signal::SIGKILL);
                return Err(SessionError::Spawn(format!(
                    "the session did not become ready within {} s",
                    START_TIMEOUT.as_secs()
                )));
            }
        }
        self.interrupter.inner.pid.store(pid, Ordering::SeqCst);
        self.process = Some(process);
        Ok(())
    }

    /// Kills the current process (its whole PID namespace) and waits until it is gone,
    /// from the cgroup too.
    async fn kill_process(&mut self) {
        if let Some(mut process) = self.process.take() {
            // The session alone first, so that its keeper reaps it. Killing the keeper at
            // the same time orphans the session to the host's init, and its zombie holds a
            // place under the pids limit until that init gets round to reaping it.
            process.signal(Signal::SIGKILL);
            let reaped = tokio::time::timeout(KEEPER_REAP_GRACE, wait_exit(&mut process.exit))
                .await
                .is_ok();
            if let Some(cgroup) = &self.cgroup {
                // Whatever is left, such as a keeper that did not exit.
                cgroup.kill_all();
            }
            if !reaped {
                wait_exit(&mut process.exit).await;
            }
        }
        self.interrupter.inner.pid.store(0, Ordering::SeqCst);
        self.wait_for_empty_cgroup().await;
    }

    /// Waits (bounded) until no task of an earlier process is left in the session's
    /// cgroup, so that a new process has the whole pids limit to itself.
    async fn wait_for_empty_cgroup(&self) {
        let Some(cgroup) = &self.cgroup else {
            return;
        };
        let procs_files = cgroup.procs_files();
        if let Err(left) =
            wait_until_empty(&procs_files, CGROUP_DRAIN_TIMEOUT, CGROUP_DRAIN_POLL).await
        {
            tracing::warn!(
                processes = left.processes,
                charged_tasks = left.charged_tasks,
                "the session's cgroup still holds tasks of its previous process after {} s; starting the new process anyway, with less of the process limit",
                CGROUP_DRAIN_TIMEOUT.as_secs()
            );
        }
    }

    async fn wait_for_exit(&mut self) -> ProcessExit {
        match self.process.as_mut() {
            Some(process) => wait_exit(&mut process.exit).await,
            None => ProcessExit::Unknown,
        }
    }

    fn oom_kills(&self) -> u64 {
        self.cgroup.as_ref().map_or(0, SessionCgroup::oom_kills)
    }

    /// This session takes the place of one whose Python state was lost (the server
    /// restarted, an idle session was stopped): its next execution says so
    /// (`restarted: true`), as after a crash.
    pub fn mark_state_lost(&mut self) {
        if let SessionState::Idle { .. } = self.state() {
            self.set_state(SessionState::Idle {
                replaces_lost: true,
            });
        }
    }

    /// Fresh Python state; files stay.
    pub async fn restart(&mut self) -> Result<(), SessionError> {
        self.kill_process().await;
        self.start_process().await
    }

    /// Stops the process and releases the cgroup. Files stay.
    pub async fn shutdown(mut self) -> Result<(), SessionError> {
        if let Some(process) = self.process.as_mut() {
            let _ = write_frame(&mut process.writer, &HostMessage::Shutdown).await;
            let _ =
                tokio::time::timeout(Duration::from_secs(2), wait_exit(&mut process.exit)).await;
        }
        self.kill_process().await;
        self.set_state(SessionState::Stopped {
            reason: StopReason::ShutDown,
        });
        if let Some(cgroup) = self.cgroup.take() {
            // Removal waits for the kernel to release the processes: not on an async thread.
            tokio::task::spawn_blocking(move || cgroup.remove())
                .await
                .map_err(|e| SessionError::Sandbox(e.to_string()))?
                .map_err(|e| SessionError::Sandbox(e.to_string()))?;
        }
        Ok(())
    }
}

/// Reads frames until the kernel's `complete_reply`. Output a thread of an earlier cell
/// wrote after that cell ended comes first, belongs to no execution, and is dropped.
async fn next_reply(process: &mut Process) -> Result<(Vec<String>, usize, usize), String> {
    loop {
        match process.frames.recv().await {
            Some(Ok(Some(Received {
                frame:
                    Frame::Message {
                        message:
                            SessionMessage::CompleteReply {
                                matches,
                                cursor_start,
                                cursor_end,
                            },
                        ..
                    },
                ..
            }))) => return Ok((matches, cursor_start, cursor_end)),
            Some(Ok(Some(_))) => {}
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(None)) | None => return Err("the Python process ended".into()),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(process) = &self.process {
            process.signal(Signal::SIGKILL);
        }
        if let Some(cgroup) = &self.cgroup {
            cgroup.kill_all();
            let _ = cgroup.remove();
        }
    }
}

impl Process {
    fn signal(&self, signal: Signal) {
        // A process already gone is fine: its exit is reported through the keeper.
        self.launcher.signal(self.pid, signal);
    }

    fn has_exited(&self) -> bool {
        self.exit.borrow().is_some()
    }
}

/// The working directory's disk usage, measured off the async threads.
async fn measure(workdir: &Path) -> u64 {
    let workdir = workdir.to_path_buf();
    tokio::task::spawn_blocking(move || disk_usage(&workdir))
        .await
        .unwrap_or(0)
}

/// Reads the keeper's status pipe: the session's pid once it started, then how it ended
/// (the first `exited` line: the session init's, or the keeper's if the init was killed).
async fn follow_keeper(
    status: tokio::net::unix::pipe::Receiver,
    started: oneshot::Sender<Result<i32, String>>,
    exit: watch::Sender<Option<ProcessExit>>,
) {
    let mut started = Some(started);
    let mut lines = tokio::io::BufReader::new(status).lines();
    let mut ended = ProcessExit::Unknown;
    while let Ok(Some(line)) = lines.next_line().await {
        match serde_json::from_str::<KeeperEvent>(&line) {
            Ok(KeeperEvent::Started { pid }) => {
                if let Some(started) = started.take() {
                    let _ = started.send(Ok(pid));
                }
            }
            Ok(KeeperEvent::Failed { message }) => {
                if let Some(started) = started.take() {
                    let _ = started.send(Err(message));
                }
            }
            // The first report is the session's own, from its init; the keeper's, after
            // the init's end, says only how the init ended (unless it was killed first).
            Ok(KeeperEvent::Exited { .. }) if ended != ProcessExit::Unknown => {}
            Ok(KeeperEvent::Exited { code, signal }) => {
                ended = match (signal, code) {
                    (Some(signal), _) => ProcessExit::Signal(signal),
                    (None, Some(code)) => ProcessExit::Code(code),
                    (None, None) => ProcessExit::Unknown,
                };
            }
            Err(e) => tracing::warn!("unreadable line from a session keeper: {e}"),
        }
    }
    let _ = exit.send(Some(ended));
}

/// How the process ended, as soon as its keeper says (bounded: a keeper that never
/// reports must not hang the caller).
async fn wait_exit(exit: &mut watch::Receiver<Option<ProcessExit>>) -> ProcessExit {
    match tokio::time::timeout(EXIT_REPORT_TIMEOUT, exit.wait_for(Option::is_some)).await {
        Ok(Ok(value)) => value.unwrap_or(ProcessExit::Unknown),
        _ => ProcessExit::Unknown,
    }
}

fn crash_reason(exit: ProcessExit, out_of_memory: bool, limits: &Limits) -> String {
    if out_of_memory {
        return format!(
            "it ran out of memory (the session's limit is {} MiB)",
            limits.memory_mib
        );
    }
    match exit {
        ProcessExit::Signal(number) => {
            let name = Signal::try_from(number).map_or("unknown signal", Signal::as_str);
            let what = match number {
                libc::SIGSEGV => "it crashed with a segmentation fault",
                libc::SIGABRT => "it aborted",
                libc::SIGBUS => "it crashed with a bus error",
                libc::SIGKILL => "it was killed",
                _ => "it was killed by a signal",
            };
            format!("{what} ({name})")
        }
        ProcessExit::Code(code) => format!("it exited with code {code}"),
        ProcessExit::Unknown => "it ended without a status".into(),
    }
}

/// A duration as a person reads it in seconds: "120 s", "1.5 s", "0.25 s". Rounded to
/// the millisecond, but never to "0 s" when it is not zero.
fn seconds(duration: Duration) -> String {
    let rounded_millis = (duration.as_nanos() + 500_000) / 1_000_000;
    let millis = if rounded_millis == 0 && !duration.is_zero() {
        1
    } else {
        rounded_millis
    };
    let (whole, fraction) = (millis / 1000, millis % 1000);
    if fraction == 0 {
        format!("{whole} s")
    } else {
        let fraction = format!("{fraction:03}");
        format!("{whole}.{} s", fraction.trim_end_matches('0'))
    }
}

fn stop_status(stop: Stop) -> Status {
    match stop {
        Stop::Timeout => Status::Timeout,
        Stop::Quota => Status::Error,
    }
}

fn stop_error(stop: Stop, evalue: String) -> ExecutionError {
    let ename = match stop {
        Stop::Timeout => "TimeoutError",
        Stop::Quota => "DiskQuotaExceeded",
    };
    ExecutionError::sandcell(ename, evalue)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_second_timeouts_are_not_shown_as_zero_seconds() {
        assert_eq!(seconds(Duration::from_millis(500)), "0.5 s");
        assert_eq!(seconds(Duration::from_millis(250)), "0.25 s");
        assert_eq!(seconds(Duration::from_millis(1)), "0.001 s");
        assert_eq!(seconds(Duration::from_micros(100)), "0.001 s");
        assert_eq!(seconds(Duration::from_secs_f64(0.3)), "0.3 s");
    }

    #[test]
    fn whole_and_mixed_seconds_read_naturally() {
        assert_eq!(seconds(Duration::from_secs(120)), "120 s");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(seconds(Duration::from_millis(2050)), "2.05 s");
        assert_eq!(seconds(Duration::ZERO), "0 s");
    }
}
