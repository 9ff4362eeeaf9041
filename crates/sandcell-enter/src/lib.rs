//! The sandbox as a C ABI, for the forked Python session processes to call through
//! `ctypes` (they hold the data stack imported by the template, so they cannot exec a
//! helper). Two functions, each taking the `SandboxSpec` as JSON.
//!
//! Not for: anything but calling `sandcell_sandbox::{isolate, confine}`.

use sandcell_sandbox::{SandboxError, SandboxSpec};
use std::os::raw::{c_char, c_int};

/// Joins the cgroup and creates the namespaces (see `sandcell_sandbox::isolate`).
///
/// # Safety
/// `spec` must point to `spec_len` readable bytes and `err` to `err_len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn sandcell_isolate(
    spec: *const c_char,
    spec_len: usize,
    err: *mut c_char,
    err_len: usize,
) -> c_int {
    run(spec, spec_len, err, err_len, sandcell_sandbox::isolate)
}

/// Builds the sandbox around the calling process (see `sandcell_sandbox::confine`).
///
/// # Safety
/// As for [`sandcell_isolate`].
#[no_mangle]
pub unsafe extern "C" fn sandcell_confine(
    spec: *const c_char,
    spec_len: usize,
    err: *mut c_char,
    err_len: usize,
) -> c_int {
    run(spec, spec_len, err, err_len, sandcell_sandbox::confine)
}

unsafe fn run(
    spec: *const c_char,
    spec_len: usize,
    err: *mut c_char,
    err_len: usize,
    step: fn(&SandboxSpec) -> Result<(), SandboxError>,
) -> c_int {
    if spec.is_null() {
        write_error(err, err_len, "no sandbox spec was given");
        return -1;
    }
    // SAFETY: the caller guarantees `spec_len` readable bytes at `spec`.
    let bytes = unsafe { std::slice::from_raw_parts(spec.cast::<u8>(), spec_len) };
    // A panic must not unwind into the Python interpreter.
    let outcome = std::panic::catch_unwind(|| {
        let spec: SandboxSpec = serde_json::from_slice(bytes)
            .map_err(|e| format!("the sandbox spec is not valid: {e}"))?;
        step(&spec).map_err(|e| e.to_string())
    })
    .unwrap_or_else(|_| Err("the sandbox library panicked".into()));
    match outcome {
        Ok(()) => 0,
        Err(message) => {
            write_error(err, err_len, &message);
            -1
        }
    }
}

fn write_error(err: *mut c_char, err_len: usize, message: &str) {
    if err.is_null() || err_len == 0 {
        return;
    }
    // Truncate on a character boundary, leaving room for the NUL.
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
