//! The result of running one cell: the contract every interface (CLI, server, agent)
//! shares. Modelled on Jupyter's messages and E2B's `Execution`.

use sandcell_netproxy::Allowlist;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Options of one execution. They apply to that execution only, never to the session:
/// the next execution without options has the session's limits again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOptions {
    /// Wall-clock limit of this execution; `None`: the session's `Limits::timeout`.
    pub timeout: Option<Duration>,
}

/// One output as IPython publishes it: MIME type → data. Binary types (`image/png`,
/// `image/jpeg`) are base64 strings, `application/json` a JSON value, others strings.
pub type MimeBundle = serde_json::Map<String, serde_json::Value>;

/// What IPython's completer offers at a cursor: Jupyter's complete_reply. Positions are
/// in Unicode code points of the code, as Jupyter counts them; the text between
/// `cursor_start` and `cursor_end` is what a match replaces.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Completion {
    pub matches: Vec<String>,
    pub cursor_start: usize,
    pub cursor_end: usize,
}

impl Completion {
    /// Nothing to offer at `cursor_pos`.
    pub fn none(cursor_pos: usize) -> Self {
        Self {
            matches: Vec::new(),
            cursor_start: cursor_pos,
            cursor_end: cursor_pos,
        }
    }
}

/// How an execution ended.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The cell ran to the end.
    Ok,
    /// The cell raised an exception (or exceeded the working-directory quota).
    Error,
    /// The cell ran past its time limit.
    Timeout,
    /// The cell was interrupted on request.
    Interrupted,
    /// The Python process died (segfault, `os._exit`, memory limit).
    Crashed,
}

/// An exception raised by the cell, or a sandcell-level failure in the same shape.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExecutionError {
    pub ename: String,
    pub evalue: String,
    pub traceback: Vec<String>,
}

impl ExecutionError {
    /// An error that sandcell itself reports (no Python traceback).
    pub fn sandcell(ename: &str, evalue: String) -> Self {
        Self {
            ename: ename.into(),
            traceback: vec![format!("{ename}: {evalue}")],
            evalue,
        }
    }
}

/// What a session's code can reach on the network: the `network` of an execution and of
/// a session as clients see them.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkAccess {
    /// `none` (no network at all), `allowlist` (only `allow`, through sandcell's proxy)
    /// or `host` (the host's whole network: the session runs without a sandbox).
    #[serde(rename = "type")]
    #[cfg_attr(feature = "openapi", schema(example = "allowlist"))]
    pub kind: NetworkKind,
    /// The entries of the allowlist: host names, `*.domain`, IP addresses or CIDRs, each
    /// with an optional `:PORT`.
    pub allow: Vec<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NetworkKind {
    #[default]
    None,
    Allowlist,
    Host,
}

impl NetworkAccess {
    /// A session's access with `allowlist` (empty: no network), in a sandbox or not.
    pub fn of(sandboxed: bool, allowlist: &Allowlist) -> Self {
        let kind = match (sandboxed, allowlist.is_empty()) {
            (false, _) => NetworkKind::Host,
            (true, true) => NetworkKind::None,
            (true, false) => NetworkKind::Allowlist,
        };
        Self {
            kind,
            allow: allowlist.to_strings(),
        }
    }
}

/// A file the execution created or changed in the working directory.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileChange {
    /// Relative to the working directory (`/mnt/data` inside the sandbox).
    pub path: String,
    pub size: u64,
    pub mime: String,
}

/// Everything one execution produced.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Execution {
    pub status: Status,
    pub stdout: String,
    pub stderr: String,
    /// `display()` outputs and the value of the last expression, in order.
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Vec<std::collections::HashMap<String, serde_json::Value>>)
    )]
    pub results: Vec<MimeBundle>,
    /// The index in `results` of the value of the cell's last expression (Jupyter's
    /// `execute_result`; the other results are `display()` outputs). Absent when the cell
    /// ended without a value, or the value was dropped for the execution's limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execute_result: Option<usize>,
    /// The cell's number in the session's IPython history: the `N` of Jupyter's
    /// `In [N]`, as the cell's tracebacks name it (`Cell In[N]`). Absent when the cell
    /// was not counted (an empty one) or did not run to its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_count: Option<u64>,
    pub error: Option<ExecutionError>,
    pub files: Vec<FileChange>,
    pub duration_ms: u64,
    /// This execution ran in a fresh Python process because the previous one died or
    /// was killed: variables from earlier executions are gone; files remain.
    pub restarted: bool,
    /// Output was dropped to stay within the execution's limits (`Limits::output_mib`,
    /// `results_mib`, `max_results`); a marker line in `stdout`/`stderr` or a note among
    /// `results` says what and how much.
    #[serde(default)]
    pub truncated: bool,
    /// What the code could reach on the network while it ran (absent in results written
    /// by earlier versions, which had no network: `none`).
    #[serde(default)]
    pub network: NetworkAccess,
}

/// What an execution streams while it runs, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecEvent {
    Stdout(String),
    Stderr(String),
    Result(MimeBundle),
    Error(ExecutionError),
}
