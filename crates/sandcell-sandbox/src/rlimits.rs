//! Step: resource limits of the session process, inherited by everything it starts.
//! Address space and process count are set only when the spec asks (no cgroup enforces
//! them).

use crate::error::{failed, SandboxError};
use crate::spec::RlimitSpec;
use nix::sys::resource::{getrlimit, setrlimit, Resource};

pub fn apply(limits: &RlimitSpec) -> Result<(), SandboxError> {
    let mut wanted = vec![
        (Resource::RLIMIT_FSIZE, limits.file_size_bytes, "file size"),
        (Resource::RLIMIT_NOFILE, limits.open_files, "open files"),
        (Resource::RLIMIT_CORE, 0, "core dump"),
    ];
    if let Some(bytes) = limits.address_space_bytes {
        wanted.push((Resource::RLIMIT_AS, bytes, "address space"));
    }
    if let Some(processes) = limits.processes {
        wanted.push((Resource::RLIMIT_NPROC, processes, "process"));
    }
    for (resource, value, what) in wanted {
        // Never try to raise a hard limit: that needs a privilege we are giving up.
        let (_, hard) = getrlimit(resource).map_err(failed(format!("read the {what} limit")))?;
        let value = value.min(hard);
        setrlimit(resource, value, value).map_err(failed(format!("set the {what} limit")))?;
    }
    Ok(())
}
