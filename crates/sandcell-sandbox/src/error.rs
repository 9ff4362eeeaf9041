/// Why a sandbox step failed. Messages are sentences a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A system call or file operation of one step failed.
    #[error("{step}: {source}")]
    Step {
        step: String,
        #[source]
        source: std::io::Error,
    },
    #[error("this kernel does not let unprivileged users create user namespaces ({0}); allow them (on Ubuntu 24.04: `sysctl kernel.apparmor_restrict_unprivileged_userns=0`; elsewhere: `sysctl user.max_user_namespaces=15000` or `kernel.unprivileged_userns_clone=1`), or run sandcell as root")]
    UserNamespacesDenied(std::io::Error),
    #[error("no cgroup can be used: {0}")]
    CgroupUnavailable(String),
    #[error("Landlock could not be enforced: {0}")]
    Landlock(String),
    #[error("the seccomp filter could not be installed: {0}")]
    Seccomp(String),
}

/// Wraps the OS error of a failed step.
pub(crate) fn failed(step: impl Into<String>) -> impl FnOnce(std::io::Error) -> SandboxError {
    let step = step.into();
    move |source| SandboxError::Step { step, source }
}

/// The last OS error as a failed step, for raw libc calls.
pub(crate) fn last_error(step: impl Into<String>) -> SandboxError {
    failed(step)(std::io::Error::last_os_error())
}
