//! Step: a Landlock ruleset, a second wall behind the mount view. Even if the view had a
//! mistake, the session can only read and execute beneath the paths it was given, write
//! beneath its working directory, `/tmp` and `/dev/shm`, and use the few device files it
//! needs; it can create no device node, and (ABI 6+) can neither signal processes nor
//! reach abstract unix sockets outside the sandbox.

use crate::error::SandboxError;
use crate::spec::SandboxSpec;
use landlock::{
    Access, AccessFs, BitFlags, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope, ABI,
};
use std::path::Path;

/// The newest ABI the landlock crate knows. The crate negotiates down to what the
/// running kernel supports (best effort), so every access right the kernel can restrict
/// is restricted.
const NEWEST_ABI: ABI = ABI::V10;

/// Directories the session reads (besides the spec's read-only paths).
const READABLE: &[&str] = &["/etc", "/proc", "/dev"];

/// Device files sessions read, write and (for terminals) configure.
const DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/pts",
    "/dev/ptmx",
];

pub fn restrict(spec: &SandboxSpec) -> Result<(), SandboxError> {
    let read = AccessFs::from_read(NEWEST_ABI); // execute, read_file, read_dir
    let write = AccessFs::from_all(NEWEST_ABI) & !(AccessFs::MakeChar | AccessFs::MakeBlock);
    let device = AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::IoctlDev;

    // Listing `/` itself (`ls /`) needs read_dir beneath it; it shows names only.
    let mut rules: Vec<(&Path, BitFlags<AccessFs>)> =
        vec![(Path::new("/"), AccessFs::ReadDir.into())];
    rules.extend(spec.read_only_paths.iter().map(|p| (p.as_path(), read)));
    rules.extend(READABLE.iter().map(|p| (Path::new(*p), read)));
    rules.extend(
        [
            spec.mount_point.as_path(),
            Path::new("/tmp"),
            Path::new("/dev/shm"),
        ]
        .into_iter()
        .map(|p| (p, write)),
    );
    rules.extend(DEVICES.iter().map(|p| (Path::new(*p), device)));

    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(NEWEST_ABI))
        .map_err(landlock_error)?
        .scope(Scope::from_all(NEWEST_ABI))
        .map_err(landlock_error)?
        .create()
        .map_err(landlock_error)?;
    for (path, access) in rules {
        // Read-only paths the host lacks were not mounted (see `mounts`).
        if !path.exists() {
            continue;
        }
        let fd = PathFd::new(path).map_err(landlock_error)?;
        ruleset = ruleset
            .add_rule(PathBeneath::new(fd, access))
            .map_err(landlock_error)?;
    }
    let status = ruleset.restrict_self().map_err(landlock_error)?;
    // Never silently weaker than the spec asked: an unenforced ruleset is an error.
    if status.ruleset == RulesetStatus::NotEnforced {
        return Err(SandboxError::Landlock(
            "the kernel enforced none of the ruleset; check that Landlock is enabled (`lsm=` boot parameter)".into(),
        ));
    }
    Ok(())
}

fn landlock_error(error: impl std::fmt::Display) -> SandboxError {
    SandboxError::Landlock(error.to_string())
}

/// The Landlock ABI version of the running kernel, if it has Landlock at all.
pub fn abi_version() -> Option<i64> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute pointer and this flag the call only returns a number.
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    (version > 0).then_some(version)
}
