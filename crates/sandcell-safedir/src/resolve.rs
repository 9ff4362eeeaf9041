//! The two ways of resolving a path beneath a directory without following links.

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resolver {
    /// One `openat2` call: the kernel refuses links and escapes on every part.
    Openat2,
    /// One `openat` with `O_NOFOLLOW` per part (kernels before 5.6, or a seccomp
    /// policy that hides `openat2`).
    Walk,
}

impl Resolver {
    /// `Openat2` when this kernel has it; asked once per process.
    pub(crate) fn for_this_kernel(dir: &OwnedFd) -> Self {
        static HAS_OPENAT2: OnceLock<bool> = OnceLock::new();
        // Any failure (ENOSYS on old kernels, EINVAL for unknown flags, EPERM from a
        // seccomp policy) means the walk, which is always safe.
        let has_openat2 = *HAS_OPENAT2.get_or_init(|| beneath(dir, ".").is_ok());
        if has_openat2 {
            Resolver::Openat2
        } else {
            Resolver::Walk
        }
    }
}

/// Opens the directory `relative` beneath `dir` with `openat2`, refusing a link (ELOOP)
/// or an escape (EXDEV) on any part.
pub(crate) fn beneath(dir: &OwnedFd, relative: &str) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    let fd = openat2(dir.as_raw_fd(), relative, how)?;
    // SAFETY: `openat2` has just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
