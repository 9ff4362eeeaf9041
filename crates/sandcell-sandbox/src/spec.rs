//! What a sandbox looks like: built by the host, serialised to JSON, and read by the
//! session process that applies it (through `sandcell-enter`).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Everything a session process needs to isolate itself. The host computes it; the
/// session process only follows it, so every decision is made where it can be logged.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SandboxSpec {
    /// Host directory that becomes the session's writable working directory.
    pub workdir: PathBuf,
    /// Where the working directory appears inside the sandbox (`/mnt/data`).
    pub mount_point: PathBuf,
    /// The loop device of the working directory's own disk, when the session's mount
    /// namespace was copied from one made before the disk was mounted (the template's
    /// view, `view.rs`): the disk is then mounted from its device rather than bound.
    #[serde(default)]
    pub workdir_device: Option<PathBuf>,
    /// Host paths exposed read-only at the same path inside (system libraries, the
    /// Python installation, the sandcell environment). Symlinks are recreated as symlinks.
    pub read_only_paths: Vec<PathBuf>,
    /// Single files from the host's `/etc` exposed read-only (e.g. `/etc/ld.so.cache`).
    pub etc_files: Vec<PathBuf>,
    /// Who the session runs as, and how that is achieved.
    pub identity: Identity,
    /// `cgroup.procs` files the session joins before it creates its namespaces (one per
    /// cgroup v1 controller, or one for cgroup v2). Empty when no cgroup is available.
    pub cgroup_procs: Vec<PathBuf>,
    /// Resource limits applied with setrlimit and mount options.
    pub limits: RlimitSpec,
    /// Host name inside the UTS namespace.
    pub hostname: String,
    /// Apply a Landlock ruleset (only set when the kernel supports it; the host checks).
    pub landlock: bool,
}

/// How the session gets a non-privileged identity.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Identity {
    /// The host runs as root: namespaces are created without a user namespace, and once
    /// the sandbox is built the process switches to this unprivileged uid/gid, which
    /// clears every capability (the approach of Firecracker's jailer).
    DropFromRoot { uid: u32, gid: u32 },
    /// The host is an ordinary user: a user namespace maps the caller's own uid/gid
    /// (inside and outside are the same numbers) and grants the capabilities needed to
    /// build the sandbox; they are all dropped before user code runs.
    UserNamespace { uid: u32, gid: u32 },
}

impl Identity {
    /// The uid and gid sessions take when the host is root: `nobody`'s.
    pub const NOBODY: u32 = 65534;

    /// The identity of a sandbox built by the current process: `nobody` when it is root,
    /// else its own uid/gid in a user namespace.
    pub fn for_current_process() -> Identity {
        if nix::unistd::geteuid().is_root() {
            Identity::DropFromRoot {
                uid: Self::NOBODY,
                gid: Self::NOBODY,
            }
        } else {
            Identity::UserNamespace {
                uid: nix::unistd::getuid().as_raw(),
                gid: nix::unistd::getgid().as_raw(),
            }
        }
    }
}

/// Limits enforced with setrlimit (and the size of the private `/tmp`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct RlimitSpec {
    /// RLIMIT_FSIZE: no single file larger than this.
    pub file_size_bytes: u64,
    /// RLIMIT_NOFILE.
    pub open_files: u64,
    /// Size of the private tmpfs mounted at `/tmp` (and `/dev/shm`).
    pub tmp_size_bytes: u64,
    /// RLIMIT_AS; only set when no memory cgroup enforces the memory limit.
    pub address_space_bytes: Option<u64>,
    /// RLIMIT_NPROC; only set when no pids cgroup enforces the process limit.
    pub processes: Option<u64>,
}
