//! The template process: a Python interpreter that has imported the data stack once and
//! forks every session from that state (see ARCHITECTURE.md, "Process model").

use crate::error::SessionError;
use crate::launcher::{LaunchFuture, Launched, Launcher, SpawnRequest};
use crate::view::NeutralView;
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{
    recv, sendmsg, setsockopt, socketpair, sockopt, AddressFamily, ControlMessage, MsgFlags,
    SockFlag, SockType, UnixAddr,
};
use nix::sys::time::TimeVal;
use serde::Deserialize;
use std::collections::{BTreeMap, VecDeque};
use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The fd on which the template finds its control socket.
const CONTROL_FD: i32 = 3;
/// Importing pandas and matplotlib on a loaded machine can take a while.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
const SPAWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of the template's stderr kept to explain a failure.
const STDERR_LINES: usize = 40;

/// How to start the template.
#[derive(Debug, Clone)]
pub struct TemplateCommand {
    pub python: PathBuf,
    /// The complete environment of the template (and so of every session).
    pub env: BTreeMap<String, String>,
    /// The view the template runs in, if the environment is at neutral paths.
    pub(crate) view: Option<Arc<NeutralView>>,
}

/// A running template process.
pub struct Template {
    child: tokio::process::Child,
    control: Arc<Mutex<OwnedFd>>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    /// Modules that failed to import, with the reason.
    pub failed_modules: BTreeMap<String, String>,
}

/// The real [`Launcher`]: forks sessions from the template process, starting a new
/// template when the old one died.
pub struct TemplateLauncher {
    command: TemplateCommand,
    template: tokio::sync::Mutex<Option<Template>>,
}

impl TemplateLauncher {
    /// Starts the template; also returns the modules it failed to import, with why.
    pub async fn start(
        command: TemplateCommand,
    ) -> Result<(Self, BTreeMap<String, String>), SessionError> {
        let mut template = Template::start(&command).await?;
        let failed_modules = std::mem::take(&mut template.failed_modules);
        let launcher = Self {
            command,
            template: tokio::sync::Mutex::new(Some(template)),
        };
        Ok((launcher, failed_modules))
    }
}

impl Launcher for TemplateLauncher {
    fn launch<'a>(&'a self, request: &'a SpawnRequest) -> LaunchFuture<'a> {
        Box::pin(async move {
            let mut template = self.template.lock().await;
            let alive = template.as_mut().is_some_and(Template::is_alive);
            if !alive {
                tracing::warn!("the template process is gone; starting a new one");
                *template = Some(Template::start(&self.command).await?);
            }
            match template.as_ref() {
                Some(template) => template.spawn(request).await,
                None => Err(SessionError::Closed),
            }
        })
    }

    fn signal(&self, pid: i32, signal: Signal) -> bool {
        kill(nix::unistd::Pid::from_raw(pid), signal).is_ok()
    }
}

