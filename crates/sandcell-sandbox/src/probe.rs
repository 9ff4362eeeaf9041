//! What this machine supports, for `sandcell doctor`. Each layer is tried for real where
//! trying is harmless: in a forked child that dies with whatever it changed, or (for
//! cgroups) by creating and removing a test cgroup.

use crate::cgroup::{CgroupLimits, CgroupParent, SessionCgroup};
use crate::error::{failed, SandboxError};
use crate::spec::{Identity, RlimitSpec};
use nix::sched::CloneFlags;
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

/// A layer's outcome: what is active, or why not and what to do.
type Outcome = Result<String, (String, String)>;

fn report(layer: &'static str, title: &str, outcome: Outcome) -> LayerReport {
    let (active, detail, fix) = match outcome {
        Ok(detail) => (true, detail, None),
        Err((detail, fix)) => (false, detail, Some(fix)),
    };
    LayerReport {
        layer,
        title: title.into(),
        active,
        detail,
        fix,
    }
}

const USERNS_FIX: &str = "Allow unprivileged user namespaces (Ubuntu 24.04: `sysctl kernel.apparmor_restrict_unprivileged_userns=0` or an AppArmor profile for sandcell; elsewhere: `sysctl user.max_user_namespaces=15000` or `kernel.unprivileged_userns_clone=1`), or run sandcell as root.";
const KERNEL_NAMESPACES_FIX: &str =
    "Use a kernel built with CONFIG_NAMESPACES and the per-namespace options.";

pub fn probe() -> Vec<LayerReport> {
    let root = nix::unistd::geteuid().is_root();
    let mut layers = vec![identity_layer(root), session_uids()];
    let mount_namespace = namespace_layers(root, &mut layers);
    layers.push(report(
        "filesystem_view",
        "filesystem view",
        if mount_namespace {
            Ok("pivot_root into read-only system and Python directories; /mnt/data read-write; private /tmp, /dev and /proc; generated /etc".into())
        } else {
            Err(("needs a mount namespace".into(), namespace_fix(root).into()))
        },
    ));
    layers.push(report(
        "no_new_privs",
        "no_new_privs",
        try_in_child(crate::capabilities::set_no_new_privs)
            .map(|()| "set before user code runs: exec never gains privileges".into())
            .map_err(|e| (e, "Use Linux 3.5 or newer.".into())),
    ));
    layers.push(capabilities_layer(root));
    layers.push(report(
        "seccomp",
        "seccomp filter",
        try_in_child(|| {
            crate::capabilities::set_no_new_privs()?;
            crate::seccomp::install()
        })
        .map(|()| "allow-list of the calls a Python data session needs, everything else EPERM: sockets only AF_UNIX, AF_INET, AF_INET6 (and netlink route queries), clone without namespace flags, listed ioctl requests, x32 calls refused".into())
        .map_err(|e| (e, "Use a kernel built with CONFIG_SECCOMP_FILTER.".into())),
    ));
    layers.push(report(
        "landlock",
        "Landlock",
        match crate::landlock::abi_version() {
            Some(abi) => Ok(format!("ABI {abi}: writes only beneath /mnt/data, /tmp and /dev/shm; signals and abstract sockets scoped (ABI 6+)")),
            None => Err((
                "this kernel has no Landlock".into(),
                "Use Linux 5.13 or newer with CONFIG_SECURITY_LANDLOCK=y and landlock in the `lsm=` boot parameter.".into(),
            )),
        },
    ));
    layers.extend(cgroup_layers());
    layers.push(report(
        "rlimits",
        "rlimits",
        try_in_child(|| {
            crate::rlimits::apply(&RlimitSpec {
                file_size_bytes: 1 << 30,
                open_files: 1024,
                tmp_size_bytes: 0,
                address_space_bytes: None,
                processes: None,
            })
        })
        .map(|()| "file size (RLIMIT_FSIZE), open files, no core dumps; address space and process count when no cgroup enforces them".into())
        .map_err(|e| (e, "Check the security modules (SELinux, AppArmor) that confine sandcell: setrlimit(2) is refused.".into())),
    ));
    layers.push(report(
        "workdir_quota",
        "working-directory quota",
        disk_quota_outcome(),
    ));
    layers
}

