//! The one error type of the crate.

/// Why a sandbox step failed. Messages are sentences a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A system call or file operation of one step failed.
    // The OS error is part of the message (not a `source`): the message crosses the C
    // ABI as a string, and must carry the whole story.
    #[error("could not {step}: {cause}")]
    Step { step: String, cause: std::io::Error },
    #[error("this kernel does not let unprivileged users create user namespaces ({0}); allow them (on Ubuntu 24.04: `sysctl kernel.apparmor_restrict_unprivileged_userns=0`; elsewhere: `sysctl user.max_user_namespaces=15000` or `kernel.unprivileged_userns_clone=1`), or run sandcell as root")]
    UserNamespacesDenied(std::io::Error),
    /// No cgroup can hold sessions: `why`, and `fix`, a sentence saying what to do.
    #[error("no cgroup can be used: {why}; {fix}")]
    CgroupUnavailable { why: String, fix: String },
    #[error("Landlock could not be enforced: {0}")]
    Landlock(String),
    #[error("the seccomp filter could not be installed: {0}")]
    Seccomp(String),
}

/// Wraps the OS error of a failed step; `step` says what was being done ("mount /proc").
pub(crate) fn failed<E: Into<std::io::Error>>(
    step: impl Into<String>,
) -> impl FnOnce(E) -> SandboxError {
    let step = step.into();
    move |cause| SandboxError::Step {
        step,
        cause: cause.into(),
    }
}

/// The last OS error as a failed step, for raw libc calls.
pub(crate) fn last_error(step: impl Into<String>) -> SandboxError {
    failed(step)(std::io::Error::last_os_error())
}
