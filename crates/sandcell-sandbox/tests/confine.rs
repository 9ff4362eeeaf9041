//! `isolate` and `confine` for real: forks a keeper that isolates itself, then a session
//! that confines itself, and checks from inside that a handful of layers hold. Runs as
//! root (the session drops to uid 65534) or as an ordinary user (in a user namespace,
//! which the kernel must allow). The full isolation suite runs through a real session in
//! the `sandcell` crate; this one only proves the two drivers work from a plain process.
//!
//! A plain program (`harness = false`): forking from libtest's threads is unsafe.

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Gid, Uid};
use sandcell_sandbox::{Identity, RlimitSpec, SandboxSpec};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

const MOUNT_POINT: &str = "/mnt/data";
const HOSTNAME: &str = "sandcell-test";

fn main() -> ExitCode {
    match run() {
        Ok((passed, failed)) => {
            println!("{passed} passed, {failed} failed");
            if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(message) => {
            println!("FAIL setup: {message}");
            println!("0 passed, 1 failed");
            ExitCode::FAILURE
        }
    }
}

/// Forks the keeper, prints what the session reports through a pipe, then checks from
/// the host that the session's write landed in the real working directory.
fn run() -> Result<(usize, usize), String> {
    let workdir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let spec = spec(workdir.path());
    if let Identity::DropFromRoot { uid, gid } = spec.identity {
        nix::unistd::chown(
            workdir.path(),
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
        )
        .map_err(|e| format!("chown of the working directory: {e}"))?;
    }
    let (read, write) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: this program has a single thread.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(read);
            keeper(&spec, File::from(write))
        }
        ForkResult::Parent { child } => {
            drop(write);
            let (mut passed, mut failed) = (0, 0);
            for line in BufReader::new(File::from(read)).lines() {
                let line = line.map_err(|e| format!("reading the session's report: {e}"))?;
                println!("{line}");
                if line.starts_with("PASS") {
                    passed += 1;
                } else {
                    failed += 1;
                }
            }
            let status = waitpid(child, None).map_err(|e| format!("waitpid: {e}"))?;
            if status != WaitStatus::Exited(child, 0) {
                println!("FAIL keeper: {status:?}");
                failed += 1;
            }
            let written = std::fs::read_to_string(workdir.path().join("hello.txt"));
            let ok = written.as_deref().is_ok_and(|s| s == "from inside");
            println!(
                "{} the session's file is in the host's working directory",
                verdict(ok)
            );
            if ok {
                passed += 1;
            } else {
                failed += 1;
            }
            Ok((passed, failed))
        }
    }
}

fn spec(workdir: &Path) -> SandboxSpec {
    let identity = Identity::for_current_process();
    SandboxSpec {
        workdir: workdir.to_path_buf(),
        workdir_device: None,
        mount_point: PathBuf::from(MOUNT_POINT),
        read_only_paths: ["/usr", "/lib", "/lib64", "/bin", "/sbin"]
            .iter()
            .map(PathBuf::from)
            .collect(),
        etc_files: Vec::new(),
        identity,
        cgroup_procs: Vec::new(),
        limits: RlimitSpec {
            file_size_bytes: 16 << 20,
            open_files: 256,
            tmp_size_bytes: 16 << 20,
            address_space_bytes: None,
            processes: None,
        },
        hostname: HOSTNAME.into(),
        landlock: sandcell_sandbox::landlock_supported(),
    }
}

/// The keeper: isolate, fork the session (PID 1 of the new PID namespace), wait for it.
fn keeper(spec: &SandboxSpec, mut report: File) -> ! {
    if let Err(e) = sandcell_sandbox::isolate(spec) {
        let _ = writeln!(report, "FAIL isolate: {e}");
        exit(1);
    }
    // SAFETY: the keeper has a single thread.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => session(spec, report),
        Ok(ForkResult::Parent { child }) => {
            drop(report);
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => exit(code),
                _ => exit(1),
            }
        }
        Err(e) => {
            let _ = writeln!(report, "FAIL fork of the session: {e}");
            exit(1)
        }
    }
}