/// Makes, mounts and removes a small disk, as a session's own directory gets one.
fn disk_quota_outcome() -> Outcome {
    let tried = crate::disk::check_available().and_then(|()| {
        let dir = std::env::temp_dir().join(format!("sandcell-probe-{}", std::process::id()));
        let image = dir.with_extension("disk");
        std::fs::create_dir(&dir).map_err(|cause| crate::disk::DiskError::Io {
            step: "create",
            path: dir.clone(),
            cause,
        })?;
        let made = crate::disk::create_image(&image, crate::disk::MIN_SIZE_BYTES)
            .and_then(|()| crate::disk::mount_image(&image, &dir))
            .and_then(|()| crate::disk::unmount(&dir));
        let _ = std::fs::remove_file(&image);
        let _ = std::fs::remove_dir(&dir);
        made
    });
    match tried {
        Ok(()) => Ok(format!(
            "enforced by the kernel: a session's own working directory is a filesystem of its own (an ext4 image on a loop device) of the quota's size, with one file or directory per {} KiB; a write past either fails with ENOSPC, between cells too, and the host pays at most the quota. A directory given with --workdir is measured instead",
            crate::disk::BYTES_PER_INODE / 1024
        )),
        Err(why) => Err((
            format!("{why}; the quota is measured by sandcell while a cell runs instead, which does not see writes between cells (a background thread or process), stops counting after 50,000 entries, and counts no inodes (empty files and directories take the host's inodes without limit)"),
            "Run sandcell as root on a kernel with loop devices (`modprobe loop`), with e2fsprogs (mkfs.ext4) installed.".into(),
        )),
    }
}

fn namespace_fix(root: bool) -> &'static str {
    if root {
        KERNEL_NAMESPACES_FIX
    } else {
        USERNS_FIX
    }
}

fn identity_layer(root: bool) -> LayerReport {
    let outcome = if root {
        Ok("sandcell runs as root: sessions switch to an unprivileged uid (no user namespace needed)".into())
    } else {
        try_in_child(|| unshare(CloneFlags::CLONE_NEWUSER))
            .map(|()| "sessions run in a user namespace mapping your own uid".into())
            .map_err(|e| {
                (
                    format!("user namespaces are not available: {e}"),
                    USERNS_FIX.into(),
                )
            })
    };
    report("user_namespace", "identity", outcome)
}

/// What sharing one uid costs sessions.
const SHARED_UID_COST: &str = "they share every per-user kernel limit (one session holding all its user's inotify instances (fs.inotify.max_user_instances) makes inotify_init1 fail in the others; RLIMIT_NPROC, message queues and keys are counted together) and own each other's files";

/// Whether each session runs as a uid of its own, from which range, or what it costs
/// that they do not (`doctor` lists it among the layers, `setup` says it).
pub fn session_uids() -> LayerReport {
    let outcome = if nix::unistd::geteuid().is_root() {
        match crate::subids::root_range() {
            Ok(range) if range.configured => Ok(format!(
                "each live session runs as a uid and gid of its own, from root's subordinate range in /etc/subuid and /etc/subgid ({})",
                range.describe()
            )),
            Ok(range) => Ok(format!(
                "each live session runs as a uid and gid of its own, from the default range ({}), which no user, group or subordinate range of this machine has; reserve it so that `useradd` never hands it out: `usermod --add-subuids {first}-{last} --add-subgids {first}-{last} root`",
                range.describe(),
                first = range.first_uid,
                last = range.first_uid + (range.count - 1),
            )),
            Err(why) => Err((
                format!("{why}; sessions all run as uid 65534, so {SHARED_UID_COST}"),
                "Give root a subordinate range of ids no user has: `usermod --add-subuids FIRST-LAST --add-subgids FIRST-LAST root`.".into(),
            )),
        }
    } else {
        Err((
            // Ids from the operator's subordinate range (newuidmap) would not help: the kernel
            // charges each user namespace's per-user counts to the user who created it too.
            format!("sessions all run as your own uid, mapped in a user namespace, so {SHARED_UID_COST}; without root this cannot change, as the kernel counts every user namespace you create against your own uid whatever ids it maps"),
            "Run sandcell as root for a uid per session.".into(),
        ))
    };
    report("session_uids", "a uid per session", outcome)
}

/// Appends one layer per namespace; returns whether a mount namespace can be created.
fn namespace_layers(root: bool, layers: &mut Vec<LayerReport>) -> bool {
    // Without root, every namespace is created inside a new user namespace, as sessions do.
    let user = if root {
        CloneFlags::empty()
    } else {
        CloneFlags::CLONE_NEWUSER
    };
    let namespaces = [
        (
            "mount_namespace",
            "mount namespace",
            CloneFlags::CLONE_NEWNS,
            "a private mount table",
        ),
        (
            "pid_namespace",
            "PID namespace",
            CloneFlags::CLONE_NEWPID,
            "the session sees only its own processes",
        ),
        (
            "network_namespace",
            "network namespace",
            CloneFlags::CLONE_NEWNET,
            "only a private loopback interface: no network",
        ),
        (
            "ipc_namespace",
            "IPC namespace",
            CloneFlags::CLONE_NEWIPC,
            "private System V IPC and POSIX message queues",
        ),
        (
            "uts_namespace",
            "UTS namespace",
            CloneFlags::CLONE_NEWUTS,
            "a host name of its own",
        ),
        (
            "cgroup_namespace",
            "cgroup namespace",
            CloneFlags::CLONE_NEWCGROUP,
            "the session sees its own cgroup as the root",
        ),
    ];
    let mut mount_namespace = false;
    for (layer, title, flag, detail) in namespaces {
        let outcome = try_in_child(|| unshare(flag | user));
        if flag == CloneFlags::CLONE_NEWNS {
            mount_namespace = outcome.is_ok();
        }
        let outcome = outcome.map(|()| detail.into()).map_err(|e| {
            (
                format!("cannot be created: {e}"),
                namespace_fix(root).into(),
            )
        });
        layers.push(report(layer, title, outcome));
    }
    mount_namespace
}

