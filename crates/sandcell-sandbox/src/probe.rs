//! What this machine supports, tried for real in throwaway child processes, for
//! `sandcell doctor`.

use crate::cgroup::{CgroupLimits, CgroupParent, SessionCgroup};
use serde::Serialize;

/// One isolation layer and whether it is active here.
#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    /// Stable identifier, e.g. `network_namespace`.
    pub layer: &'static str,
    pub title: String,
    pub active: bool,
    pub detail: String,
    /// One sentence saying what to do when the layer is not active.
    pub fix: Option<String>,
}

fn report(
    layer: &'static str,
    title: &str,
    result: Result<String, (String, String)>,
) -> LayerReport {
    match result {
        Ok(detail) => LayerReport {
            layer,
            title: title.into(),
            active: true,
            detail,
            fix: None,
        },
        Err((detail, fix)) => LayerReport {
            layer,
            title: title.into(),
            active: false,
            detail,
            fix: Some(fix),
        },
    }
}

const USERNS_FIX: &str = "allow unprivileged user namespaces (Ubuntu 24.04: `sysctl kernel.apparmor_restrict_unprivileged_userns=0` or an AppArmor profile for sandcell; other systems: `sysctl user.max_user_namespaces=15000` or `kernel.unprivileged_userns_clone=1`), or run sandcell as root";

pub fn probe() -> Vec<LayerReport> {
    let root = nix::unistd::geteuid().is_root();
    let user_flag = if root { 0 } else { libc::CLONE_NEWUSER };
    let mut layers = Vec::new();

    layers.push(report(
        "user_namespace",
        "identity",
        if root {
            Ok(
                "sandcell runs as root: sessions switch to uid 65534 (no user namespace needed)"
                    .into(),
            )
        } else {
            try_in_child(|| unshare(libc::CLONE_NEWUSER))
                .map(|()| "sessions run in a user namespace mapping your own uid".into())
                .map_err(|e| {
                    (
                        format!("user namespaces are not available: {e}"),
                        USERNS_FIX.into(),
                    )
                })
        },
    ));
    let namespaces = [
        ("mount_namespace", "mount namespace", libc::CLONE_NEWNS),
        ("pid_namespace", "PID namespace", libc::CLONE_NEWPID),
        ("network_namespace", "network namespace", libc::CLONE_NEWNET),
        ("ipc_namespace", "IPC namespace", libc::CLONE_NEWIPC),
        ("uts_namespace", "UTS namespace", libc::CLONE_NEWUTS),
        (
            "cgroup_namespace",
            "cgroup namespace",
            libc::CLONE_NEWCGROUP,
        ),
    ];
    let mut mount_ok = false;
    for (layer, title, flag) in namespaces {
        let result = try_in_child(|| unshare(flag | user_flag));
        if flag == libc::CLONE_NEWNS {
            mount_ok = result.is_ok();
        }
        let detail = match flag {
            libc::CLONE_NEWNET => "only a private loopback interface: no network",
            libc::CLONE_NEWPID => "the session sees only its own processes",
            libc::CLONE_NEWNS => "a private mount table",
            _ => "private to each session",
        };
        layers.push(report(
            layer,
            title,
            result.map(|()| detail.into()).map_err(|e| {
                (
                    format!("cannot be created: {e}"),
                    if root {
                        "use a kernel built with namespace support (CONFIG_NAMESPACES and the per-namespace options)".into()
                    } else {
                        USERNS_FIX.into()
                    },
                )
            }),
        ));
    }
    layers.push(report(
        "filesystem_view",
        "filesystem view",
        if mount_ok {
            Ok("pivot_root into read-only system and Python directories, /mnt/data read-write, private /tmp, /dev and /proc".into())
        } else {
            Err(("needs a mount namespace".into(), USERNS_FIX.into()))
        },
    ));
    layers.push(report(
        "no_new_privs",
        "no_new_privs",
        try_in_child(|| crate::capabilities::set_no_new_privs().map_err(|e| e.to_string()))
            .map(|()| "set before user code runs".into())
            .map_err(|e| (e, "use Linux 3.5 or newer".into())),
    ));
    layers.push(report(
        "capabilities",
        "capabilities",
        Ok(if root {
            "all dropped: the session switches from root to an unprivileged uid, with an empty bounding set".into()
        } else {
            "all dropped, including the bounding and ambient sets".into()
        }),
    ));
    layers.push(report(
        "seccomp",
        "seccomp filter",
        try_in_child(|| {
            crate::capabilities::set_no_new_privs().map_err(|e| e.to_string())?;
            crate::seccomp::install().map_err(|e| e.to_string())
        })
        .map(|()| "denies ptrace, mount, bpf, kexec, keyctl, perf_event_open, module loading, namespace creation, io_uring …".into())
        .map_err(|e| (e, "use a kernel built with CONFIG_SECCOMP_FILTER".into())),
    ));
    layers.push(report(
        "landlock",
        "Landlock",
        match crate::landlock::abi_version() {
            Some(abi) => Ok(format!("ABI {abi}: writes only to /mnt/data, /tmp and /dev/shm")),
            None => Err((
                "this kernel has no Landlock".into(),
                "use Linux 5.13 or newer with CONFIG_SECURITY_LANDLOCK=y and landlock in the `lsm=` boot parameter".into(),
            )),
        },
    ));
    layers.extend(cgroup_layers());
    layers.push(report(
        "rlimits",
        "rlimits",
        Ok("per-file size (RLIMIT_FSIZE), open files, no core dumps".into()),
    ));
    layers.push(report(
        "workdir_quota",
        "working-directory quota",
        Ok("enforced by sandcell: the directory is measured while a cell runs, and the cell is stopped past the quota".into()),
    ));
    layers
}

