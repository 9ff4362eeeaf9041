//! Host side: one cgroup per session, enforcing its memory, process count and CPU share,
//! and telling afterwards whether the kernel OOM-killed it. Works with cgroup v2 and with
//! the v1 hierarchies (memory, pids, cpu) where those are what the machine has.

use crate::error::SandboxError;
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
    fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
        }
    }
}

/// Where session cgroups are created.
#[derive(Debug, Clone)]
pub struct CgroupParent {
    version: CgroupVersion,
    /// v2: one directory; v1: one per controller hierarchy.
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

fn unavailable(why: String) -> SandboxError {
    SandboxError::CgroupUnavailable(why)
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> SandboxError {
    move |e| unavailable(format!("{what}: {e}"))
}

impl CgroupParent {
    /// `$SANDCELL_CGROUP` if set; else, as root, a `sandcell` cgroup sandcell creates;
    /// else an error that says how to delegate one.
    pub fn detect() -> Result<Self, SandboxError> {
        let delegated = std::env::var(DELEGATED_ENV).ok().filter(|v| !v.is_empty());
        let root = nix::unistd::geteuid().is_root();
        if delegated.is_none() && !root {
            return Err(unavailable(format!(
                "sandcell runs as an unprivileged user and no cgroup is delegated to it ({DELEGATED_ENV} is not set)"
            )));
        }
        let parent = if Path::new(ROOT).join("cgroup.controllers").exists() {
            Self::detect_v2(delegated.as_deref())?
        } else {
            Self::detect_v1(delegated.as_deref())?
        };
        for (_, dir) in &parent.dirs {
            if delegated.is_none() {
                fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
            }
            nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).map_err(|e| {
                unavailable(format!(
                    "{} is not writable by this user ({e})",
                    dir.display()
                ))
            })?;
        }
        if parent.version == CgroupVersion::V2 {
            let dir = &parent.dirs[0].1;
            if delegated.is_none() {
                // The root cgroup may have processes and still delegate controllers.
                enable_controllers(Path::new(ROOT))?;
            }
            enable_controllers(dir)?;
        }
        Ok(parent)
    }

    fn detect_v2(delegated: Option<&str>) -> Result<Self, SandboxError> {
        let available =
            fs::read_to_string(Path::new(ROOT).join("cgroup.controllers")).unwrap_or_default();
        for needed in ["memory", "pids"] {
            if !available.split_whitespace().any(|c| c == needed) {
                return Err(unavailable(format!(
                    "the cgroup v2 hierarchy has no {needed} controller"
                )));
            }
        }
        // As root, a top-level cgroup: v2 forbids enabling controllers in a cgroup that
        // has processes of its own, which the cgroup we run in usually has.
        let relative = delegated.unwrap_or("/sandcell");
        let dir = Path::new(ROOT).join(relative.trim_start_matches('/'));
        let mut dirs = vec![(Controller::Memory, dir.clone())];
        if available.split_whitespace().any(|c| c == "cpu") {
            dirs.push((Controller::Cpu, dir.clone()));
        }
        dirs.push((Controller::Pids, dir));
        Ok(Self {
            version: CgroupVersion::V2,
            dirs,
        })
    }

    fn detect_v1(delegated: Option<&str>) -> Result<Self, SandboxError> {
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mut dirs = Vec::new();
        for controller in [Controller::Memory, Controller::Pids, Controller::Cpu] {
            let hierarchy = Path::new(ROOT).join(controller.name());
            if !hierarchy.join("cgroup.procs").exists() {
                if controller == Controller::Cpu {
                    continue; // CPU shares are welcome but not required
                }
                return Err(unavailable(format!(
                    "no cgroup {} controller is mounted at {}",
                    controller.name(),
                    hierarchy.display()
                )));
            }
            let relative = match delegated {
                Some(path) => PathBuf::from(path.trim_start_matches('/')),
                None => own_v1_path(&own, controller.name()).join("sandcell"),
            };
            dirs.push((controller, hierarchy.join(relative)));
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

    /// One line for humans, e.g. `cgroup v1 (memory, pids, cpu) under /sys/fs/cgroup/memory/…`.
    pub fn describe(&self) -> String {
        let names: Vec<&str> = self.dirs.iter().map(|(c, _)| c.name()).collect();
        let version = match self.version {
            CgroupVersion::V1 => "v1",
            CgroupVersion::V2 => "v2",
        };
        format!(
            "cgroup {version} ({}) under {}",
            names.join(", "),
            self.dirs[0].1.display()
        )
    }
}

/// The path of our own cgroup in one v1 hierarchy, relative to its root.
fn own_v1_path(proc_self_cgroup: &str, controller: &str) -> PathBuf {
    proc_self_cgroup
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == controller)
                .then(|| PathBuf::from(path.trim_start_matches('/')))
        })
        .next()
        .unwrap_or_default()
}

