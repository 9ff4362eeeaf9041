//! Step: new namespaces for the session. Called by the keeper; the PID namespace takes
//! effect for the keeper's next child (the session), which becomes its PID 1.

use crate::error::{failed, SandboxError};
use crate::spec::Identity;
use nix::errno::Errno;
use nix::sched::CloneFlags;

/// Mount, PID, network, IPC, UTS and cgroup namespaces, plus a user namespace when the
/// caller is not root.
pub fn unshare(identity: &Identity) -> Result<(), SandboxError> {
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWCGROUP;
    let in_user_namespace = matches!(identity, Identity::UserNamespace { .. });
    if in_user_namespace {
        flags |= CloneFlags::CLONE_NEWUSER;
    }
    match nix::sched::unshare(flags) {
        Ok(()) => Ok(()),
        // The usual reason an unprivileged unshare fails: the kernel or an LSM forbids
        // user namespaces. Say how to allow them.
        Err(error @ (Errno::EPERM | Errno::EACCES | Errno::ENOSPC)) if in_user_namespace => {
            Err(SandboxError::UserNamespacesDenied(error.into()))
        }
        Err(error) => Err(failed("create the session's namespaces (unshare)")(error)),
    }
}

/// The host name inside the new UTS namespace.
pub fn set_hostname(hostname: &str) -> Result<(), SandboxError> {
    nix::unistd::sethostname(hostname).map_err(failed("set the host name"))
}
