//! How the sessions of a runtime are isolated, decided once when the runtime starts, and
//! the request for each session process that follows from it.

use crate::error::SessionError;
use crate::launcher::SpawnRequest;
use crate::limits::Limits;
use crate::network::SessionNetwork;
use crate::runtime_files::RuntimeFiles;
use crate::uids::{UidLease, UidPool};
use crate::view::VIEW_ROOT;
use sandcell_pyenv::Environment;
use sandcell_sandbox::{CgroupParent, Identity, RlimitSpec, SandboxSpec, SessionCgroup};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where the working directory appears inside a sandbox.
pub const SANDBOX_WORKDIR: &str = "/mnt/data";

/// Host directories every sandbox exposes read-only (those that exist).
pub(crate) const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];

/// Host files under `/etc` a Python process reasonably reads.
const ETC_FILES: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/etc/mime.types",
    "/etc/nsswitch.conf",
];

/// The name of a session's cgroup: the sandcell process that owns it, and a number.
pub(crate) fn session_cgroup_name(owner: u32, n: u64) -> String {
    format!("s{owner}-{n}")
}

/// The owner of a session cgroup named by [`session_cgroup_name`]; `None` for any other name.
fn session_cgroup_owner(name: &str) -> Option<u32> {
    let (owner, n) = name.strip_prefix('s')?.split_once('-')?;
    n.parse::<u64>().ok()?;
    owner.parse().ok()
}

/// Kills and removes the session cgroups beneath `parent` whose owner is gone (a sandcell
/// process that was killed, or crashed, before it could remove them), with whatever still
/// runs in them. Returns how many were removed. Blocking: removal waits for the kernel.
pub(crate) fn remove_leftover_sessions(parent: &CgroupParent) -> usize {
    let mut removed = 0;
    for name in parent.children() {
        let Some(owner) = session_cgroup_owner(&name) else {
            continue;
        };
        if owner == std::process::id() || process_exists(owner) {
            continue;
        }
        let cgroup = SessionCgroup::existing(parent, &name);
        cgroup.kill_all();
        match cgroup.remove() {
            Ok(()) => removed += 1,
            Err(e) => tracing::warn!("cannot remove the leftover session cgroup {name}: {e}"),
        }
    }
    removed
}