/// The session: confine, then check from inside. Writes one line per check.
fn session(spec: &SandboxSpec, mut report: File) -> ! {
    if let Err(e) = sandcell_sandbox::confine(spec) {
        let _ = writeln!(report, "FAIL confine: {e}");
        exit(1);
    }
    let (uid, gid) = match spec.identity {
        Identity::DropFromRoot { uid, gid } | Identity::UserNamespace { uid, gid } => (uid, gid),
    };
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
            .unwrap_or("(missing)")
            .to_string()
    };
    let processes: Vec<String> = std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
                .collect()
        })
        .unwrap_or_default();
    let outside = TcpStream::connect_timeout(&([1, 1, 1, 1], 53).into(), Duration::from_secs(2));
    let hostname = nix::unistd::gethostname().unwrap_or_default();
    let foreign_mounts = foreign_mounts(spec);
    let unshare = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS);

    let mut checks: Vec<(bool, &str, String)> = vec![
        (
            nix::unistd::getuid().as_raw() == uid && nix::unistd::getgid().as_raw() == gid,
            "uid and gid are the sandbox identity",
            format!("{} {}", nix::unistd::getuid(), nix::unistd::getgid()),
        ),
        (
            ["CapEff", "CapPrm", "CapBnd", "CapAmb"]
                .iter()
                .all(|name| field(name).bytes().all(|b| b == b'0')),
            "no capabilities",
            format!("CapEff {} CapBnd {}", field("CapEff"), field("CapBnd")),
        ),
        (
            field("NoNewPrivs") == "1",
            "no_new_privs",
            field("NoNewPrivs"),
        ),
        (
            field("Seccomp") == "2",
            "seccomp filter mode",
            field("Seccomp"),
        ),
        (
            std::process::id() == 1 && processes == ["1"],
            "PID 1, alone in /proc",
            format!("{processes:?}"),
        ),
        (outside.is_err(), "no route outside", format!("{outside:?}")),
        (
            foreign_mounts.is_empty(),
            "mountinfo names no host path beyond the spec's",
            format!("{foreign_mounts:?}"),
        ),
        (
            loopback().is_ok(),
            "loopback works",
            format!("{:?}", loopback()),
        ),
        (
            hostname.to_str() == Some(HOSTNAME),
            "host name",
            format!("{hostname:?}"),
        ),
        (
            std::fs::read("/etc/shadow").is_err(),
            "/etc/shadow unreadable",
            String::new(),
        ),
        (
            File::create("/usr/sandcell-test").is_err(),
            "/usr read-only",
            String::new(),
        ),
        (
            std::fs::write("/tmp/x", "x").is_ok(),
            "/tmp writable",
            String::new(),
        ),
        (
            std::fs::write(Path::new(MOUNT_POINT).join("hello.txt"), "from inside").is_ok(),
            "working directory writable",
            String::new(),
        ),
        (
            unshare == Err(nix::errno::Errno::EPERM),
            "unshare denied with EPERM",
            format!("{unshare:?}"),
        ),
    ];
    checks.extend(seccomp_checks());
    for (ok, name, detail) in checks {
        let _ = writeln!(report, "{} {name} ({detail})", verdict(ok));
    }
    exit(0)
}

/// The lines of the session's mountinfo whose root (the directory of its filesystem the
/// mount shows) or mount point is a host path the spec does not expose. A bind mount's
/// root is the host path of what it binds, and the kernel has no way to hide it: a read-only
/// path shows itself (the same path is visible inside anyway), and `/mnt/data` shows the
/// host's working directory, which is therefore allowed here too.
fn foreign_mounts(spec: &SandboxSpec) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let exposed = |path: &Path| {
        spec.read_only_paths.iter().any(|p| path.starts_with(p))
            || spec.etc_files.iter().any(|p| path == p)
    };
    table
        .lines()
        .filter(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let (Some(root), Some(mount_point)) = (fields.get(3), fields.get(4)) else {
                return true;
            };
            let (root, mount_point) = (Path::new(root), Path::new(mount_point));
            let own_root = root == Path::new("/")
                || root == mount_point
                || (mount_point == Path::new(MOUNT_POINT) && root == spec.workdir)
                // The bound device nodes show their name in the host's devtmpfs.
                || (mount_point.parent() == Some(Path::new("/dev"))
                    && root.parent() == Some(Path::new("/")));
            let own_mount_point = ["/", "/tmp", "/dev", "/etc", "/proc", MOUNT_POINT]
                .iter()
                .any(|p| mount_point == Path::new(p))
                || mount_point.starts_with("/dev")
                || exposed(mount_point);
            !(own_root && own_mount_point)
        })
        .map(str::to_string)
        .collect()
}

