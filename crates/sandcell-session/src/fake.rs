//! A fake [`Launcher`] (feature `fake`): each session "process" is a task of this process
//! that speaks the session socket protocol and writes its keeper's status lines, so that a
//! session's lifecycle (start, crash, timeout, interrupt, restart, shutdown) is tested in
//! milliseconds, and higher crates can build a [`crate::Runtime`] on it
//! ([`crate::Runtime::with_launcher`]).
//!
//! A fake process runs a cell as a script, one command per line:
//!
//! | command | what the process does |
//! | --- | --- |
//! | `print TEXT`, `eprint TEXT` | writes a line on stdout, on stderr |
//! | `flood N` | writes N MiB of `x` on stdout, 64 KiB per frame |
//! | `result TEXT` | an `execute_result` with `text/plain` TEXT |
//! | `set NAME VALUE`, `get NAME` | state that lives as long as the process; `get` of an unset name raises `NameError` |
//! | `raise NAME` | raises NAME: an `error` frame, and the cell ends with `error` |
//! | `hang` | waits until interrupted (SIGINT raises `KeyboardInterrupt`) |
//! | `hang-hard` | waits, ignoring SIGINT; only SIGKILL ends it |
//! | `crash N` | the process dies by signal N |
//! | `exit N` | the process exits with code N |
//! | `garbage` | writes a frame that is not JSON |
//! | `announce N` | writes the header of an N-byte frame, and never its body |
//! | `mute-completion` | from now on, completion requests go unanswered |
//!
//! A completion request (`complete`) is answered with the names `set` so far that start
//! with the name before the cursor. Between cells SIGINT is ignored, as in the real session; SIGKILL and SIGTERM end the
//! process by that signal at any time.

use crate::error::SessionError;
use crate::launcher::{LaunchFuture, Launched, Launcher, SpawnRequest};
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

/// Fake pids start here, far from real ones: they only name the tasks.
const FIRST_PID: i32 = 1_000_000_000;

/// Starts fake session processes and records what was done to them.
pub struct FakeLauncher {
    this: Weak<FakeLauncher>,
    state: Mutex<FakeState>,
}

#[derive(Default)]
struct FakeState {
    next_pid: i32,
    launches: usize,
    live: HashMap<i32, mpsc::UnboundedSender<Signal>>,
    signals: Vec<(i32, Signal)>,
    /// The next launch's keeper reports this failure instead of starting the process.
    fail_next_launch: Option<String>,
}

/// How a fake process ended.
#[derive(Debug, Clone, Copy)]
enum Exit {
    Code(i32),
    Signal(i32),
}

impl FakeLauncher {
    pub fn new() -> Arc<Self> {
        Arc::new_cyclic(|this| Self {
            this: this.clone(),
            state: Mutex::default(),
        })
    }

    /// How many processes were launched so far.
    pub fn launches(&self) -> usize {
        self.state().launches
    }

    /// Every signal sent so far, in order: (pid, signal).
    pub fn signals(&self) -> Vec<(i32, Signal)> {
        self.state().signals.clone()
    }

    /// The pids of the processes that have not ended yet.
    pub fn live(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self.state().live.keys().copied().collect();
        pids.sort_unstable();
        pids
    }

