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
    let unshare = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS);

    let checks: Vec<(bool, &str, String)> = vec![
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
    for (ok, name, detail) in checks {
        let _ = writeln!(report, "{} {name} ({detail})", verdict(ok));
    }
    exit(0)
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
