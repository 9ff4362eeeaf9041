//! The sandbox, attacked from inside real sessions. Every attempt must fail inside the
//! sandbox while the host and other sessions carry on. CI runs this file as root and
//! again as an unprivileged user.

mod common;

use common::{first_text, printed_json, run_json, sandcell};
use std::net::TcpListener;
use std::time::Duration;

#[test]
fn no_network_beyond_the_sandboxs_own_loopback() {
    // A server on the host's loopback: reachable from the host, not from the sandbox.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let code = format!(
        r#"
import json, socket
def attempt(host, port):
    try:
        socket.create_connection((host, port), timeout=3).close()
        return "connected"
    except OSError as e:
        return type(e).__name__
def resolve(name):
    try:
        socket.getaddrinfo(name, 80)
        return "resolved"
    except OSError as e:
        return type(e).__name__
server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen()
print(json.dumps({{
    "host_loopback": attempt("127.0.0.1", {port}),
    "own_loopback": attempt("127.0.0.1", server.getsockname()[1]),
    "dns": resolve("example.com"),
    "interfaces": [name for _, name in socket.if_nameindex()],
    "routes": open("/proc/net/route").read().splitlines()[1:],
}}))
"#
    );
    let (cells, output) = run_json(&["-c", &code]);
    assert!(output.status.success(), "{output:?}");
    let seen = printed_json(&cells[0]);
    assert_ne!(seen["host_loopback"], "connected", "{seen}");
    assert_eq!(
        seen["own_loopback"], "connected",
        "local servers work: {seen}"
    );
    assert_ne!(seen["dns"], "resolved", "{seen}");
    assert_eq!(seen["interfaces"], serde_json::json!(["lo"]));
    assert_eq!(
        seen["routes"],
        serde_json::json!([]),
        "no route leaves the sandbox"
    );
    // The host's server is untouched and still serves the host.
    listener.set_nonblocking(true).unwrap();
    assert!(
        listener.accept().is_err(),
        "nothing reached the host's server"
    );
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("the host still connects");
}

