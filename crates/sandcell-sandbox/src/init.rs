//! Step: a real init as PID 1 of the session's PID namespace. The session process forks
//! once it is confined; the child runs the session and the parent stays behind as this
//! init, confined like it (same identity, no capabilities, Landlock, seccomp: it needs
//! only `wait4`, `kill`, `rt_sigtimedwait`, `prctl`, `close_range` and `write`).
//!
//! It reaps every process of the namespace (an orphan is re-parented to PID 1, and a
//! zombie holds one of the session's process slots until PID 1 waits for it), passes the
//! host's SIGINT (interrupts), SIGTERM and SIGHUP on to the session process, and when the
//! session process ends, reports how (exit code or signal) and exits, which makes the
//! kernel kill whatever else still runs in the namespace.

use nix::errno::Errno;
use nix::sys::signal::{kill, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::os::fd::RawFd;

/// The signals the host sends the session's PID 1 and the init passes on.
pub const FORWARDED: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// How the session process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionExit {
    Code(i32),
    Signal(i32),
}

impl SessionExit {
    /// The init's own exit code, as a shell would encode the session's status (the host
    /// reads the exact status from the report, not from this).
    fn as_exit_code(self) -> i32 {
        match self {
            SessionExit::Code(code) => code,
            SessionExit::Signal(signal) => 128 + signal,
        }
    }
}

/// Becomes the init of the namespace, whose child `session` runs the session: keeps only
/// the descriptor `keep` open, reaps, forwards, and calls `report` with how `session`
/// ended before exiting. Never returns.
///
/// The caller blocks [`FORWARDED`] and SIGCHLD before it forks `session`, so that none
/// arrives before this takes over: a signal the namespace's PID 1 has neither blocked nor
/// handled is discarded by the kernel.
pub fn serve(session: libc::pid_t, keep: RawFd, report: impl FnOnce(SessionExit)) -> ! {
    let session = Pid::from_raw(session);
    // The session's code runs as the same user: it must not trace this process or reach
    // its descriptors (the report) through /proc.
    let _ = nix::sys::prctl::set_dumpable(false);
    let mut signals = SigSet::empty();
    for signal in FORWARDED {
        signals.add(signal);
    }
    signals.add(Signal::SIGCHLD);
    let _ = signals.thread_block();
    // SAFETY: restores the default disposition (ignored when it was ignored, children
    // would be reaped by the kernel and their status lost); no handler runs.
    let _ = unsafe { nix::sys::signal::signal(Signal::SIGCHLD, SigHandler::SigDfl) };
    close_all_but(keep);
    loop {
        if let Some(exit) = reap(session) {
            report(exit);
            // SAFETY: ends the process without running the inherited Python's exit code.
            unsafe { libc::_exit(exit.as_exit_code()) }
        }
        match signals.wait() {
            Ok(Signal::SIGCHLD) | Err(_) => {}
            // The session may be gone already; its exit is reported when reaped.
            Ok(signal) => {
                let _ = kill(session, signal);
            }
        }
    }
}

/// Waits for every child that has ended; how `session` ended, if it did.
fn reap(session: Pid) -> Option<SessionExit> {
    let mut ended = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == session => {
                ended = Some(SessionExit::Code(code));
            }
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == session => {
                ended = Some(SessionExit::Signal(signal as i32));
            }
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return ended,
            Ok(_) | Err(Errno::EINTR) => {}
            // Nothing else can fail here; do not spin if it does.
            Err(_) => return ended,
        }
    }
}

/// Closes every descriptor but `keep` (the session's socket among them: its end must
/// close when the session process ends, not when the init does).
fn close_all_but(keep: RawFd) {
    let keep = libc::c_uint::try_from(keep).unwrap_or(libc::c_uint::MAX);
    // SAFETY: close_range only closes descriptors; none of them is used again here.
    unsafe {
        if keep > 0 {
            libc::syscall(libc::SYS_close_range, 0, keep - 1, 0);
        }
        if keep < libc::c_uint::MAX {
            libc::syscall(libc::SYS_close_range, keep + 1, libc::c_uint::MAX, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_init_exits_as_a_shell_would_say_the_session_did() {
        assert_eq!(SessionExit::Code(3).as_exit_code(), 3);
        assert_eq!(SessionExit::Signal(9).as_exit_code(), 137);
    }
}
