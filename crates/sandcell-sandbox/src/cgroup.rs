//! Host side: one cgroup per session, enforcing its memory (swap included), process
//! count and CPU share, and telling afterwards whether the kernel OOM-killed it. Works
//! with cgroup v2 and with the v1 hierarchies (memory, pids, cpu) where those are what
//! the machine has. Memory and pids are required; cpu is used when present.
//!
//! Also the one step of this module that runs in the sandbox: [`join`], in the keeper.

use crate::error::{failed, SandboxError};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

const ROOT: &str = "/sys/fs/cgroup";
/// Set to a cgroup path (like `/sandcell-alice`) that an administrator delegated.
pub const DELEGATED_ENV: &str = "SANDCELL_CGROUP";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum CgroupVersion {
    V1,
    V2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Controller {
    Memory,
    Pids,
    Cpu,
}

impl Controller {
    const ALL: [Controller; 3] = [Controller::Memory, Controller::Pids, Controller::Cpu];

    fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
        }
    }

    /// Memory and pids are the limits a session must have; CPU shares are welcome.
    fn required(self) -> bool {
        self != Controller::Cpu
    }
}

/// Where session cgroups are created.
#[derive(Debug, Clone)]
pub struct CgroupParent {
    version: CgroupVersion,
    /// The controllers we use and their directory: one per hierarchy in v1, the same
    /// directory for all in v2.
    dirs: Vec<(Controller, PathBuf)>,
}

/// What a session's cgroup enforces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CgroupLimits {
    pub memory_bytes: u64,
    pub processes: u64,
    pub cpu_cores: f64,
}

/// A session's cgroup; removed with [`SessionCgroup::remove`].
#[derive(Debug)]
pub struct SessionCgroup {
    version: CgroupVersion,
    dirs: Vec<(Controller, PathBuf)>,
}

fn unavailable(why: impl Into<String>, fix: impl Into<String>) -> SandboxError {
    SandboxError::CgroupUnavailable {
        why: why.into(),
        fix: fix.into(),
    }
}

