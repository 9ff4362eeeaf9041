//! The sandbox as a C ABI, for the forked Python session processes to call through
//! `ctypes.PyDLL` (they hold the data stack the template imported, so they cannot exec a
//! helper instead). Two functions taking the `SandboxSpec` as JSON, and the init:
//!
//! ```c
//! int sandcell_isolate(const char *spec_json, size_t len, char *err, size_t err_len);
//! int sandcell_confine(const char *spec_json, size_t len, char *err, size_t err_len);
//! _Noreturn void sandcell_init(int session_pid, int report_fd);
//! ```
//!
//! The first two return 0 on success, or -1 with a NUL-terminated UTF-8 message
//! (truncated to fit) in `err`. `sandcell_init` turns the calling process into the init
//! of the session's namespace ([`sandcell_sandbox::init::serve`]) and writes how the
//! session process ended to `report_fd` as the keeper's `exited` status line.
//!
//! Not for: anything but calling `sandcell_sandbox::{isolate, confine, init::serve}`.

use sandcell_sandbox::init::SessionExit;
use sandcell_sandbox::{SandboxError, SandboxSpec};
use std::io::Write;
use std::os::fd::FromRawFd;
use std::os::raw::{c_char, c_int};

/// Joins the cgroup and creates the namespaces (see `sandcell_sandbox::isolate`).
///
/// # Safety
/// `spec_json` must point to `len` readable bytes and `err` to `err_len` writable bytes
/// (either may be null).
#[no_mangle]
pub unsafe extern "C" fn sandcell_isolate(
    spec_json: *const c_char,
    len: usize,
    err: *mut c_char,
    err_len: usize,
) -> c_int {
    // SAFETY: forwarded from our caller's guarantee.
    unsafe { run(spec_json, len, err, err_len, sandcell_sandbox::isolate) }
}

/// Builds the sandbox around the calling process (see `sandcell_sandbox::confine`).
///
/// # Safety
/// As for [`sandcell_isolate`].
#[no_mangle]
pub unsafe extern "C" fn sandcell_confine(
    spec_json: *const c_char,
    len: usize,
    err: *mut c_char,
    err_len: usize,
) -> c_int {
    // SAFETY: forwarded from our caller's guarantee.
    unsafe { run(spec_json, len, err, err_len, sandcell_sandbox::confine) }
}

/// Becomes the init of the session's namespace, whose child `session_pid` runs the
/// session; writes `{"event":"exited","code":N}` or `{"event":"exited","signal":N}` to
/// `report_fd` (the keeper's status pipe) when it ends, then exits. Never returns.
///
/// # Safety
/// `report_fd` must be an open descriptor the caller gives up; the process must be
/// single-threaded, and no Python code runs in it any more.
#[no_mangle]
pub unsafe extern "C" fn sandcell_init(session_pid: c_int, report_fd: c_int) -> ! {
    sandcell_sandbox::init::serve(session_pid, report_fd, |exit| {
        // SAFETY: the caller gave this descriptor up to us.
        let mut report = unsafe { std::fs::File::from_raw_fd(report_fd) };
        // Nobody is left to tell if the keeper is gone.
        let _ = report.write_all(exited_line(exit).as_bytes());
    })
}

/// The keeper's status line for how the session process ended.
fn exited_line(exit: SessionExit) -> String {
    let event = match exit {
        SessionExit::Code(code) => serde_json::json!({"event": "exited", "code": code}),
        SessionExit::Signal(signal) => serde_json::json!({"event": "exited", "signal": signal}),
    };
    format!("{event}\n")
}

/// # Safety
/// As for [`sandcell_isolate`].
unsafe fn run(
    spec_json: *const c_char,
    len: usize,
    err: *mut c_char,
    err_len: usize,
    step: fn(&SandboxSpec) -> Result<(), SandboxError>,
) -> c_int {
    if spec_json.is_null() {
        // SAFETY: forwarded from our caller's guarantee.
        unsafe { write_error(err, err_len, "no sandbox spec was given") };
        return -1;
    }
    // SAFETY: the caller guarantees `len` readable bytes at `spec_json`.
    let bytes = unsafe { std::slice::from_raw_parts(spec_json.cast::<u8>(), len) };
    // A panic must not unwind into the Python interpreter.
    let outcome = std::panic::catch_unwind(|| {
        let spec: SandboxSpec = serde_json::from_slice(bytes)
            .map_err(|e| format!("the sandbox spec is not valid JSON for this version: {e}"))?;
        step(&spec).map_err(|e| e.to_string())
    })
    .unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("no message");
        Err(format!(
            "the sandbox library panicked ({what}); this is a bug in sandcell"
        ))
    });
    match outcome {
        Ok(()) => 0,
        Err(message) => {
            // SAFETY: forwarded from our caller's guarantee.
            unsafe { write_error(err, err_len, &message) };
            -1
        }
    }
}

/// Copies `message` into the caller's buffer, truncated on a character boundary so the
/// result stays valid UTF-8, and NUL-terminated.
///
/// # Safety
/// `err` must be null or point to `err_len` writable bytes.
unsafe fn write_error(err: *mut c_char, err_len: usize, message: &str) {
    if err.is_null() || err_len == 0 {
        return;
    }
    let mut end = message.len().min(err_len - 1);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    // SAFETY: the caller guarantees `err_len` writable bytes; we write `end + 1 <= err_len`.
    unsafe {
        std::ptr::copy_nonoverlapping(message.as_ptr(), err.cast::<u8>(), end);
        *err.add(end) = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(spec: &[u8], err_len: usize) -> (c_int, Vec<u8>) {
        let mut err = vec![0x55u8; err_len];
        // SAFETY: both buffers are valid for their lengths.
        let code = unsafe {
            sandcell_isolate(
                spec.as_ptr().cast(),
                spec.len(),
                err.as_mut_ptr().cast(),
                err.len(),
            )
        };
        (code, err)
    }

    #[test]
    fn an_invalid_spec_is_reported_not_panicked() {
        let (code, err) = call(b"{not json", 256);
        assert_eq!(code, -1);
        let message = std::ffi::CStr::from_bytes_until_nul(&err).unwrap();
        assert!(message
            .to_str()
            .unwrap()
            .starts_with("the sandbox spec is not valid"));
    }

    #[test]
    fn the_init_reports_in_the_keepers_words() {
        let parsed = |exit| {
            let line = exited_line(exit);
            assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
            serde_json::from_str::<serde_json::Value>(&line).unwrap()
        };
        assert_eq!(
            parsed(SessionExit::Code(0)),
            serde_json::json!({"event": "exited", "code": 0})
        );
        assert_eq!(
            parsed(SessionExit::Signal(11)),
            serde_json::json!({"event": "exited", "signal": 11})
        );
    }

    #[test]
    fn messages_are_truncated_to_the_buffer_on_a_character_boundary() {
        let mut err = [0x55u8; 6];
        // SAFETY: the buffer is valid for its length.
        unsafe { write_error(err.as_mut_ptr().cast(), err.len(), "abcdé…") };
        assert_eq!(&err, b"abcd\0\x55");
        let (code, err) = call(b"", 1);
        assert_eq!((code, err), (-1, vec![0]));
    }
}
