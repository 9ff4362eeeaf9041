//! The tools' arguments and structured results, as their JSON Schemas describe them.

use sandcell_service::{LimitsRequest, SessionInfo};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunPython {
    /// Python code, run as one cell (IPython: the value of the last expression is shown).
    pub code: String,
    /// The session to run in; without it, this connection's default session (created on
    /// first use).
    pub session_id: Option<String>,
    /// Time limit of this run in seconds: more than 0, at most the session's limit (the
    /// default).
    pub timeout_s: Option<f64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct InstallPackages {
    /// The packages: each a name with optional extras and version specifiers, without
    /// spaces (`pandas`, `requests[socks]`, `numpy>=1.26,<2`); at most 64. Options, URLs
    /// and paths are refused.
    pub packages: Vec<String>,
    /// The session to install into; without it, this connection's default session.
    pub session_id: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateSession {
    /// Limits of the new session; each one left out takes the server's default.
    pub limits: Option<Limits>,
    /// What the new session may reach on the network, within what the server allows:
    /// host names, `*.domain`, IP addresses or CIDRs, each with an optional `:PORT`
    /// (HTTP and HTTPS through the proxy named by HTTP_PROXY). Left out: the server's
    /// default; `[]`: no network.
    pub allow_net: Option<Vec<String>>,
    /// A configured environment of the server to run in (the base packages plus its
    /// own); left out: the base environment. An unknown name is refused with the names
    /// the server configures.
    pub environment: Option<String>,
}

/// Limits asked for a new session, each within what the server allows.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Limits {
    /// Memory of the whole session, in MiB (at least 64).
    pub memory_mib: Option<u64>,
    /// Processes and threads the session may run at once (at least 8).
    pub processes: Option<u64>,
    /// Time limit of one run, in seconds (more than 0).
    pub timeout_secs: Option<f64>,
    /// Largest single file the code may write, in MiB (at least 1).
    pub file_size_mib: Option<u64>,
    /// Total size /mnt/data may reach, in MiB (at least 1).
    pub disk_quota_mib: Option<u64>,
}

impl From<Limits> for LimitsRequest {
    fn from(limits: Limits) -> Self {
        Self {
            memory_mib: limits.memory_mib,
            processes: limits.processes,
            timeout_secs: limits.timeout_secs,
            file_size_mib: limits.file_size_mib,
            disk_quota_mib: limits.disk_quota_mib,
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SessionId {
    /// The session's id (from `create_session` or `list_sessions`).
    pub session_id: String,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MaybeSessionId {
    /// The session; without it, this connection's default session.
    pub session_id: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UploadFile {
    /// The session; without it, this connection's default session.
    pub session_id: Option<String>,
    /// Where to put the file: relative to /mnt/data, or absolute under it. Missing
    /// directories are made; a file already there is replaced.
    pub path: String,
    /// The content as text (UTF-8). Give this or `base64`, not both.
    pub text: Option<String>,
    /// The content as base64 (for binary files). Give this or `text`, not both.
    pub base64: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadFile {
    /// The session; without it, this connection's default session.
    pub session_id: Option<String>,
    /// The file: relative to /mnt/data, or absolute under it.
    pub path: String,
    /// The first byte to read (default 0).
    pub offset: Option<u64>,
    /// How many bytes to read at most (default and maximum: 8 MiB).
    pub max_bytes: Option<u64>,
}

/// What `run_python` returns as `structuredContent`.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct RunOutput {
    /// The session the code ran in.
    pub session_id: String,
    /// How the run ended: ok, error (an exception), timeout, interrupted or crashed.
    pub status: String,
    /// Standard output; a marker line says where output was dropped to stay within the
    /// server's limit.
    pub stdout: String,
    /// Standard error, bounded the same way.
    pub stderr: String,
    /// The MIME types of each displayed value and of the last expression's value, in order.
    pub results: Vec<Vec<String>>,
    /// The exception the code raised, if any.
    pub error: Option<RunError>,
    /// Files in /mnt/data the code created or changed.
    pub files: Vec<ChangedFile>,
    pub duration_ms: u64,
    /// The Python process was started afresh for this run: variables from earlier runs
    /// are gone, files in /mnt/data remain.
    pub restarted: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct RunError {
    pub ename: String,
    pub evalue: String,
    pub traceback: Vec<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ChangedFile {
    /// Relative to /mnt/data.
    pub path: String,
    pub size: u64,
    pub mime: String,
}

/// What `create_session` returns.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct CreatedSession {
    pub session_id: String,
}

/// What `list_sessions` returns.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct SessionList {
    pub sessions: Vec<SessionSummary>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct SessionSummary {
    pub session_id: String,
    /// idle, busy, or stopped (no Python process: variables gone, files kept).
    pub state: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// RFC 3339, UTC.
    pub last_used_at: String,
    /// Whether this is the connection's default session.
    pub default: bool,
}

impl SessionSummary {
    pub fn new(info: SessionInfo, default: Option<&str>) -> Self {
        Self {
            default: default == Some(info.id.as_str()),
            state: enum_name(&info.state),
            session_id: info.id,
            created_at: info.created_at,
            last_used_at: info.last_used_at,
        }
    }
}

/// What `list_files` returns.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct FileList {
    pub session_id: String,
    pub files: Vec<ListedFile>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ListedFile {
    /// Relative to /mnt/data.
    pub path: String,
    pub size: u64,
    pub mime: String,
    /// RFC 3339, UTC.
    pub modified: String,
    /// The file as a resource.
    pub uri: String,
}

/// What `read_file` returns besides the content block.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct FileRead {
    /// Relative to /mnt/data.
    pub path: String,
    pub mime: String,
    /// The whole file's size in bytes.
    pub size: u64,
    /// The first byte returned.
    pub offset: u64,
    /// How many bytes were returned.
    pub length: u64,
    /// Whether bytes follow the ones returned (read again from `offset + length`).
    pub more: bool,
}

/// The name serde gives a unit variant (`"idle"`, `"timeout"`).
pub(crate) fn enum_name(value: &impl Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_default()
}