impl CgroupParent {
    /// `$SANDCELL_CGROUP` if set; else, as root, a `sandcell` cgroup sandcell creates;
    /// else an error that says how to delegate one.
    pub fn detect() -> Result<Self, SandboxError> {
        let delegated = std::env::var(DELEGATED_ENV).ok().filter(|v| !v.is_empty());
        let version = if Path::new(ROOT).join("cgroup.controllers").exists() {
            CgroupVersion::V2
        } else {
            CgroupVersion::V1
        };
        if delegated.is_none() && !nix::unistd::geteuid().is_root() {
            return Err(unavailable(
                "sandcell runs as an unprivileged user and no cgroup is delegated to it",
                how_to_delegate(version),
            ));
        }
        let parent = match version {
            CgroupVersion::V2 => Self::detect_v2(delegated.as_deref())?,
            CgroupVersion::V1 => Self::detect_v1(delegated.as_deref())?,
        };
        for dir in parent.distinct_dirs() {
            nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).map_err(|e| {
                unavailable(
                    format!("{} is not writable by this user ({e})", dir.display()),
                    how_to_delegate(version),
                )
            })?;
        }
        Ok(parent)
    }

    fn detect_v2(delegated: Option<&str>) -> Result<Self, SandboxError> {
        // As root, a top-level cgroup: v2 forbids enabling controllers in a cgroup that
        // has processes of its own, which the cgroup we run in usually has.
        let dir = Path::new(ROOT).join(delegated.unwrap_or("/sandcell").trim_start_matches('/'));
        if delegated.is_none() {
            enable_controllers(Path::new(ROOT))?;
            fs::create_dir_all(&dir).map_err(failed(format!("create {}", dir.display())))?;
        }
        let available = fs::read_to_string(dir.join("cgroup.controllers")).map_err(|e| {
            unavailable(
                format!("cannot read {}: {e}", dir.display()),
                how_to_delegate(CgroupVersion::V2),
            )
        })?;
        let has = |c: Controller| available.split_whitespace().any(|a| a == c.name());
        if let Some(missing) = Controller::ALL
            .into_iter()
            .find(|c| c.required() && !has(*c))
        {
            return Err(unavailable(
                format!(
                    "the {} controller is not enabled for {}",
                    missing.name(),
                    dir.display()
                ),
                "enable memory and pids in the parent cgroup's cgroup.subtree_control",
            ));
        }
        // Session cgroups are children of `dir`: they get what its subtree_control enables.
        enable_controllers(&dir)?;
        let dirs = Controller::ALL
            .into_iter()
            .filter(|c| has(*c))
            .map(|c| (c, dir.clone()))
            .collect();
        Ok(Self {
            version: CgroupVersion::V2,
            dirs,
        })
    }

    fn detect_v1(delegated: Option<&str>) -> Result<Self, SandboxError> {
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mut dirs = Vec::new();
        for controller in Controller::ALL {
            let hierarchy = Path::new(ROOT).join(controller.name());
            if !hierarchy.join("cgroup.procs").exists() {
                if controller.required() {
                    return Err(unavailable(
                        format!(
                            "no cgroup v1 {} hierarchy is mounted at {}",
                            controller.name(),
                            hierarchy.display()
                        ),
                        "mount the missing v1 hierarchy, or boot with cgroup v2 (`systemd.unified_cgroup_hierarchy=1`)",
                    ));
                }
                continue;
            }
            // As root, beneath our own cgroup: that is where whoever started us (a
            // container runtime, say) lets our processes be.
            let dir = match delegated {
                Some(path) => hierarchy.join(path.trim_start_matches('/')),
                None => {
                    let dir = hierarchy
                        .join(own_v1_path(&own, controller.name()))
                        .join("sandcell");
                    fs::create_dir_all(&dir)
                        .map_err(failed(format!("create {}", dir.display())))?;
                    dir
                }
            };
            dirs.push((controller, dir));
        }
        Ok(Self {
            version: CgroupVersion::V1,
            dirs,
        })
    }

    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// Whether CPU shares can be enforced (memory and pids always are).
    pub fn has_cpu(&self) -> bool {
        self.dirs.iter().any(|(c, _)| *c == Controller::Cpu)
    }

    /// One line for humans, e.g. `cgroup v1 (memory, pids, cpu) under /process_api/…/sandcell`.
    pub fn describe(&self) -> String {
        let names: Vec<&str> = self.dirs.iter().map(|(c, _)| c.name()).collect();
        let (version, hierarchy) = match self.version {
            CgroupVersion::V1 => ("v1", Path::new(ROOT).join("memory")),
            CgroupVersion::V2 => ("v2", PathBuf::from(ROOT)),
        };
        // The memory controller's directory, as a cgroup path.
        let path = self
            .dirs
            .first()
            .and_then(|(_, dir)| dir.strip_prefix(&hierarchy).ok())
            .map(|relative| Path::new("/").join(relative));
        format!(
            "cgroup {version} ({}) under {}",
            names.join(", "),
            path.unwrap_or_default().display()
        )
    }

    fn distinct_dirs(&self) -> Vec<&PathBuf> {
        distinct(&self.dirs)
    }

    /// The names of the cgroups beneath this parent (in any of its hierarchies), such as
    /// session cgroups that a process which is gone left behind.
    pub fn children(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .distinct_dirs()
            .into_iter()
            .filter_map(|dir| fs::read_dir(dir).ok())
            .flatten()
            .filter_map(Result::ok)
            .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|entry| entry.file_name().into_string().ok())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// One sentence on how an administrator delegates a cgroup to an unprivileged user.