    /// The next launch fails in its keeper (as a sandbox that cannot be built does).
    pub fn fail_next_launch(&self, message: &str) {
        self.state().fail_next_launch = Some(message.to_owned());
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn ended(&self, pid: i32) {
        self.state().live.remove(&pid);
    }
}

impl Launcher for FakeLauncher {
    fn launch<'a>(&'a self, _request: &'a SpawnRequest) -> LaunchFuture<'a> {
        Box::pin(async move {
            let spawn_error = |e: std::io::Error| SessionError::Spawn(e.to_string());
            let (host_socket, process_socket) =
                std::os::unix::net::UnixStream::pair().map_err(spawn_error)?;
            process_socket.set_nonblocking(true).map_err(spawn_error)?;
            let process_socket = UnixStream::from_std(process_socket).map_err(spawn_error)?;
            let (status_read, status_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| SessionError::Spawn(e.to_string()))?;
            let status =
                tokio::net::unix::pipe::Sender::from_owned_fd(status_write).map_err(spawn_error)?;
            let (signals_tx, signals) = mpsc::unbounded_channel();
            let (pid, failure) = {
                let mut state = self.state();
                state.launches += 1;
                let pid = FIRST_PID + state.next_pid;
                state.next_pid += 1;
                let failure = state.fail_next_launch.take();
                if failure.is_none() {
                    state.live.insert(pid, signals_tx);
                }
                (pid, failure)
            };
            let launcher = self.this.clone();
            tokio::spawn(async move {
                let mut keeper = Keeper { status };
                match failure {
                    Some(message) => {
                        keeper
                            .line(json!({"event": "failed", "message": message}))
                            .await
                    }
                    None => {
                        keeper.line(json!({"event": "started", "pid": pid})).await;
                        let exit = FakeProcess::run(process_socket, signals).await;
                        // As the real ones: the session's init reports the session's
                        // exit, then the keeper the init's (its exit code, as a shell
                        // encodes a signal); a killed init reports nothing.
                        let init_code = match exit {
                            Exit::Signal(libc::SIGKILL) => None,
                            Exit::Code(code) => {
                                keeper.line(json!({"event": "exited", "code": code})).await;
                                Some(code)
                            }
                            Exit::Signal(signal) => {
                                keeper
                                    .line(json!({"event": "exited", "signal": signal}))
                                    .await;
                                Some(128 + signal)
                            }
                        };
                        let keeper_line = match init_code {
                            Some(code) => json!({"event": "exited", "code": code}),
                            None => json!({"event": "exited", "signal": libc::SIGKILL}),
                        };
                        keeper.line(keeper_line).await;
                        // Only now: whoever saw it end can rely on the keeper's report.
                        if let Some(launcher) = launcher.upgrade() {
                            launcher.ended(pid);
                        }
                    }
                }
            });
            Ok(Launched {
                socket: OwnedFd::from(host_socket),
                status: status_read,
            })
        })
    }

    fn signal(&self, pid: i32, signal: Signal) -> bool {
        let mut state = self.state();
        state.signals.push((pid, signal));
        match state.live.get(&pid) {
            Some(process) => process.send(signal).is_ok(),
            None => false,
        }
    }
}

struct Keeper {
    status: tokio::net::unix::pipe::Sender,
}

impl Keeper {
    async fn line(&mut self, line: Value) {
        // The host may have stopped listening; the fake has nobody to tell.
        let _ = self.status.write_all(format!("{line}\n").as_bytes()).await;
    }
}

/// What a fake process waits on: the host's requests and the signals sent to it.
struct FakeProcess {
    writer: OwnedWriteHalf,
    requests: mpsc::UnboundedReceiver<Value>,
    signals: mpsc::UnboundedReceiver<Signal>,
    variables: BTreeMap<String, String>,
    /// Completion requests go unanswered (`mute-completion`).
    mute_completion: bool,
}

/// Why a cell stopped early.
enum Stopped {
    Interrupted,
    Exit(Exit),
}

impl FakeProcess {
    async fn run(socket: UnixStream, signals: mpsc::UnboundedReceiver<Signal>) -> Exit {
        let (reader, writer) = socket.into_split();
        let (requests_tx, requests) = mpsc::unbounded_channel();
        tokio::spawn(read_requests(reader, requests_tx));
        let mut process = Self {
            writer,
            requests,
            signals,
            variables: BTreeMap::new(),
            mute_completion: false,
        };
        process.send(json!({"type": "ready"})).await;
        loop {
            let request = tokio::select! {
                request = process.requests.recv() => request,
                signal = process.signals.recv() => match signal {
                    Some(Signal::SIGINT) => continue, // nothing runs: nothing to stop
                    Some(signal) => return Exit::Signal(signal as i32),
                    None => return Exit::Signal(libc::SIGKILL),
                },
            };
            let Some(request) = request else {
                return Exit::Code(0); // the host closed the socket
            };
            match request["type"].as_str() {
                Some("execute") => {
                    let code = request["code"].as_str().unwrap_or_default().to_owned();
                    let status = match process.execute(&code).await {
                        Ok(true) => "ok",
                        Ok(false) => "error",
                        Err(Stopped::Exit(exit)) => return exit,
                        Err(Stopped::Interrupted) => {
                            process.error("KeyboardInterrupt", "").await;
                            "error"
                        }
                    };
                    process
                        .send(json!({"type": "done", "status": status}))
                        .await;
                }
                Some("complete") if !process.mute_completion => {
                    let reply = process.complete(&request);
                    process.send(reply).await;
                }
                Some("complete") => {}
                _ => return Exit::Code(0), // shutdown
            }
        }
    }

    /// Answers a completion request with the variables set so far whose names start with
    /// the name before the cursor.
    fn complete(&self, request: &Value) -> Value {
        let code = request["code"].as_str().unwrap_or_default();
        let cursor = usize::try_from(request["cursor_pos"].as_u64().unwrap_or(0)).unwrap_or(0);
        let before: Vec<char> = code.chars().take(cursor).collect();
        let start = before.len()
            - before
                .iter()
                .rev()
                .take_while(|c| c.is_alphanumeric() || **c == '_')
                .count();
        let prefix: String = before[start..].iter().collect();
        let matches: Vec<&String> = self
            .variables
            .keys()
            .filter(|name| name.starts_with(&prefix))
            .collect();
        json!({"type": "complete_reply", "matches": matches, "cursor_start": start, "cursor_end": before.len()})
    }

