//! Step: give up every privilege. As root, switch to the unprivileged identity (which
//! clears all capabilities); in a user namespace, drop the namespace's capabilities. In
//! both cases the bounding and ambient sets are emptied first, so nothing can come back.

use crate::error::{failed, last_error, SandboxError};
use crate::spec::Identity;

const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

pub fn drop_all(identity: &Identity) -> Result<(), SandboxError> {
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<libc::c_ulong>().ok())
        .unwrap_or(63);
    for cap in 0..=last {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL)
        {
            return Err(last_error(format!(
                "dropping capability {cap} from the bounding set"
            )));
        }
    }
    // SAFETY: as above.
    if unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    } != 0
    {
        return Err(last_error("clearing the ambient capabilities"));
    }
    if let Identity::DropFromRoot { uid, gid } = *identity {
        let (uid, gid) = (
            nix::unistd::Uid::from_raw(uid),
            nix::unistd::Gid::from_raw(gid),
        );
        nix::unistd::setgroups(&[])
            .map_err(|e| failed("clearing supplementary groups")(e.into()))?;
        nix::unistd::setresgid(gid, gid, gid)
            .map_err(|e| failed("switching to the sandbox group")(e.into()))?;
        nix::unistd::setresuid(uid, uid, uid)
            .map_err(|e| failed("switching to the sandbox user")(e.into()))?;
    }
    let header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: capset reads a version-3 header and two data structs that we own.
    if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } != 0 {
        return Err(last_error("clearing the capability sets"));
    }
    verify_none_left()
}

/// Reads back what the kernel says, rather than trusting the calls above.
fn verify_none_left() -> Result<(), SandboxError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(failed("reading /proc/self/status"))?;
    for field in ["CapEff:", "CapPrm:", "CapInh:", "CapBnd:", "CapAmb:"] {
        let value = status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .map(str::trim);
        if value.is_some_and(|v| v.chars().any(|c| c != '0')) {
            return Err(failed("dropping capabilities")(std::io::Error::other(
                format!("{field} is still {}", value.unwrap_or_default()),
            )));
        }
    }
    Ok(())
}

/// Exec'd programs (and setuid binaries) can never gain privileges again.
pub fn set_no_new_privs() -> Result<(), SandboxError> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(last_error("setting no_new_privs"));
    }
    Ok(())
}