fn how_to_delegate(version: CgroupVersion) -> String {
    match version {
        // v2 lets a user move a process only between cgroups whose common ancestor it
        // owns, so sandcell itself must run in a leaf of the delegated cgroup.
        CgroupVersion::V2 => format!(
            "to delegate one, run as root `mkdir -p /sys/fs/cgroup/sandcell-$USER/host && chown -R $USER /sys/fs/cgroup/sandcell-$USER` (with memory and pids in /sys/fs/cgroup/cgroup.subtree_control), then as $USER `echo $$ > /sys/fs/cgroup/sandcell-$USER/host/cgroup.procs` and run sandcell from that shell with {DELEGATED_ENV}=/sandcell-$USER"
        ),
        CgroupVersion::V1 => format!(
            "to delegate one, run as root, for each of memory, pids and cpu, `mkdir /sys/fs/cgroup/CONTROLLER/sandcell-$USER && chown -R $USER /sys/fs/cgroup/CONTROLLER/sandcell-$USER`, then run sandcell with {DELEGATED_ENV}=/sandcell-$USER"
        ),
    }
}

/// The path of our own cgroup in one v1 hierarchy, relative to its root.
fn own_v1_path(proc_self_cgroup: &str, controller: &str) -> PathBuf {
    proc_self_cgroup
        .lines()
        .find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == controller)
                .then(|| PathBuf::from(path.trim_start_matches('/')))
        })
        .unwrap_or_default()
}

/// Enables, for the children of `dir`, every controller we use that `dir` has.
fn enable_controllers(dir: &Path) -> Result<(), SandboxError> {
    let available = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let wanted: Vec<String> = Controller::ALL
        .iter()
        .filter(|c| available.split_whitespace().any(|a| a == c.name()))
        .map(|c| format!("+{}", c.name()))
        .collect();
    let control = dir.join("cgroup.subtree_control");
    fs::write(&control, wanted.join(" ")).map_err(failed(format!("write {}", control.display())))
}