fn cgroup_layers() -> Vec<LayerReport> {
    let checked = CgroupParent::detect().and_then(|parent| {
        let probe = SessionCgroup::create(
            &parent,
            &format!("probe-{}", std::process::id()),
            &CgroupLimits {
                memory_bytes: 64 << 20,
                processes: 16,
                cpu_cores: 1.0,
            },
        )?;
        probe.remove()?;
        Ok(parent)
    });
    let controllers = [
        ("cgroup_memory", "cgroup memory limit"),
        ("cgroup_pids", "cgroup process limit"),
        ("cgroup_cpu", "cgroup CPU limit"),
    ];
    controllers
        .into_iter()
        .map(|(layer, title)| {
            let result = match &checked {
                Ok(parent) if layer == "cgroup_cpu" && !parent.has_cpu() => Err((
                    "no cpu controller is available".into(),
                    "enable the cpu controller for sandcell's cgroup".into(),
                )),
                Ok(parent) => Ok(parent.describe()),
                Err(e) => Err((
                    e.to_string(),
                    "run sandcell as root, or have an administrator delegate a cgroup to you and name it in SANDCELL_CGROUP (cgroup v2: `mkdir /sys/fs/cgroup/sandcell-$USER && chown -R $USER /sys/fs/cgroup/sandcell-$USER` with memory, pids and cpu enabled in /sys/fs/cgroup/cgroup.subtree_control; cgroup v1: the same under /sys/fs/cgroup/memory, pids and cpu; then SANDCELL_CGROUP=/sandcell-$USER); until then memory is limited with RLIMIT_AS and processes with RLIMIT_NPROC".into(),
                )),
            };
            report(layer, title, result)
        })
        .collect()
}

fn unshare(flags: libc::c_int) -> Result<(), String> {
    // SAFETY: only changes the namespaces of the throwaway child.
    if unsafe { libc::unshare(flags) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().to_string())
    }
}

/// Runs `attempt` in a forked child, so that whatever it changes dies with the child,
/// and returns its verdict through a pipe.
fn try_in_child(attempt: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    use std::io::{Read, Write};
    let (read, write) = nix::unistd::pipe().map_err(|e| e.to_string())?;
    // SAFETY: the child only runs `attempt` (syscalls and small allocations) and exits.
    match unsafe { nix::unistd::fork() }.map_err(|e| e.to_string())? {
        nix::unistd::ForkResult::Child => {
            drop(read);
            let message = match attempt() {
                Ok(()) => String::new(),
                Err(e) => e,
            };
            let mut pipe = std::fs::File::from(write);
            let _ = pipe.write_all(message.as_bytes());
            // SAFETY: leaving the forked child without running the parent's destructors.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(write);
            let mut message = String::new();
            let _ = std::fs::File::from(read).read_to_string(&mut message);
            let _ = nix::sys::wait::waitpid(child, None);
            if message.is_empty() {
                Ok(())
            } else {
                Err(message)
            }
        }
    }
}
