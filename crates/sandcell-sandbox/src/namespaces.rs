//! Step: new namespaces for the session. Called by the keeper; the PID namespace takes
//! effect for the keeper's next child (the session), which becomes its PID 1.

use crate::error::SandboxError;
use crate::spec::Identity;

/// mount, PID, network, IPC, UTS and cgroup namespaces, plus a user namespace when the
/// caller is not root.
pub fn unshare(identity: &Identity) -> Result<(), SandboxError> {
    let mut flags = libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWCGROUP;
    if matches!(identity, Identity::UserNamespace { .. }) {
        flags |= libc::CLONE_NEWUSER;
    }
    // SAFETY: unshare only changes this process's namespace membership.
    if unsafe { libc::unshare(flags) } == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    if matches!(identity, Identity::UserNamespace { .. })
        && matches!(error.raw_os_error(), Some(libc::EPERM) | Some(libc::ENOSPC))
    {
        return Err(SandboxError::UserNamespacesDenied(error));
    }
    Err(SandboxError::Step {
        step: "creating the session's namespaces (unshare)".into(),
        source: error,
    })
}

/// The host name inside the new UTS namespace.
pub fn set_hostname(hostname: &str) -> Result<(), SandboxError> {
    nix::unistd::sethostname(hostname)
        .map_err(|e| crate::error::failed("setting the host name")(e.into()))
}
