//! The Linux sandbox a sandcell session runs in.
//!
//! For: the isolation steps, one module per mechanism, each small enough to audit alone
//! (`namespaces`, `idmap`, `cgroup`, `mounts`, `network`, `rlimits`, `capabilities`,
//! `landlock`, `seccomp`), the [`SandboxSpec`] they follow, and [`probe`] (what this
//! machine supports). [`isolate`] and [`confine`] run the steps in order; they are called
//! from the forked session processes through `sandcell-enter`.
//!
//! Not for: starting processes, talking to Python, or deciding policy: the host decides
//! and writes its decision into the spec.

mod capabilities;
mod cgroup;
mod error;
mod idmap;
mod landlock;
mod mounts;
mod namespaces;
mod network;
pub mod probe;
mod rlimits;
mod seccomp;
mod spec;

pub use cgroup::{CgroupLimits, CgroupParent, CgroupVersion, SessionCgroup, DELEGATED_ENV};
pub use error::SandboxError;
pub use spec::{Identity, RlimitSpec, SandboxSpec};

/// In the keeper, the first forked process: join the cgroup, then create the
/// namespaces (and, without root, the user namespace's id maps). The session forked
/// next is PID 1 of the new PID namespace.
pub fn isolate(spec: &SandboxSpec) -> Result<(), SandboxError> {
    cgroup::join(&spec.cgroup_procs)?;
    namespaces::unshare(&spec.identity)?;
    if let Identity::UserNamespace { uid, gid } = spec.identity {
        idmap::map_self(uid, gid)?;
    }
    Ok(())
}

/// In the session, before any user code: build the filesystem view, bring up loopback,
/// set the host name and limits, drop every privilege, then Landlock and seccomp.
pub fn confine(spec: &SandboxSpec) -> Result<(), SandboxError> {
    mounts::build_root(spec)?;
    network::loopback_up()?;
    namespaces::set_hostname(&spec.hostname)?;
    rlimits::apply(&spec.limits)?;
    capabilities::drop_all(&spec.identity)?;
    capabilities::set_no_new_privs()?;
    if spec.landlock {
        landlock::restrict(spec)?;
    }
    seccomp::install()
}

/// Whether the running kernel has Landlock.
pub fn landlock_supported() -> bool {
    landlock::abi_version().is_some()
}
