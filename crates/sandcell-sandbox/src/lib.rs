//! The Linux sandbox a sandcell session runs in.
//!
//! For: the isolation steps, one module per mechanism, each small enough to audit alone
//! (`cgroup`, `namespaces`, `idmap`, `mounts`, `network`, `rlimits`, `capabilities`,
//! `landlock`, `seccomp`), the [`SandboxSpec`] they follow, the host-side session
//! cgroups ([`CgroupParent`], [`SessionCgroup`]), working directories on filesystems of
//! their own ([`disk`]: the kernel enforces their size and inode count), [`init`] (PID 1
//! of a session's namespace), [`subids`] (the host ids sessions take one of each) and
//! [`probe`] (what this machine supports) and [`view`] (the template's view: the Python
//! environment at neutral paths, from filesystems of its own). [`isolate`] and [`confine`] run the steps in
//! order; they and [`init::serve`] are called from the forked session processes through
//! `sandcell-enter`.
//!
//! Not for: starting processes, talking to Python, or deciding policy: the host decides
//! and writes its decision into the spec, and the steps follow it. A step that cannot do
//! what the spec asks fails; none is skipped silently.
//!
//! Both drivers run in a single-threaded forked process and start no threads: several
//! steps (`unshare`, `setresuid`, seccomp) apply to the calling thread only.

mod capabilities;
mod cgroup;
pub mod disk;
mod error;
mod idmap;
pub mod init;
mod landlock;
mod mounts;
mod namespaces;
mod network;
pub mod probe;
mod rlimits;
mod seccomp;
mod spec;
pub mod subids;
pub mod view;

pub use cgroup::{CgroupLimits, CgroupParent, CgroupVersion, SessionCgroup, DELEGATED_ENV};
pub use error::SandboxError;
pub use spec::{Identity, RlimitSpec, SandboxSpec};

/// In the keeper, the first forked process: join the cgroup, create the namespaces, and
/// (in a user namespace) write the id maps. The session forked next is PID 1 of the new
/// PID namespace.
pub fn isolate(spec: &SandboxSpec) -> Result<(), SandboxError> {
    // Before unsharing: the new cgroup namespace is rooted at the cgroup we are in.
    cgroup::join(&spec.cgroup_procs)?;
    namespaces::unshare(&spec.identity)?;
    if let Identity::UserNamespace { uid, gid } = spec.identity {
        idmap::map_self(uid, gid)?;
    }
    Ok(())
}

/// In the session (PID 1 of the new PID namespace), before any user code: build the
/// filesystem view, bring up loopback, set the host name and limits, drop every
/// privilege, then Landlock and, last, seccomp (which forbids the calls made before it).
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

/// Whether the running kernel has Landlock (the host sets [`SandboxSpec::landlock`]
/// from this).
pub fn landlock_supported() -> bool {
    landlock::abi_version().is_some()
}