fn enable_controllers(dir: &Path) -> Result<(), SandboxError> {
    let available = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let wanted: Vec<String> = ["memory", "pids", "cpu"]
        .iter()
        .filter(|c| available.split_whitespace().any(|a| a == **c))
        .map(|c| format!("+{c}"))
        .collect();
    fs::write(dir.join("cgroup.subtree_control"), wanted.join(" "))
        .map_err(io(format!("enabling controllers in {}", dir.display())))
}

impl SessionCgroup {
    pub fn create(
        parent: &CgroupParent,
        name: &str,
        limits: &CgroupLimits,
    ) -> Result<Self, SandboxError> {
        let mut dirs: Vec<(Controller, PathBuf)> = Vec::new();
        for (controller, parent_dir) in &parent.dirs {
            let dir = parent_dir.join(name);
            if !dirs.iter().any(|(_, d)| *d == dir) {
                match fs::create_dir(&dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                        return Err(io(format!("creating {}", dir.display()))(e))
                    }
                    _ => {}
                }
            }
            dirs.push((*controller, dir));
        }
        let cgroup = Self {
            version: parent.version,
            dirs,
        };
        if let Err(e) = cgroup.set_limits(limits) {
            let _ = cgroup.remove();
            return Err(e);
        }
        Ok(cgroup)
    }

    fn set_limits(&self, limits: &CgroupLimits) -> Result<(), SandboxError> {
        let period: u64 = 100_000;
        let quota = ((limits.cpu_cores * period as f64) as u64).max(1000);
        for (controller, dir) in &self.dirs {
            let settings: Vec<(&str, String)> = match (self.version, controller) {
                (CgroupVersion::V1, Controller::Memory) => vec![
                    ("memory.limit_in_bytes", limits.memory_bytes.to_string()),
                    (
                        "memory.memsw.limit_in_bytes",
                        limits.memory_bytes.to_string(),
                    ),
                ],
                (CgroupVersion::V2, Controller::Memory) => vec![
                    ("memory.max", limits.memory_bytes.to_string()),
                    ("memory.swap.max", "0".into()),
                ],
                (_, Controller::Pids) => vec![("pids.max", limits.processes.to_string())],
                (CgroupVersion::V1, Controller::Cpu) => vec![
                    ("cpu.cfs_period_us", period.to_string()),
                    ("cpu.cfs_quota_us", quota.to_string()),
                ],
                (CgroupVersion::V2, Controller::Cpu) => {
                    vec![("cpu.max", format!("{quota} {period}"))]
                }
            };
            for (file, value) in settings {
                let path = dir.join(file);
                // Swap accounting files exist only when the kernel accounts swap.
                if file.contains("swap") || file.contains("memsw") {
                    if path.exists() {
                        let _ = fs::write(&path, &value);
                    }
                    continue;
                }
                fs::write(&path, &value).map_err(io(format!("setting {}", path.display())))?;
            }
        }
        Ok(())
    }

    /// The `cgroup.procs` files a session process writes itself into.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self
            .dirs
            .iter()
            .map(|(_, d)| d.join("cgroup.procs"))
            .collect();
        files.dedup();
        files
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

    fn pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .procs_files()
            .iter()
            .flat_map(|f| {
                fs::read_to_string(f)
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

    /// Kills every process in the cgroup (bounded retries: forks may race the killing).
    pub fn kill_all(&self) {
        if self.version == CgroupVersion::V2 {
            let kill = self.dirs[0].1.join("cgroup.kill");
            if fs::write(&kill, "1").is_ok() {
                return;
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

    /// Removes the cgroup once its processes are gone (waiting briefly for them).
    pub fn remove(&self) -> Result<(), SandboxError> {
        let mut dirs: Vec<&PathBuf> = self.dirs.iter().map(|(_, d)| d).collect();
        dirs.dedup();
        for dir in dirs {
            let mut attempt = 0;
            loop {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(_) if attempt < 100 => {
                        attempt += 1;
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => return Err(io(format!("removing {}", dir.display()))(e)),
                }
            }
        }
        Ok(())
    }
}

/// Step, in the keeper before it unshares: join the session's cgroup(s).
pub fn join(procs_files: &[PathBuf]) -> Result<(), SandboxError> {
    for file in procs_files {
        fs::write(file, std::process::id().to_string()).map_err(crate::error::failed(format!(
            "joining the session's cgroup {}",
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
}
