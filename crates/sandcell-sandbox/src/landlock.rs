//! Step: a Landlock ruleset, so that even a mistake in the mount view cannot be used to
//! write outside the writable places, create device nodes, or (ABI 6+) signal or reach
//! abstract sockets outside the sandbox. Reading is allowed beneath `/`, which after
//! pivot_root holds only what the sandbox exposes.

use crate::error::SandboxError;
use crate::spec::SandboxSpec;
use landlock::{
    Access, AccessFs, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
    Scope, ABI,
};
use std::path::Path;

/// The newest ABI whose rights this module was written and tested against.
const TESTED_ABI: ABI = ABI::V6;

/// Device files sessions read and write.
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
    let error = |e: &dyn std::fmt::Display| SandboxError::Landlock(e.to_string());
    let read = AccessFs::from_read(TESTED_ABI);
    let all = AccessFs::from_all(TESTED_ABI);
    let device = read | AccessFs::WriteFile | AccessFs::IoctlDev;
    let writable = [
        spec.mount_point.as_path(),
        Path::new("/tmp"),
        Path::new("/dev/shm"),
    ];

    let mut ruleset = Ruleset::default()
        .handle_access(all)
        .map_err(|e| error(&e))?
        .scope(Scope::from_all(TESTED_ABI))
        .map_err(|e| error(&e))?
        .create()
        .map_err(|e| error(&e))?;
    let rules = std::iter::once((Path::new("/"), read))
        .chain(writable.iter().map(|p| (*p, all)))
        .chain(DEVICES.iter().map(|p| (Path::new(*p), device)));
    for (path, access) in rules {
        let fd = PathFd::new(path).map_err(|e| error(&format!("{}: {e}", path.display())))?;
        ruleset = ruleset
            .add_rule(PathBeneath::new(fd, access))
            .map_err(|e| error(&e))?;
    }
    let status = ruleset.restrict_self().map_err(|e| error(&e))?;
    if status.ruleset == RulesetStatus::NotEnforced {
        return Err(SandboxError::Landlock(
            "the kernel accepted no rule of the ruleset".into(),
        ));
    }
    Ok(())
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
