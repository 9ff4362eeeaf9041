//! Step: the uid/gid maps of a new user namespace. The caller's own ids map to the same
//! numbers inside, so files the session writes belong to the user who ran sandcell.

use crate::error::{failed, SandboxError};

/// Written by the process itself, right after it unshared its user namespace.
pub fn map_self(uid: u32, gid: u32) -> Result<(), SandboxError> {
    // An unprivileged process may only write a gid map after giving up setgroups(2).
    std::fs::write("/proc/self/setgroups", "deny").map_err(failed("write /proc/self/setgroups"))?;
    std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1\n"))
        .map_err(failed("write /proc/self/uid_map"))?;
    std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1\n"))
        .map_err(failed("write /proc/self/gid_map"))
}
