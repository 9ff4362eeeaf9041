//! Step: the loopback interface of the new network namespace, brought up so servers
//! inside the session can talk to each other. No other interface exists, so nothing
//! outside is reachable.

use crate::error::{last_error, SandboxError};

pub fn loopback_up() -> Result<(), SandboxError> {
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq we own; the fd is closed below.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(last_error(
                "opening a socket to configure the loopback interface",
            ));
        }
        let mut request: libc::ifreq = std::mem::zeroed();
        for (dst, src) in request.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        let result = if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut request) < 0 {
            Err(last_error("reading the loopback interface's flags"))
        } else {
            request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &request) < 0 {
                Err(last_error("bringing the loopback interface up"))
            } else {
                Ok(())
            }
        };
        libc::close(fd);
        result
    }
}
