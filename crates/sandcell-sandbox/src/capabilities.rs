//! Step: give up every privilege. The bounding and ambient sets are emptied first, so no
//! capability can come back through exec; then, as root, the process switches to the
//! unprivileged identity (which clears its capabilities), and in a user namespace it
//! drops the namespace's capabilities itself. The result is read back from the kernel.
//! Last, no_new_privs: nothing exec'd later (set-uid binaries included) gains privileges.

use crate::error::{failed, last_error, SandboxError};
use crate::spec::Identity;
use nix::unistd::{Gid, Uid};

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit capability sets in two 32-bit halves.
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
    // Dropping from the bounding set needs CAP_SETPCAP, so it comes before anything else.
    empty_bounding_set()?;
    // SAFETY: prctl with integer arguments only.
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
        return Err(last_error("clear the ambient capabilities"));
    }
    if let Identity::DropFromRoot { uid, gid } = *identity {
        let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
        nix::unistd::setgroups(&[gid]).map_err(failed("set the supplementary groups"))?;
        nix::unistd::setresgid(gid, gid, gid).map_err(failed("switch to the sandbox group"))?;
        nix::unistd::setresuid(uid, uid, uid).map_err(failed("switch to the sandbox user"))?;
    }
    clear_capability_sets()?;
    verify_none_left()
}

fn empty_bounding_set() -> Result<(), SandboxError> {
    // Without the kernel's own count, try every number a capability set can hold and
    // ignore the ones the kernel does not know (EINVAL).
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
                "drop capability {cap} from the bounding set"
            )));
        }
    }
    Ok(())
}

/// Effective, permitted and inheritable sets to zero (capset; nix has no wrapper).
fn clear_capability_sets() -> Result<(), SandboxError> {
    let header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: capset reads a version-3 header and two data structs that we own.
    if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } != 0 {
        return Err(last_error("clear the capability sets"));
    }
    Ok(())
}

/// Reads back what the kernel says, rather than trusting the calls above.
fn verify_none_left() -> Result<(), SandboxError> {
    let status =
        std::fs::read_to_string("/proc/self/status").map_err(failed("read /proc/self/status"))?;
    for field in ["CapEff:", "CapPrm:", "CapInh:", "CapBnd:", "CapAmb:"] {
        let value = status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .map(str::trim);
        match value {
            Some(value) if value.chars().all(|c| c == '0') => {}
            _ => {
                return Err(failed("drop every capability")(std::io::Error::other(
                    format!(
                        "/proc/self/status reports {field} {}",
                        value.unwrap_or("(missing)")
                    ),
                )))
            }
        }
    }
    Ok(())
}

pub fn set_no_new_privs() -> Result<(), SandboxError> {
    nix::sys::prctl::set_no_new_privs().map_err(failed("set no_new_privs"))
}