impl SessionCgroup {
    pub fn create(
        parent: &CgroupParent,
        name: &str,
        limits: &CgroupLimits,
    ) -> Result<Self, SandboxError> {
        let cgroup = Self::existing(parent, name);
        for dir in distinct(&cgroup.dirs) {
            match fs::create_dir(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    let _ = cgroup.remove();
                    return Err(failed(format!("create {}", dir.display()))(e));
                }
                _ => {}
            }
        }
        if let Err(e) = cgroup.set_limits(limits) {
            let _ = cgroup.remove();
            return Err(e);
        }
        Ok(cgroup)
    }

    /// An existing session cgroup beneath `parent`, to kill and remove what is left in it.
    pub fn existing(parent: &CgroupParent, name: &str) -> Self {
        Self {
            version: parent.version,
            dirs: parent
                .dirs
                .iter()
                .map(|(controller, dir)| (*controller, dir.join(name)))
                .collect(),
        }
    }

    fn set_limits(&self, limits: &CgroupLimits) -> Result<(), SandboxError> {
        const PERIOD_US: u64 = 100_000;
        // At least 1 ms per period: the kernel's minimum quota.
        let quota = ((limits.cpu_cores * PERIOD_US as f64) as u64).max(1000);
        let memory = limits.memory_bytes.to_string();
        for (controller, dir) in &self.dirs {
            // (file, value, whether the file may legitimately be missing)
            let settings: Vec<(&str, String, bool)> = match (self.version, controller) {
                // Swap accounting files exist only when the kernel accounts swap; where
                // they exist, swap counts against the same limit so it cannot bypass it.
                (CgroupVersion::V1, Controller::Memory) => vec![
                    ("memory.limit_in_bytes", memory.clone(), false),
                    ("memory.memsw.limit_in_bytes", memory.clone(), true),
                ],
                (CgroupVersion::V2, Controller::Memory) => vec![
                    ("memory.max", memory.clone(), false),
                    ("memory.swap.max", "0".into(), true),
                ],
                (_, Controller::Pids) => vec![("pids.max", limits.processes.to_string(), false)],
                (CgroupVersion::V1, Controller::Cpu) => vec![
                    ("cpu.cfs_period_us", PERIOD_US.to_string(), false),
                    ("cpu.cfs_quota_us", quota.to_string(), false),
                ],
                (CgroupVersion::V2, Controller::Cpu) => {
                    vec![("cpu.max", format!("{quota} {PERIOD_US}"), false)]
                }
            };
            for (file, value, optional) in settings {
                let path = dir.join(file);
                if optional && !path.exists() {
                    continue;
                }
                fs::write(&path, &value)
                    .map_err(failed(format!("write {value} to {}", path.display())))?;
            }
        }
        Ok(())
    }

    /// The `cgroup.procs` files a session process writes itself into.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        distinct(&self.dirs)
            .into_iter()
            .map(|dir| dir.join("cgroup.procs"))
            .collect()
    }

    /// How many times the kernel has OOM-killed a process of this cgroup.
    pub fn oom_kills(&self) -> u64 {
        let Some((_, dir)) = self.dirs.iter().find(|(c, _)| *c == Controller::Memory) else {
            return 0;
        };
        let file = match self.version {
            CgroupVersion::V1 => "memory.oom_control",
            CgroupVersion::V2 => "memory.events",
        };
        fs::read_to_string(dir.join(file))
            .unwrap_or_default()
            .lines()
            .find_map(|line| line.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Kills every process in the cgroup: `cgroup.kill` on v2; otherwise SIGKILL to each
    /// listed pid, repeated (a bounded number of times) because forks may race us.
    pub fn kill_all(&self) {
        if self.version == CgroupVersion::V2 {
            if let Some((_, dir)) = self.dirs.first() {
                // cgroup.kill exists since Linux 5.14; older kernels take the loop below.
                if fs::write(dir.join("cgroup.kill"), "1").is_ok() {
                    return;
                }
            }
        }
        for _ in 0..50 {
            let pids = self.pids();
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .procs_files()
            .iter()
            .flat_map(|file| {
                fs::read_to_string(file)
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<_>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Removes the cgroup, waiting up to two seconds for its processes to drain.
    pub fn remove(&self) -> Result<(), SandboxError> {
        for dir in distinct(&self.dirs) {
            let mut attempt = 0;
            loop {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    // EBUSY while exiting processes are still being accounted.
                    Err(_) if attempt < 100 => {
                        attempt += 1;
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => return Err(failed(format!("remove {}", dir.display()))(e)),
                }
            }
        }
        Ok(())
    }
}

/// The directories of `dirs`, each once (v2 lists the same one for every controller).
fn distinct(dirs: &[(Controller, PathBuf)]) -> Vec<&PathBuf> {
    let mut distinct: Vec<&PathBuf> = Vec::new();
    for (_, dir) in dirs {
        if !distinct.contains(&dir) {
            distinct.push(dir);
        }
    }
    distinct
}

/// Step, in the keeper before it unshares: join the session's cgroup(s), so that the
/// session and everything it starts are accounted there.
pub fn join(procs_files: &[PathBuf]) -> Result<(), SandboxError> {
    for file in procs_files {
        // "0" means the writing process, in v1 and v2 alike.
        fs::write(file, "0").map_err(failed(format!(
            "join the session's cgroup ({})",
            file.display()
        )))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_v1_path_is_found_by_controller() {
        let table = "9:name=systemd:/\n4:memory:/process_api/abc\n1:cpu,cpuacct:/x\n0::/\n";
        assert_eq!(
            own_v1_path(table, "memory"),
            PathBuf::from("process_api/abc")
        );
        assert_eq!(own_v1_path(table, "cpu"), PathBuf::from("x"));
        assert_eq!(own_v1_path(table, "pids"), PathBuf::new());
    }

    #[test]
    fn a_v2_cgroup_lists_its_directory_once() {
        let dir = PathBuf::from("/sys/fs/cgroup/sandcell/s1");
        let cgroup = SessionCgroup {
            version: CgroupVersion::V2,
            dirs: Controller::ALL.map(|c| (c, dir.clone())).to_vec(),
        };
        assert_eq!(cgroup.procs_files(), [dir.join("cgroup.procs")]);
    }
}