    /// Runs a cell; Ok(false) when it raised.
    async fn execute(&mut self, code: &str) -> Result<bool, Stopped> {
        for line in code.lines() {
            self.take_signal()?;
            let (command, argument) = line.split_once(' ').unwrap_or((line, ""));
            match command {
                "print" => self.stream("stdout", argument).await,
                "eprint" => self.stream("stderr", argument).await,
                "flood" => {
                    let chunk = "x".repeat(64 * 1024);
                    for _ in 0..number(argument).max(0) * 16 {
                        self.take_signal()?;
                        self.send(json!({"type": "stream", "name": "stdout", "text": chunk}))
                            .await;
                    }
                }
                "result" => self.result(argument).await,
                "set" => {
                    let (name, value) = argument.split_once(' ').unwrap_or((argument, ""));
                    self.variables.insert(name.to_owned(), value.to_owned());
                }
                "get" => match self.variables.get(argument).cloned() {
                    Some(value) => self.result(&value).await,
                    None => {
                        self.error("NameError", &format!("name '{argument}' is not defined"))
                            .await;
                        return Ok(false);
                    }
                },
                "raise" => {
                    self.error(argument, "raised by the cell").await;
                    return Ok(false);
                }
                "mute-completion" => self.mute_completion = true,
                "hang" => return self.hang(false).await,
                "hang-hard" => return self.hang(true).await,
                "crash" => return Err(Stopped::Exit(Exit::Signal(number(argument)))),
                "exit" => return Err(Stopped::Exit(Exit::Code(number(argument)))),
                "announce" => {
                    let len = u32::try_from(number(argument)).unwrap_or(u32::MAX);
                    let _ = self.writer.write_all(&len.to_be_bytes()).await;
                }
                "garbage" => {
                    let body = b"not json";
                    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
                    frame.extend_from_slice(body);
                    let _ = self.writer.write_all(&frame).await;
                }
                _ => {
                    self.error("SyntaxError", &format!("unknown command {command:?}"))
                        .await;
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Waits for a signal that ends the cell (SIGINT unless ignored) or the process.
    async fn hang(&mut self, ignore_interrupts: bool) -> Result<bool, Stopped> {
        loop {
            let signal = self.signals.recv().await;
            match signal {
                Some(Signal::SIGINT) if ignore_interrupts => continue,
                Some(Signal::SIGINT) => return Err(Stopped::Interrupted),
                Some(signal) => return Err(Stopped::Exit(Exit::Signal(signal as i32))),
                None => return Err(Stopped::Exit(Exit::Signal(libc::SIGKILL))),
            }
        }
    }

    /// A signal that arrived while the cell ran.
    fn take_signal(&mut self) -> Result<(), Stopped> {
        match self.signals.try_recv() {
            Ok(Signal::SIGINT) => Err(Stopped::Interrupted),
            Ok(signal) => Err(Stopped::Exit(Exit::Signal(signal as i32))),
            Err(_) => Ok(()),
        }
    }

    async fn stream(&mut self, name: &str, text: &str) {
        self.send(json!({"type": "stream", "name": name, "text": format!("{text}\n")}))
            .await;
    }

    async fn result(&mut self, text: &str) {
        self.send(json!({"type": "execute_result", "data": {"text/plain": text}, "metadata": {}}))
            .await;
    }

    async fn error(&mut self, ename: &str, evalue: &str) {
        self.send(json!({
            "type": "error", "ename": ename, "evalue": evalue,
            "traceback": [format!("{ename}: {evalue}")],
        }))
        .await;
    }

    async fn send(&mut self, message: Value) {
        let body = message.to_string().into_bytes();
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        // A host that is gone cannot be told; the process ends when its socket is read.
        let _ = self.writer.write_all(&frame).await;
    }
}

/// Forwards the host's requests, parsed; ends when the host closes the socket.
async fn read_requests(mut reader: OwnedReadHalf, requests: mpsc::UnboundedSender<Value>) {
    loop {
        let Ok(len) = reader.read_u32().await else {
            return;
        };
        let mut body = vec![0u8; len as usize];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        let Ok(request) = serde_json::from_slice(&body) else {
            return;
        };
        if requests.send(request).is_err() {
            return;
        }
    }
}

fn number(text: &str) -> i32 {
    text.trim().parse().unwrap_or(1)
}
