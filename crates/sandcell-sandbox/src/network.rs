//! Step: the loopback interface of the new network namespace, brought up so servers
//! inside the session can talk to each other. No other interface exists, so nothing
//! outside is reachable.

use crate::error::{failed, last_error, SandboxError};
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
use std::os::fd::AsRawFd;

pub fn loopback_up() -> Result<(), SandboxError> {
    // Any socket of the namespace will do as a handle for interface ioctls.
    let handle = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(failed("open a socket to configure the loopback interface"))?;
    // SAFETY: an all-zero ifreq is valid; we only fill in the interface name.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name and writes the flags of the ifreq we own.
    if unsafe { libc::ioctl(handle.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) } < 0 {
        return Err(last_error("read the loopback interface's flags"));
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own.
    if unsafe { libc::ioctl(handle.as_raw_fd(), libc::SIOCSIFFLAGS, &request) } < 0 {
        return Err(last_error("bring the loopback interface up"));
    }
    Ok(())
}