/// The allow-list, seen from the confined session through the real kernel: refused
/// socket families, an x32 number, namespace flags on clone, clone3, calls outside the
/// list. (Every number of the table is probed by the unit tests of `seccomp.rs`.)
fn seccomp_checks() -> Vec<(bool, &'static str, String)> {
    let socket = |family: libc::c_int, kind: libc::c_int, protocol: libc::c_int| {
        // SAFETY: socket(2) with plain integers; the descriptor is closed at once.
        let fd = unsafe { libc::socket(family, kind | libc::SOCK_CLOEXEC, protocol) };
        if fd >= 0 {
            // SAFETY: we own fd.
            unsafe { libc::close(fd) };
            return Ok(());
        }
        Err(nix::errno::Errno::last())
    };
    let refused = |result: Result<(), nix::errno::Errno>| result == Err(nix::errno::Errno::EPERM);
    // The errno of a raw call with one argument, None if it succeeded.
    let errno_of = |nr: libc::c_long, arg0: libc::c_long| {
        // SAFETY: each call probed here is refused by the filter (or, for getpid,
        // harmless); a clone that got through is handled below.
        let result = unsafe { libc::syscall(nr, arg0, 0, 0, 0, 0, 0) };
        if result == 0 && nr == libc::SYS_clone {
            exit(0); // a child the filter let through: leave at once
        }
        (result == -1).then(nix::errno::Errno::last)
    };
    let (sock_stream, sock_raw) = (libc::SOCK_STREAM, libc::SOCK_RAW);
    let vsock = socket(libc::AF_VSOCK, sock_stream, 0);
    let packet = socket(libc::AF_PACKET, sock_raw, 0);
    let netlink_audit = socket(libc::AF_NETLINK, sock_raw, libc::NETLINK_AUDIT);
    let netlink_uevent = socket(libc::AF_NETLINK, sock_raw, libc::NETLINK_KOBJECT_UEVENT);
    let netlink_route = socket(libc::AF_NETLINK, sock_raw, libc::NETLINK_ROUTE);
    let inet6 = socket(libc::AF_INET6, sock_stream, 0);
    let new_user = errno_of(
        libc::SYS_clone,
        (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_long,
    );
    let new_net = errno_of(
        libc::SYS_clone,
        (libc::CLONE_NEWNET | libc::SIGCHLD) as libc::c_long,
    );
    let clone3 = errno_of(libc::SYS_clone3, 0);
    // Newer twins of refused calls, which a deny-list would have let through.
    let (quotactl_fd, open_tree_attr) = (errno_of(libc::SYS_quotactl_fd, -1), errno_of(467, -1));
    let eperm = Some(nix::errno::Errno::EPERM);
    let mut checks = vec![
        (refused(vsock), "AF_VSOCK refused", format!("{vsock:?}")),
        (refused(packet), "AF_PACKET refused", format!("{packet:?}")),
        (
            refused(netlink_audit) && refused(netlink_uevent),
            "AF_NETLINK refused beyond route queries",
            format!("audit {netlink_audit:?}, uevent {netlink_uevent:?}"),
        ),
        (
            netlink_route.is_ok() && inet6.is_ok(),
            "AF_NETLINK route queries and AF_INET6 allowed",
            format!("route {netlink_route:?}, inet6 {inet6:?}"),
        ),
        (
            new_user == eperm && new_net == eperm,
            "clone with namespace flags refused",
            format!("NEWUSER {new_user:?}, NEWNET {new_net:?}"),
        ),
        (
            clone3 == Some(nix::errno::Errno::ENOSYS),
            "clone3 answers ENOSYS",
            format!("{clone3:?}"),
        ),
        (
            quotactl_fd == eperm && open_tree_attr == eperm,
            "calls outside the list refused",
            format!("quotactl_fd {quotactl_fd:?}, open_tree_attr {open_tree_attr:?}"),
        ),
    ];
    #[cfg(target_arch = "x86_64")]
    {
        const X32_SYSCALL_BIT: libc::c_long = 0x4000_0000;
        let x32_getpid = errno_of(X32_SYSCALL_BIT | libc::SYS_getpid, 0);
        checks.push((
            x32_getpid == eperm,
            "an x32 call refused",
            format!("{x32_getpid:?}"),
        ));
    }
    checks
}

fn loopback() -> std::io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let _client = TcpStream::connect(listener.local_addr()?)?;
    listener.accept().map(drop)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

/// Leaves a forked process without running the destructors it shares with its parent
/// (the temporary directory's, above all).
fn exit(code: i32) -> ! {
    // SAFETY: _exit ends the process at once; nothing is used afterwards.
    unsafe { libc::_exit(code) }
}