#[test]
fn the_hosts_files_are_out_of_sight() {
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("secret.txt");
    std::fs::write(&secret, "host secret").unwrap();
    // A file in the user's home directory (which also holds sandcell's own data).
    let home = std::path::PathBuf::from(std::env::var("HOME").expect("HOME is set"));
    let home_secret = home.join(format!(".sandcell-test-secret-{}", std::process::id()));
    std::fs::write(&home_secret, "home secret").unwrap();
    let code = format!(
        r#"
import json, os
def readable(path):
    try:
        with open(path, "rb") as f:
            f.read(1)
        return True
    except OSError:
        return False
print(json.dumps({{
    "shadow": readable("/etc/shadow"),
    "host_secret": readable({secret:?}),
    "ssh": readable("/root/.ssh/authorized_keys"),
    "home_secret": readable({home_secret:?}),
    "root_dir": sorted(os.listdir("/")),
    "etc": sorted(os.listdir("/etc")),
    "sys": os.path.exists("/sys/class"),
}}))
"#,
        secret = secret.display().to_string(),
        home_secret = home_secret.display().to_string(),
    );
    let (cells, output) = run_json(&["-c", &code]);
    std::fs::remove_file(&home_secret).unwrap();
    assert!(output.status.success(), "{output:?}");
    let seen = printed_json(&cells[0]);
    assert_eq!(seen["shadow"], false, "{seen}");
    assert_eq!(seen["host_secret"], false, "{seen}");
    assert_eq!(seen["ssh"], false, "{seen}");
    assert_eq!(seen["home_secret"], false, "{seen}");
    assert_eq!(seen["sys"], false, "{seen}");
    let etc: Vec<&str> = seen["etc"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(!etc.contains(&"shadow") && !etc.contains(&"ssh"), "{etc:?}");
}

#[test]
fn writes_outside_mnt_data_and_tmp_fail() {
    let workdir = tempfile::tempdir().unwrap();
    let code = r#"
import json, os
def writable(path):
    try:
        with open(path, "w") as f:
            f.write("x")
        return True
    except OSError:
        return False
print(json.dumps({p: writable(p) for p in ["/mnt/data/ok.txt", "/tmp/ok.txt", "/dev/shm/ok", "/usr/evil", "/etc/evil", "/evil", "/proc/evil", "/mnt/evil", "/dev/evil"]}))
"#;
    let (cells, output) = run_json(&["--workdir", workdir.path().to_str().unwrap(), "-c", code]);
    assert!(output.status.success(), "{output:?}");
    let seen = printed_json(&cells[0]);
    for allowed in ["/mnt/data/ok.txt", "/tmp/ok.txt", "/dev/shm/ok"] {
        assert_eq!(seen[allowed], true, "{allowed}: {seen}");
    }
    for denied in [
        "/usr/evil",
        "/etc/evil",
        "/evil",
        "/proc/evil",
        "/mnt/evil",
        "/dev/evil",
    ] {
        assert_eq!(seen[denied], false, "{denied}: {seen}");
    }
    assert!(workdir.path().join("ok.txt").exists());
    assert!(!std::path::Path::new("/usr/evil").exists());
}

#[test]
fn privileges_are_gone() {
    let code = r#"
import ctypes, errno, json, os
libc = ctypes.CDLL(None, use_errno=True)
def denied(call, *args):
    ctypes.set_errno(0)
    result = call(*args)
    return result == -1 and ctypes.get_errno() in (errno.EPERM, errno.EACCES, errno.ENOSYS)
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
print(json.dumps({
    "uid": os.getuid(),
    "cap_eff": status["CapEff"].strip(),
    "cap_bnd": status["CapBnd"].strip(),
    "no_new_privs": status["NoNewPrivs"].strip(),
    "seccomp": status["Seccomp"].strip(),
    "ptrace": denied(libc.ptrace, 0, 0, None, None),
    "unshare_user": denied(libc.unshare, 0x10000000),
    "unshare_net": denied(libc.unshare, 0x40000000),
    "mount": denied(libc.mount, b"none", b"/tmp", b"tmpfs", 0, None),
    "bpf": denied(libc.syscall, 321, 0, None, 0),
    "keyctl": denied(libc.syscall, 250, 0, 0, 0, 0, 0),
    "perf_event_open": denied(libc.syscall, 298, None, 0, -1, -1, 0),
    "kexec_load": denied(libc.syscall, 246, 0, 0, None, 0),
    "init_module": denied(libc.syscall, 175, None, 0, b""),
    "pidfd_getfd": denied(libc.syscall, 438, 0, 0, 0),
    "setuid_root": libc.setuid(0) == -1 and os.getuid() != 0,
}))
"#;
    let (cells, output) = run_json(&["-c", code]);
    assert!(output.status.success(), "{output:?}");
    let seen = printed_json(&cells[0]);
    assert_ne!(seen["uid"], 0, "user code never runs as root: {seen}");
    assert_eq!(seen["cap_eff"], "0000000000000000", "{seen}");
    assert_eq!(seen["cap_bnd"], "0000000000000000", "{seen}");
    assert_eq!(seen["no_new_privs"], "1", "{seen}");
    assert_eq!(
        seen["seccomp"], "2",
        "a seccomp filter is installed: {seen}"
    );
    for call in [
        "ptrace",
        "unshare_user",
        "unshare_net",
        "mount",
        "bpf",
        "keyctl",
        "perf_event_open",
        "kexec_load",
        "init_module",
        "pidfd_getfd",
        "setuid_root",
    ] {
        assert_eq!(seen[call], true, "{call} must be denied: {seen}");
    }
}

#[test]
fn sessions_cannot_see_each_others_files_or_processes() {
    let workdir_a = tempfile::tempdir().unwrap();
    // Session A keeps running with a marker file in its working directory.
    let mut a = sandcell()
        .args(["run", "--json", "--workdir"])
        .arg(workdir_a.path())
        .args([
            "-c",
            "open('/mnt/data/marker-a', 'w').write('a')\nimport time\nprint('ready', flush=True)\ntime.sleep(30)",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let marker = workdir_a.path().join("marker-a");
    for _ in 0..300 {
        if marker.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(marker.exists(), "session A started");
    let code = format!(
        r#"
import json, os
pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
cmdlines = [open(f"/proc/{{p}}/cmdline", "rb").read().decode(errors="replace") for p in pids]
print(json.dumps({{
    "pids": pids,
    "sees_a_marker": os.path.exists({marker:?}) or os.path.exists("/mnt/data/marker-a"),
    "sleeping_processes": [c for c in cmdlines if "sleep" in c],
}}))
"#,
        marker = marker.display().to_string()
    );
    let (cells, output) = run_json(&["-c", &code]);
    let _ = a.kill();
    let _ = a.wait();
    assert!(output.status.success(), "{output:?}");
    let seen = printed_json(&cells[0]);
    assert_eq!(
        seen["pids"],
        serde_json::json!([1, 2]),
        "only its init and itself: {seen}"
    );
    assert_eq!(seen["sees_a_marker"], false, "{seen}");
    assert_eq!(seen["sleeping_processes"], serde_json::json!([]), "{seen}");
}

#[test]
fn the_memory_limit_kills_the_session_not_the_host() {
    let (cells, output) = run_json(&[
        "--memory",
        "256",
        "-c",
        "hog = b'x' * (1 << 30)",
        "-c",
        "'alive after ' + str(1 + 1)",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let status = cells[0]["status"].as_str().unwrap();
    assert!(
        status == "crashed" || cells[0]["error"]["ename"] == "MemoryError",
        "{}",
        cells[0]
    );
    if status == "crashed" {
        assert!(cells[0]["error"]["evalue"]
            .as_str()
            .unwrap()
            .contains("out of memory"));
    }
    assert_eq!(first_text(&cells[1]), "'alive after 2'");
}

#[test]
fn a_fork_bomb_hits_the_process_limit() {
    let code = r#"
import os, time
children = []
try:
    for _ in range(2000):
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        children.append(pid)
    outcome = "unlimited"
except OSError as e:
    outcome = type(e).__name__
for pid in children:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
(outcome, len(children))
"#;
    let (cells, output) = run_json(&[
        "--max-processes",
        "64",
        "-c",
        code,
        "-c",
        "'still answering'",
    ]);
    assert!(output.status.success(), "{output:?}");
    let text = first_text(&cells[0]);
    assert!(
        text.starts_with("('BlockingIOError'"),
        "forks stop at the limit: {text}"
    );
    let forked: usize = text
        .trim_end_matches(')')
        .rsplit(", ")
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(forked < 64, "{text}");
    assert_eq!(first_text(&cells[1]), "'still answering'");
}

#[test]
fn filling_the_disk_stops_at_the_limits() {
    let workdir = tempfile::tempdir().unwrap();
    let big_file = r#"
try:
    with open("big.bin", "wb") as f:
        for _ in range(40):
            f.write(b"\0" * (1 << 20))
    outcome = "wrote 40 MiB"
except OSError as e:
    outcome = type(e).__name__ + ": " + str(e.errno)
outcome
"#;
    let many_files = r#"
import time
for i in range(200):
    with open(f"part{i}.bin", "wb") as f:
        f.write(b"\1" * (2 << 20))
    time.sleep(0.05)
"#;
    let tmp = r#"
try:
    with open("/tmp/fill.bin", "wb") as f:
        for _ in range(2000):
            f.write(b"\2" * (1 << 20))
    outcome = "filled"
except OSError as e:
    outcome = type(e).__name__
outcome
"#;
    let (cells, output) = run_json(&[
        "--workdir",
        workdir.path().to_str().unwrap(),
        "--max-file-size",
        "10",
        "--disk-quota",
        "50",
        "-c",
        big_file,
        "-c",
        many_files,
        "-c",
        tmp,
        "-c",
        "'alive'",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        first_text(&cells[0]),
        "'OSError: 27'",
        "EFBIG at the file size limit"
    );
    let size = std::fs::metadata(workdir.path().join("big.bin"))
        .unwrap()
        .len();
    assert!(size <= 10 << 20, "{size}");
    assert_eq!(cells[1]["status"], "error", "{}", cells[1]);
    assert_eq!(cells[1]["error"]["ename"], "DiskQuotaExceeded");
    let parts = std::fs::read_dir(workdir.path()).unwrap().count();
    assert!(
        parts < 100,
        "the quota stopped the writer early ({parts} files)"
    );
    assert_ne!(first_text(&cells[2]), "'filled'", "/tmp is bounded too");
    assert_eq!(first_text(&cells[3]), "'alive'");
}

#[test]
fn a_session_cannot_signal_the_host() {
    let mut sleeper = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let code = format!(
        "import os, signal\ntry:\n    os.kill({}, signal.SIGKILL)\n    result = 'killed'\nexcept OSError as e:\n    result = type(e).__name__\nresult",
        sleeper.id()
    );
    let (cells, output) = run_json(&["-c", &code]);
    assert!(output.status.success(), "{output:?}");
    assert_ne!(first_text(&cells[0]), "'killed'");
    assert!(
        sleeper.try_wait().unwrap().is_none(),
        "the host process still runs"
    );
    sleeper.kill().unwrap();
    let _ = sleeper.wait();
}

#[test]
fn the_python_data_stack_works_under_the_syscall_allow_list() {
    let code = r#"
import io, json, multiprocessing, os, socket, sqlite3, stat, subprocess, tempfile, threading
import numpy as np, pandas as pd, matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
seen = {}
a = np.random.default_rng(0).random((200, 200))
seen["numpy"] = bool(np.allclose(a @ np.linalg.inv(a), np.eye(200), atol=1e-6))
df = pd.DataFrame({"x": range(10), "y": [v * v for v in range(10)]})
df.to_csv("table.csv", index=False)
seen["pandas"] = int(pd.read_csv("table.csv")["y"].sum())
fig, ax = plt.subplots()
ax.plot(df.x, df.y)
png = io.BytesIO()
fig.savefig(png, format="png")
seen["png"] = png.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
seen["ls"] = subprocess.run(["ls", "/mnt/data"], capture_output=True, text=True).stdout.split()
seen["shell"] = subprocess.run("echo piped | cat", shell=True, capture_output=True, text=True).stdout
totals = []
threads = [threading.Thread(target=lambda: totals.append(sum(range(10000)))) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
seen["threads"] = totals
with multiprocessing.get_context("fork").Pool(2) as pool:
    seen["fork_pool"] = pool.map(abs, [-1, -2, -3])
db = sqlite3.connect("data.sqlite")
db.execute("create table t(x)"); db.execute("insert into t values (42)"); db.commit()
seen["sqlite"] = db.execute("select x from t").fetchone()[0]
with tempfile.TemporaryDirectory() as d:
    with open(os.path.join(d, "f"), "w") as f: f.write("temp")
    seen["tempfile"] = open(os.path.join(d, "f")).read()
server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen()
client = socket.create_connection(server.getsockname()); conn, _ = server.accept()
client.sendall(b"ping"); seen["socket"] = conn.recv(4).decode()
seen["interfaces"] = [name for _, name in socket.if_nameindex()]
os.mkfifo("/tmp/fifo")
seen["fifo"] = stat.S_ISFIFO(os.stat("/tmp/fifo").st_mode)
print(json.dumps(seen))
"#;
    let workdir = tempfile::tempdir().unwrap();
    let (cells, output) = run_json(&["--workdir", workdir.path().to_str().unwrap(), "-c", code]);
    assert!(output.status.success(), "{output:?}");
    let seen = printed_json(&cells[0]);
    let expected = serde_json::json!({
        "numpy": true,
        "pandas": 285,
        "png": true,
        "ls": ["table.csv"],
        "shell": "piped\n",
        "threads": [49995000, 49995000, 49995000, 49995000],
        "fork_pool": [1, 2, 3],
        "sqlite": 42,
        "tempfile": "temp",
        "socket": "ping",
        "interfaces": ["lo"],
        "fifo": true,
    });
    assert_eq!(seen, expected);
}

#[test]
#[cfg(target_arch = "x86_64")] // the call numbers below are x86_64's
fn sockets_outside_the_allowed_families_and_x32_calls_are_refused() {
    let code = r#"
import ctypes, errno, json, socket
def create(family, kind, protocol=0):
    try:
        socket.socket(family, kind, protocol).close()
        return "created"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
libc = ctypes.CDLL(None, use_errno=True)
def raw(number, *args):
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(number), *[ctypes.c_long(a) for a in args])
    return errno.errorcode.get(ctypes.get_errno(), "none") if result == -1 else "succeeded"
print(json.dumps({
    "vsock": create(40, socket.SOCK_STREAM),
    "packet": create(17, socket.SOCK_RAW),
    "netlink_audit": create(16, socket.SOCK_RAW, 9),
    "netlink_uevent": create(16, socket.SOCK_RAW, 15),
    "x32_getpid": raw(0x40000000 | 39),
    "clone_newuser": raw(56, 0x10000000 | 17, 0, 0, 0, 0),
    "open_tree_attr": raw(467, -1, 0, 0, 0, 0),
}))
"#;
    let (cells, output) = run_json(&["-c", code]);
    assert!(output.status.success(), "{output:?}");
    let seen = printed_json(&cells[0]);
    for (call, outcome) in seen.as_object().unwrap() {
        assert_eq!(outcome, "EPERM", "{call}: {seen}");
    }
}

/// Python that reads the session's mount table into `mounts`: each mount's root field,
/// mount point and source.
const MOUNTS: &str = r#"
import json
mounts = []
for line in open("/proc/self/mountinfo"):
    fields = line.split()
    after = fields.index("-")
    mounts.append({"root": fields[3], "mount_point": fields[4], "source": fields[after + 2]})
"#;

#[test]
fn mountinfo_names_no_host_path_but_those_the_session_has_anyway() {
    // What is true (see ARCHITECTURE.md, "The sandbox, step by step"): a bind mount's
    // root field is the bound directory's path in its own filesystem, and no way of
    // binding changes it. So the read-only paths show their own path (they are mounted
    // at that path inside: nothing new is learnt), device nodes their name in the host's
    // devtmpfs, and `/mnt/data` the host path of the working directory, unless it is a
    // filesystem of its own (then `/`). Sources are devices or pseudo file systems,
    // never a path. Nothing else of the host shows.
    let workdir = tempfile::tempdir().unwrap();
    let workdir_path = workdir.path().canonicalize().unwrap();
    let code = format!("{MOUNTS}\nprint(json.dumps(mounts))");
    let (cells, output) = run_json(&["--workdir", workdir_path.to_str().unwrap(), "-c", &code]);
    assert!(output.status.success(), "{output:?}");
    let mounts = printed_json(&cells[0]);
    let mounts = mounts.as_array().expect("a list of mounts");
    assert!(mounts.len() > 5, "{mounts:?}");
    // The host's mount of the working directory's filesystem: the root field of
    // `/mnt/data` is the directory's path within it.
    let workdir_in_its_filesystem =
        |root: &str| workdir_path.ends_with(root.trim_start_matches('/')) && root.len() > 1;
    for mount in mounts {
        let (root, mount_point, source) = (
            mount["root"].as_str().unwrap(),
            mount["mount_point"].as_str().unwrap(),
            mount["source"].as_str().unwrap(),
        );
        let device_node = mount_point
            .strip_prefix("/dev/")
            .map(|name| format!("/{name}"));
        let shown = root == "/"
            || root == mount_point
            || device_node.as_deref() == Some(root)
            // The neutral view's rewritten files, from its own filesystem.
            || (mount_point.starts_with("/run/sandcell/") && root.starts_with("/overlay/"))
            || (mount_point == "/mnt/data" && workdir_in_its_filesystem(root));
        assert!(shown, "a host path beyond the session's own view: {mount}");
        assert!(
            !source.starts_with('/') || source.starts_with("/dev/"),
            "a mount source names a path: {mount}"
        );
    }
    let mount_points: Vec<&str> = mounts
        .iter()
        .filter_map(|m| m["mount_point"].as_str())
        .collect();
    for expected in ["/", "/tmp", "/mnt/data", "/proc", "/etc", "/dev"] {
        assert!(
            mount_points.contains(&expected),
            "{expected}: {mount_points:?}"
        );
    }
}

#[test]
fn a_root_host_shows_sessions_the_environment_only_at_neutral_paths() {
    // A root host with loop devices starts its templates in a view where the Python
    // environment lives under /run/sandcell on filesystems of its own (ARCHITECTURE.md,
    // "The sandbox, step by step"); elsewhere it is bound at its host paths, as the test
    // above allows.
    let neutral =
        nix::unistd::geteuid().is_root() && std::path::Path::new("/dev/loop-control").exists();
    let code = MOUNTS.to_owned()
        + r#"
import subprocess, sys
child = subprocess.run([sys.executable, "-c", "import sys; print(sys.version)"], capture_output=True, text=True)
print(json.dumps({"mounts": mounts, "prefix": sys.prefix, "executable": sys.executable, "path": sys.path,
                  "version": sys.version, "child": child.stdout.strip() + child.stderr}))
"#;
    let (cells, output) = run_json(&["-c", &code]);
    assert!(output.status.success(), "{output:?}");
    let seen = printed_json(&cells[0]);
    // A subprocess runs the same interpreter, with its own library (not the system's).
    assert_eq!(seen["child"], seen["version"], "{seen}");
    if !neutral {
        // The fallback `sandcell doctor` describes: the environment at its host paths.
        eprintln!("without root and loop devices: checking the fallback, host paths");
        assert_ne!(seen["prefix"], "/run/sandcell/env", "{seen}");
        return;
    }
    assert_eq!(seen["prefix"], "/run/sandcell/env", "{seen}");
    assert_eq!(seen["executable"], "/run/sandcell/env/bin/python", "{seen}");
    for entry in seen["path"].as_array().unwrap() {
        let entry = entry.as_str().unwrap();
        assert!(
            entry.is_empty() || entry.starts_with("/run/sandcell/") || entry.starts_with("/usr/"),
            "sys.path names a host path: {entry}"
        );
    }
    // Every mount is one the sandbox makes, at a path every session has; each of those
    // under /run/sandcell is a filesystem of the environment's own (root `/`), or a
    // rewritten file of the view's own filesystem bound over the venv's.
    const SYSTEM: &[&str] = &[
        "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
    ];
    for mount in seen["mounts"].as_array().unwrap() {
        let (root, mount_point, source) = (
            mount["root"].as_str().unwrap(),
            mount["mount_point"].as_str().unwrap(),
            mount["source"].as_str().unwrap(),
        );
        let known = ["/", "/tmp", "/mnt/data", "/proc", "/etc", "/dev"].contains(&mount_point)
            || SYSTEM.contains(&mount_point)
            || mount_point.starts_with("/etc/")
            || mount_point.starts_with("/dev/")
            || mount_point.starts_with("/run/sandcell");
        assert!(known, "a mount at a host path: {mount}");
        if mount_point.starts_with("/run/sandcell") || mount_point == "/mnt/data" {
            assert!(
                root == "/" || root.starts_with("/overlay/"),
                "the environment's or the session's own filesystem shows a host path: {mount}"
            );
            assert!(source.starts_with("/dev/loop"), "{mount}");
        }
    }
}