/// Drops every capability in a child exactly as a session does, and lets the step's
/// own check (reading `/proc/self/status` back) decide.
fn capabilities_layer(root: bool) -> LayerReport {
    let outcome = try_in_child(|| {
        let identity = if root {
            Identity::DropFromRoot {
                uid: 65534,
                gid: 65534,
            }
        } else {
            let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
            unshare(CloneFlags::CLONE_NEWUSER)?;
            crate::idmap::map_self(uid.as_raw(), gid.as_raw())?;
            Identity::UserNamespace {
                uid: uid.as_raw(),
                gid: gid.as_raw(),
            }
        };
        crate::capabilities::drop_all(&identity)
    })
    .map(|()| {
        if root {
            "all dropped: sessions switch from root to their unprivileged uid with empty bounding and ambient sets".into()
        } else {
            "all dropped, including the bounding and ambient sets".into()
        }
    })
    .map_err(|e| (e, namespace_fix(root).into()));
    report("capabilities", "capabilities", outcome)
}

fn cgroup_layers() -> Vec<LayerReport> {
    let checked = CgroupParent::detect().and_then(|parent| {
        let test = SessionCgroup::create(
            &parent,
            &format!("probe-{}", std::process::id()),
            &CgroupLimits {
                memory_bytes: 64 << 20,
                processes: 16,
                cpu_cores: 1.0,
            },
        )?;
        test.remove()?;
        Ok(parent)
    });
    // (layer, title, what happens without it)
    let controllers = [
        (
            "cgroup_memory",
            "cgroup memory limit",
            "memory is limited with RLIMIT_AS instead",
        ),
        (
            "cgroup_pids",
            "cgroup process limit",
            "processes are limited with RLIMIT_NPROC instead",
        ),
        ("cgroup_cpu", "cgroup CPU limit", "CPU time is not limited"),
    ];
    controllers
        .into_iter()
        .map(|(layer, title, fallback)| {
            let outcome = match &checked {
                Ok(parent) if layer == "cgroup_cpu" && !parent.has_cpu() => Err((
                    format!("no cpu controller is available; {fallback}"),
                    "Enable the cpu controller for sandcell's cgroup.".into(),
                )),
                Ok(parent) => Ok(parent.describe()),
                Err(SandboxError::CgroupUnavailable { why, fix }) => {
                    Err((format!("{why}; {fallback}"), sentence(fix)))
                }
                Err(e) => Err((
                    format!("{e}; {fallback}"),
                    "Run sandcell as root, or delegate a cgroup and name it in SANDCELL_CGROUP."
                        .into(),
                )),
            };
            report(layer, title, outcome)
        })
        .collect()
}

fn unshare(flags: CloneFlags) -> Result<(), SandboxError> {
    nix::sched::unshare(flags).map_err(failed("create the namespace (unshare)"))
}

/// Runs `attempt` in a forked child, so that whatever it changes dies with the child.
/// The child's exit status is the verdict; on failure it sends its message through a
/// pipe.
fn try_in_child(attempt: impl FnOnce() -> Result<(), SandboxError>) -> Result<(), String> {
    use nix::sys::wait::{waitpid, WaitStatus};
    use std::io::{Read, Write};
    let (read, write) = nix::unistd::pipe().map_err(|e| e.to_string())?;
    // SAFETY: the child only runs `attempt` (system calls and small allocations) and
    // leaves with _exit.
    match unsafe { nix::unistd::fork() }.map_err(|e| e.to_string())? {
        nix::unistd::ForkResult::Child => {
            drop(read);
            // A panic must not unwind into the caller's code in the child process.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(attempt))
                .unwrap_or_else(|_| {
                    Err(failed("run the test")(std::io::Error::other("it panicked")))
                });
            let code = match outcome {
                Ok(()) => 0,
                Err(e) => {
                    let _ = std::fs::File::from(write).write_all(e.to_string().as_bytes());
                    1
                }
            };
            // SAFETY: leaving the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(write);
            let mut message = String::new();
            let _ = std::fs::File::from(read).read_to_string(&mut message);
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, 0)) => Ok(()),
                Ok(_) if !message.is_empty() => Err(message),
                Ok(status) => Err(format!("the test process ended unexpectedly ({status:?})")),
                Err(e) => Err(format!("could not wait for the test process: {e}")),
            }
        }
    }
}

/// `fix` as a sentence of its own: capitalised, with a full stop.
fn sentence(fix: &str) -> String {
    let mut chars = fix.chars();
    let first = chars.next().map(|c| c.to_uppercase().collect::<String>());
    format!("{}{}.", first.unwrap_or_default(), chars.as_str())
}
