//! Stateful, sandboxed Python sessions.
//!
//! For: starting the template process that has the data stack imported, forking
//! sessions from it into their sandboxes, executing code with streamed outputs and a
//! typed [`Execution`] result, interrupts, timeouts, restarts and crash recovery,
//! reporting the files each execution created or changed, and the working-directory
//! quota ([`Disks`]: a filesystem of its own per directory where the kernel can enforce
//! it, else measured).
//!
//! Not for: how a sandbox is built (`sandcell-sandbox`), installing Python
//! (`sandcell-pyenv`), or presenting results (the `sandcell` binary and later front ends).

mod cgroup_drain;
mod disks;
mod error;
mod execution;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
mod isolation;
mod launcher;
#[cfg(test)]
mod lifecycle_tests;
mod limits;
mod network;
mod outputs;
mod ownership;
mod pool;
mod protocol;
mod runtime;
mod runtime_files;
mod session;
mod template;
mod uids;
mod view;
mod workdir;

pub use disks::{DiskQuota, Disks};
pub use error::SessionError;
pub use execution::{
    Completion, ExecEvent, ExecOptions, Execution, ExecutionError, FileChange, MimeBundle,
    NetworkAccess, NetworkKind, Status,
};
pub use isolation::{Isolation, SandboxPolicy, SANDBOX_WORKDIR};
pub use launcher::{LaunchFuture, Launched, Launcher, SpawnRequest};
pub use limits::Limits;
pub use network::{PACKAGES_DIR, PROXY_PORT};
pub use runtime::{Runtime, RuntimeOptions, DEFAULT_TEMPLATE_MODULES};
pub use sandcell_netproxy::{Allowlist, NetEntry, NetPolicy, NetPolicyError, PackageIndex};
pub use session::{Interrupter, Session, SessionConfig, SessionState, StopReason};
