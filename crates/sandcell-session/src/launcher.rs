//! Where session processes come from: the one seam between the session runtime and the
//! processes it drives (as youki's `Syscall` trait is for its container runtime). The real
//! launcher forks them from the template process (`template.rs`); the fake one
//! (`fake.rs`, feature `fake`) plays a session process in a task of this process, so that
//! a session's lifecycle can be tested in milliseconds.

use crate::error::SessionError;
use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::pin::Pin;

/// A future that a [`Launcher`] returns (the trait is used as `dyn Launcher`).
pub type LaunchFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Launched, SessionError>> + Send + 'a>>;

/// Starts session processes and sends them signals.
///
/// A session process speaks the session socket protocol on `Launched::socket` (see
/// ARCHITECTURE.md) and has a keeper that writes its status lines (`started` with the
/// process's pid, then `exited`, or `failed`) on `Launched::status`, then closes it.
pub trait Launcher: Send + Sync + 'static {
    /// Starts a session process for `request`.
    fn launch<'a>(&'a self, request: &'a SpawnRequest) -> LaunchFuture<'a>;

    /// Sends `signal` to the session process `pid` (as its keeper reported it). Returns
    /// false when there is no such process any more.
    fn signal(&self, pid: i32, signal: Signal) -> bool;
}

/// What a session process is started with, besides its two descriptors.
#[derive(Debug, serde::Serialize)]
pub struct SpawnRequest {
    pub spec: Option<sandcell_sandbox::SandboxSpec>,
    /// Working directory of the session, as the session sees it.
    pub cwd: PathBuf,
    pub env: BTreeMap<String, String>,
}

/// The host's ends of a newly started session process.
pub struct Launched {
    /// The session socket (a connected `SOCK_STREAM` Unix socket).
    pub socket: OwnedFd,
    /// The read end of the keeper's status pipe.
    pub status: OwnedFd,
}
