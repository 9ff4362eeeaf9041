//! Per-session resource limits and their defaults.

use std::time::Duration;

const MIB: u64 = 1024 * 1024;

/// What one session may use. Every field can be set per session.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Memory of the whole session (cgroup), in MiB.
    pub memory_mib: u64,
    /// Processes and threads of the whole session (cgroup).
    pub processes: u64,
    /// CPU time share, in cores (cgroup).
    pub cpu_cores: f64,
    /// Wall-clock time of one execution.
    pub timeout: Duration,
    /// Largest single file, in MiB (RLIMIT_FSIZE).
    pub file_size_mib: u64,
    /// Total size of the working directory, in MiB (sandcell's quota watcher).
    pub workdir_quota_mib: u64,
    /// Size of the private `/tmp`, in MiB (tmpfs; its pages also count as memory).
    pub tmp_mib: u64,
    /// Open file descriptors (RLIMIT_NOFILE).
    pub open_files: u64,
    /// Stdout and stderr text the host keeps of one execution, in MiB: the first and
    /// the last half; what lies between is dropped and a marker line says how much.
    pub output_mib: u64,
    /// Rich results (displays and the value of the last expression) the host keeps of
    /// one execution, in MiB. A result that does not fit in what is left, including a
    /// single result larger than this, is replaced by a `text/plain` note.
    pub results_mib: u64,
    /// Results kept of one execution; later ones are counted in one last note.
    pub max_results: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_mib: 2048,
            processes: 256,
            cpu_cores: 1.0,
            timeout: Duration::from_secs(120),
            file_size_mib: 1024,
            workdir_quota_mib: 4096,
            tmp_mib: 1024,
            open_files: 4096,
            output_mib: 4,
            results_mib: 16,
            max_results: 1000,
        }
    }
}

impl Limits {
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib * MIB
    }

    pub fn file_size_bytes(&self) -> u64 {
        self.file_size_mib * MIB
    }

    pub fn workdir_quota_bytes(&self) -> u64 {
        self.workdir_quota_mib * MIB
    }

    pub fn tmp_bytes(&self) -> u64 {
        self.tmp_mib * MIB
    }

    pub fn output_bytes(&self) -> usize {
        mib_to_usize(self.output_mib)
    }

    pub fn results_bytes(&self) -> usize {
        mib_to_usize(self.results_mib)
    }
}

fn mib_to_usize(mib: u64) -> usize {
    usize::try_from(mib.saturating_mul(MIB)).unwrap_or(usize::MAX)
}