pub(crate) fn process_exists(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // EPERM: it exists, as another user's.
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// How the sessions of a runtime are isolated; decided once, when the runtime starts.
#[derive(Debug)]
pub enum Isolation {
    Sandbox(SandboxPolicy),
    /// `--no-sandbox`: sessions are plain processes of the host user.
    None,
}

/// The parts of every session's [`SandboxSpec`] that do not depend on the session.
#[derive(Debug)]
pub struct SandboxPolicy {
    /// Who sessions run as when they have no ids of their own (see `session_ids`).
    pub identity: Identity,
    /// A root host's range of ids, one uid/gid per live session; `None`: every session
    /// runs as `identity`.
    session_ids: Option<UidPool>,
    /// `None` when no cgroup can be used; limits then fall back to rlimits.
    pub cgroup: Option<CgroupParent>,
    pub landlock: bool,
    read_only_paths: Vec<PathBuf>,
    /// Whether sessions are forked from templates in the neutral view (`view.rs`): their
    /// disks are then mounted from their devices, which that view did not have.
    neutral_view: bool,
}

impl Isolation {
    /// The spawn request for a session with this working directory and these limits.
    pub(crate) fn spawn_request(
        &self,
        workdir: &Path,
        limits: &Limits,
        identity: Identity,
        cgroup_procs: Vec<PathBuf>,
        network: Option<&SessionNetwork>,
    ) -> SpawnRequest {
        match self {
            Isolation::Sandbox(policy) => {
                let mut spec = policy.spec(workdir, limits, identity, cgroup_procs);
                if let Some(network) = network {
                    spec.read_only_paths.push(network.dir().to_path_buf());
                }
                SpawnRequest {
                    spec: Some(spec),
                    cwd: PathBuf::from(SANDBOX_WORKDIR),
                    env: network.map(SessionNetwork::env).unwrap_or_default(),
                }
            }
            Isolation::None => SpawnRequest {
                spec: None,
                cwd: workdir.to_path_buf(),
                env: BTreeMap::new(),
            },
        }
    }
}

impl SandboxPolicy {
    /// With `neutral_view`, sessions see the environment only under [`VIEW_ROOT`].
    pub(crate) fn detect(
        env: &Environment,
        files: &RuntimeFiles,
        neutral_view: bool,
        warnings: &mut Vec<String>,
    ) -> Self {
        let identity = Identity::for_current_process();
        let session_ids = match identity {
            Identity::DropFromRoot { .. } => match sandcell_sandbox::subids::root_range() {
                Ok(range) => Some(UidPool::new(range)),
                Err(why) => {
                    warnings.push(format!(
                        "{why}; until then every session runs as uid {}, so sessions share per-user kernel limits (see `sandcell doctor`)",
                        Identity::NOBODY
                    ));
                    None
                }
            },
            Identity::UserNamespace { .. } => None,
        };
        let cgroup = match CgroupParent::detect() {
            Ok(parent) => Some(parent),
            Err(why) => {
                warnings.push(format!(
                    "{why}; memory is limited with RLIMIT_AS and processes with RLIMIT_NPROC instead, and CPU time is not limited (see `sandcell doctor`)"
                ));
                None
            }
        };
        let landlock = sandcell_sandbox::landlock_supported();
        if !landlock {
            warnings.push(
                "this kernel has no Landlock; the filesystem view relies on mount namespaces alone (see `sandcell doctor`)"
                    .into(),
            );
        }
        let mut read_only_paths: Vec<PathBuf> = SYSTEM_DIRS
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.symlink_metadata().is_ok())
            .collect();
        if neutral_view {
            read_only_paths.push(PathBuf::from(VIEW_ROOT));
        } else {
            read_only_paths.extend(env.read_only_paths());
            read_only_paths.push(env.home().ipython());
            read_only_paths.push(files.dir.clone());
        }
        Self {
            identity,
            session_ids,
            cgroup,
            landlock,
            read_only_paths,
            neutral_view,
        }
    }

    /// Whether sessions see the Python environment at neutral paths.
    pub fn neutral_view(&self) -> bool {
        self.neutral_view
    }

    /// The range sessions take their own ids from, if they do.
    pub fn session_id_range(&self) -> Option<&sandcell_sandbox::subids::IdRange> {
        self.session_ids.as_ref().map(UidPool::range)
    }

    /// Who a new session runs as: ids of its own (held by the lease, for as long as the
    /// session lives) or the shared identity.
    pub(crate) fn session_identity(&self) -> Result<(Identity, Option<UidLease>), SessionError> {
        match &self.session_ids {
            Some(pool) => {
                let lease = pool.lease()?;
                let identity = Identity::DropFromRoot {
                    uid: lease.uid,
                    gid: lease.gid,
                };
                Ok((identity, Some(lease)))
            }
            None => Ok((self.identity, None)),
        }
    }

    fn spec(
        &self,
        workdir: &Path,
        limits: &Limits,
        identity: Identity,
        cgroup_procs: Vec<PathBuf>,
    ) -> SandboxSpec {
        let cgroup_enforces = !cgroup_procs.is_empty();
        SandboxSpec {
            workdir: workdir.to_path_buf(),
            mount_point: PathBuf::from(SANDBOX_WORKDIR),
            workdir_device: self
                .neutral_view
                .then(|| sandcell_sandbox::disk::device_of(workdir))
                .flatten(),
            read_only_paths: self.read_only_paths.clone(),
            etc_files: ETC_FILES.iter().map(PathBuf::from).collect(),
            identity,
            cgroup_procs,
            limits: RlimitSpec {
                file_size_bytes: limits.file_size_bytes(),
                open_files: limits.open_files,
                tmp_size_bytes: limits.tmp_bytes(),
                address_space_bytes: (!cgroup_enforces).then(|| limits.memory_bytes()),
                processes: (!cgroup_enforces).then_some(limits.processes),
            },
            hostname: "sandcell".into(),
            landlock: self.landlock,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_cgroup_names_say_their_owner() {
        assert_eq!(
            session_cgroup_owner(&session_cgroup_name(4321, 7)),
            Some(4321)
        );
        assert_eq!(session_cgroup_owner("s12-3"), Some(12));
        for other in ["sandcell", "s12", "s-3", "sx-3", "s12-x", "host", "t12-3"] {
            assert_eq!(session_cgroup_owner(other), None, "{other}");
        }
    }
}