#[derive(Deserialize)]
struct Hello {
    ready: bool,
    #[serde(default)]
    failed_modules: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct SpawnReply {
    ok: bool,
    keeper_pid: Option<i32>,
    error: Option<String>,
}

impl Template {
    pub async fn start(command: &TemplateCommand) -> Result<Self, SessionError> {
        let (host_end, template_end) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| SessionError::TemplateStart(format!("socketpair: {e}")))?;
        let mut cmd = tokio::process::Command::new(&command.python);
        cmd.args(["-s", "-m", "sandcell_runtime.template"])
            .env_clear()
            .envs(&command.env)
            // Not the host's working directory, which nothing of a session should hold.
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Ctrl-C in the user's terminal is for sandcell, not for its sessions.
            .process_group(0)
            .kill_on_drop(true);
        let template_fd = template_end.as_raw_fd();
        let view = command.view.clone();
        // SAFETY: dup2 is async-signal-safe; it only touches the child's fd table. The
        // view's entry only makes system calls on strings prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(template_fd, CONTROL_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(view) = &view {
                    view.prepared().enter()?;
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| {
            SessionError::TemplateStart(format!("cannot run {}: {e}", command.python.display()))
        })?;
        drop(template_end);

        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(stderr) = child.stderr.take() {
            let tail = stderr_tail.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::debug!(target: "sandcell::template", "{line}");
                    if let Ok(mut tail) = tail.lock() {
                        if tail.len() == STDERR_LINES {
                            tail.pop_front();
                        }
                        tail.push_back(line);
                    }
                }
            });
        }

        let control = Arc::new(Mutex::new(host_end));
        let hello: Result<Hello, String> = request(&control, None, READY_TIMEOUT).await;
        let mut template = Self {
            child,
            control,
            stderr_tail,
            failed_modules: BTreeMap::new(),
        };
        match hello {
            Ok(hello) if hello.ready => {
                template.failed_modules = hello.failed_modules;
                Ok(template)
            }
            Ok(_) => Err(SessionError::TemplateStart(
                "it did not say it was ready".into(),
            )),
            Err(e) => {
                // Give the stderr reader a moment to collect the traceback.
                let _ = tokio::time::timeout(Duration::from_secs(2), template.child.wait()).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err(SessionError::TemplateStart(format!(
                    "{e}{}",
                    template.stderr_excerpt()
                )))
            }
        }
    }

    /// Whether the process still runs.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Forks a new session (keeper and session processes).
    pub async fn spawn(&self, spawn: &SpawnRequest) -> Result<Launched, SessionError> {
        let (host_socket, session_socket) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| SessionError::Spawn(format!("socketpair: {e}")))?;
        let (status_read, status_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| SessionError::Spawn(format!("pipe: {e}")))?;
        let body = serde_json::to_vec(spawn).map_err(|e| SessionError::Spawn(e.to_string()))?;
        let reply: SpawnReply = request(
            &self.control,
            Some((body, [session_socket, status_write])),
            SPAWN_TIMEOUT,
        )
        .await
        .map_err(|e| SessionError::Spawn(format!("{e}{}", self.stderr_excerpt())))?;
        match (reply.ok, reply.keeper_pid) {
            (true, Some(_keeper_pid)) => Ok(Launched {
                socket: host_socket,
                status: status_read,
            }),
            _ => Err(SessionError::Spawn(
                reply.error.unwrap_or_else(|| "the template refused".into()),
            )),
        }
    }

    fn stderr_excerpt(&self) -> String {
        let tail = match self.stderr_tail.lock() {
            Ok(tail) => tail.iter().cloned().collect::<Vec<_>>().join("\n"),
            Err(_) => String::new(),
        };
        if tail.trim().is_empty() {
            String::new()
        } else {
            format!("; it printed:\n{tail}")
        }
    }
}

/// Sends one message (with the descriptors to pass, if any) and reads one reply, on a
/// blocking thread: SOCK_SEQPACKET with SCM_RIGHTS has no tokio type.
async fn request<T: serde::de::DeserializeOwned + Send + 'static>(
    control: &Arc<Mutex<OwnedFd>>,
    message: Option<(Vec<u8>, [OwnedFd; 2])>,
    timeout: Duration,
) -> Result<T, String> {
    let control = control.clone();
    let exchange = move || -> Result<T, String> {
        let socket = control
            .lock()
            .map_err(|_| "the control socket is unusable".to_string())?;
        let fd = socket.as_raw_fd();
        if let Some((body, fds)) = &message {
            let raw = [fds[0].as_raw_fd(), fds[1].as_raw_fd()];
            let rights = [ControlMessage::ScmRights(&raw)];
            sendmsg::<UnixAddr>(fd, &[IoSlice::new(body)], &rights, MsgFlags::empty(), None)
                .map_err(|e| format!("cannot reach the template: {e}"))?;
        }
        let timeval = TimeVal::new(timeout.as_secs() as i64, 0);
        setsockopt(&*socket, sockopt::ReceiveTimeout, &timeval)
            .map_err(|e| format!("setsockopt: {e}"))?;
        let mut buf = vec![0u8; 64 * 1024];
        let n = recv(fd, &mut buf, MsgFlags::empty()).map_err(|e| match e {
            nix::errno::Errno::EAGAIN => format!("no answer within {} s", timeout.as_secs()),
            e => format!("cannot read from the template: {e}"),
        })?;
        if n == 0 {
            return Err("the template process exited".into());
        }
        serde_json::from_slice(&buf[..n]).map_err(|e| format!("bad reply from the template: {e}"))
    };
    tokio::task::spawn_blocking(exchange)
        .await
        .map_err(|e| format!("control thread failed: {e}"))?
}
