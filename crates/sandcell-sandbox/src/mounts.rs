//! Step: the session's filesystem view, built in its own mount namespace the way
//! bubblewrap does it. A tmpfs becomes the root; beside it the old root stays reachable
//! at `/oldroot`, so every source path (even one under the host's `/tmp`) can be bound
//! into `/newroot`; then `/newroot` becomes `/` and the old root is detached for good.
//!
//! What the session sees: read-only system and Python directories, its working directory
//! read-write at `mount_point`, a private `/tmp`, a minimal `/dev`, a fresh `/proc` of its
//! own PID namespace, and a generated `/etc`. Nothing else of the host.

use crate::error::{failed, last_error, SandboxError};
use crate::spec::{Identity, SandboxSpec};
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, DirBuilderExt};
use std::path::{Path, PathBuf};

/// Where the staging tmpfs is mounted. Any existing directory works: after the first
/// pivot_root it is no longer visible from anywhere.
const STAGING: &str = "/tmp";
const OLD_ROOT: &str = "/oldroot";
const NEW_ROOT: &str = "/newroot";

/// Device nodes the session may open, bound from the host's `/dev`.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];

pub fn build_root(spec: &SandboxSpec) -> Result<(), SandboxError> {
    mount(None, "/", None, libc::MS_REC | libc::MS_PRIVATE, None)
        .map_err(failed("making the mount namespace private"))?;
    mount(
        Some("tmpfs"),
        STAGING,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=0755,size=1m"),
    )
    .map_err(failed("mounting the staging tmpfs"))?;
    let staged_old_root = format!("{STAGING}{OLD_ROOT}");
    mkdir(Path::new(&staged_old_root))?;
    pivot_root(STAGING, &staged_old_root)?;
    std::env::set_current_dir("/").map_err(failed("entering the staging root"))?;

    let new_root = Path::new(NEW_ROOT);
    mkdir(new_root)?;
    mount_tmpfs(
        new_root,
        "mode=0755,size=1m",
        libc::MS_NOSUID | libc::MS_NODEV,
    )?;

    for path in outermost(&spec.read_only_paths) {
        expose_read_only(&path)?;
    }
    bind_workdir(&spec.workdir, &spec.mount_point)?;
    let tmp_options = format!("mode=1777,size={}", spec.limits.tmp_size_bytes);
    let tmp = inside(Path::new("/tmp"));
    mkdir(&tmp)?;
    mount_tmpfs(&tmp, &tmp_options, libc::MS_NOSUID | libc::MS_NODEV)?;
    build_dev(&tmp_options)?;
    build_etc(spec)?;
    let proc_dir = inside(Path::new("/proc"));
    mkdir(&proc_dir)?;
    mount(
        Some("proc"),
        &proc_dir,
        Some("proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )
    .map_err(failed("mounting /proc for the session's PID namespace"))?;

    // Make /newroot the root and drop the staging root (with the host's tree under it).
    std::env::set_current_dir(NEW_ROOT).map_err(failed("entering the new root"))?;
    pivot_root(".", ".")?;
    // SAFETY: detaching the mount stacked on "." (the old root); no pointers kept.
    if unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(last_error("detaching the host's root"));
    }
    std::env::set_current_dir("/").map_err(failed("entering the sandbox root"))?;
    remount_read_only(Path::new("/"), 0)?;
    std::env::set_current_dir(&spec.mount_point)
        .map_err(failed(format!("entering {}", spec.mount_point.display())))
}

/// A path of the sandbox, as seen while it is being built.
fn inside(path: &Path) -> PathBuf {
    Path::new(NEW_ROOT).join(path.strip_prefix("/").unwrap_or(path))
}

/// The same host path, reached through the old root.
fn on_host(path: &Path) -> PathBuf {
    Path::new(OLD_ROOT).join(path.strip_prefix("/").unwrap_or(path))
}

/// Drops paths that lie inside another listed path (binding the outer one covers them).
fn outermost(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut sorted: Vec<&PathBuf> = paths.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut kept: Vec<PathBuf> = Vec::new();
    for path in sorted {
        if !kept.iter().any(|outer| path.starts_with(outer)) {
            kept.push(path.clone());
        }
    }
    kept
}

fn expose_read_only(path: &Path) -> Result<(), SandboxError> {
    let source = on_host(path);
    let target = inside(path);
    let Ok(meta) = fs::symlink_metadata(&source) else {
        return Ok(()); // a listed path the host lacks is simply absent
    };
    if let Some(parent) = target.parent() {
        mkdir_all(parent)?;
    }
    if meta.file_type().is_symlink() {
        // e.g. /bin -> usr/bin on merged-/usr systems: the same link, resolved inside.
        let link = fs::read_link(&source).map_err(failed(format!("reading {}", path.display())))?;
        return symlink(&link, &target).map_err(failed(format!("linking {}", path.display())));
    }
    if meta.is_dir() {
        mkdir(&target)?;
    } else {
        fs::write(&target, b"").map_err(failed(format!("creating {}", target.display())))?;
    }
    bind(&source, &target, libc::MS_REC)?;
    remount_read_only(&target, libc::MS_NOSUID | libc::MS_NODEV)
}

fn bind_workdir(workdir: &Path, mount_point: &Path) -> Result<(), SandboxError> {
    let target = inside(mount_point);
    mkdir_all(&target)?;
    bind(&on_host(workdir), &target, 0)?;
    let locked = locked_flags(&target)? & !libc::MS_RDONLY;
    mount(
        None,
        &target,
        None,
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOSUID | libc::MS_NODEV | locked,
        None,
    )
    .map_err(failed(format!("remounting {}", mount_point.display())))
}

fn build_dev(shm_options: &str) -> Result<(), SandboxError> {
    let dev = inside(Path::new("/dev"));
    mkdir(&dev)?;
    mount_tmpfs(
        &dev,
        "mode=0755,size=64k",
        libc::MS_NOSUID | libc::MS_NOEXEC,
    )?;
    for name in DEVICES {
        let target = dev.join(name);
        fs::write(&target, b"").map_err(failed(format!("creating /dev/{name}")))?;
        bind(&on_host(&Path::new("/dev").join(name)), &target, 0)?;
    }
    let shm = dev.join("shm");
    mkdir(&shm)?;
    mount_tmpfs(&shm, shm_options, libc::MS_NOSUID | libc::MS_NODEV)?;
    let pts = dev.join("pts");
    mkdir(&pts)?;
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(failed("mounting /dev/pts"))?;
    let links = [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ];
    for (name, target) in links {
        symlink(target, dev.join(name)).map_err(failed(format!("linking /dev/{name}")))?;
    }
    remount_read_only(&dev, libc::MS_NOSUID | libc::MS_NOEXEC)
}

fn build_etc(spec: &SandboxSpec) -> Result<(), SandboxError> {
    let etc = inside(Path::new("/etc"));
    mkdir(&etc)?;
    mount_tmpfs(&etc, "mode=0755,size=1m", libc::MS_NOSUID | libc::MS_NODEV)?;
    let (uid, gid) = match spec.identity {
        Identity::DropFromRoot { uid, gid } | Identity::UserNamespace { uid, gid } => (uid, gid),
    };
    let generated = [
        (
            "passwd",
            format!("root:x:0:0:root:/root:/bin/sh\nsandbox:x:{uid}:{gid}:sandbox:/tmp:/bin/sh\n"),
        ),
        ("group", format!("root:x:0:\nsandbox:x:{gid}:\n")),
        (
            "hosts",
            format!(
                "127.0.0.1 localhost {0}\n::1 localhost {0}\n",
                spec.hostname
            ),
        ),
        ("hostname", format!("{}\n", spec.hostname)),
    ];
    for (name, content) in generated {
        fs::write(etc.join(name), content).map_err(failed(format!("writing /etc/{name}")))?;
    }
    for file in &spec.etc_files {
        let Some(name) = file.file_name() else {
            continue;
        };
        let source = on_host(file);
        let Ok(meta) = fs::metadata(&source) else {
            continue;
        };
        let target = etc.join(name);
        if meta.is_dir() {
            mkdir(&target)?;
        } else {
            fs::write(&target, b"").map_err(failed(format!("creating {}", target.display())))?;
        }
        bind(&source, &target, libc::MS_REC)?;
        remount_read_only(&target, libc::MS_NOSUID | libc::MS_NODEV)?;
    }
    remount_read_only(&etc, libc::MS_NOSUID | libc::MS_NODEV)
}

fn bind(source: &Path, target: &Path, extra: libc::c_ulong) -> Result<(), SandboxError> {
    mount(source.to_str(), target, None, libc::MS_BIND | extra, None).map_err(failed(format!(
        "binding {} into the sandbox",
        source.strip_prefix(OLD_ROOT).unwrap_or(source).display()
    )))
}

/// Remounts a bind mount read-only. In a user namespace the flags the source mount was
/// locked with (nodev, noexec, atime modes…) must be repeated or the kernel refuses.
fn remount_read_only(target: &Path, extra: libc::c_ulong) -> Result<(), SandboxError> {
    let flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | extra | locked_flags(target)?;
    mount(None, target, None, flags, None)
        .map_err(failed(format!("making {} read-only", target.display())))
}

fn locked_flags(target: &Path) -> Result<libc::c_ulong, SandboxError> {
    let stat = nix::sys::statvfs::statvfs(target)
        .map_err(|e| failed(format!("inspecting {}", target.display()))(e.into()))?;
    use nix::sys::statvfs::FsFlags;
    let pairs = [
        (FsFlags::ST_RDONLY, libc::MS_RDONLY),
        (FsFlags::ST_NOSUID, libc::MS_NOSUID),
        (FsFlags::ST_NODEV, libc::MS_NODEV),
        (FsFlags::ST_NOEXEC, libc::MS_NOEXEC),
        (FsFlags::ST_NOATIME, libc::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, libc::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, libc::MS_RELATIME),
    ];
    Ok(pairs
        .iter()
        .filter(|(st, _)| stat.flags().contains(*st))
        .fold(0, |flags, (_, ms)| flags | ms))
}

fn mount_tmpfs(target: &Path, options: &str, flags: libc::c_ulong) -> Result<(), SandboxError> {
    mount(Some("tmpfs"), target, Some("tmpfs"), flags, Some(options))
        .map_err(failed(format!("mounting a tmpfs at {}", target.display())))
}

fn mkdir(path: &Path) -> Result<(), SandboxError> {
    match fs::DirBuilder::new().mode(0o755).create(path) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(failed(format!("creating {}", path.display()))(e))
        }
        _ => Ok(()),
    }
}

fn mkdir_all(path: &Path) -> Result<(), SandboxError> {
    fs::DirBuilder::new()
        .mode(0o755)
        .recursive(true)
        .create(path)
        .map_err(failed(format!("creating {}", path.display())))
}

fn pivot_root(new_root: &str, put_old: &str) -> Result<(), SandboxError> {
    let new_root = cstring(Path::new(new_root));
    let put_old = cstring(Path::new(put_old));
    // SAFETY: pivot_root takes two NUL-terminated paths that outlive the call.
    if unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) } != 0 {
        return Err(last_error("changing the root directory (pivot_root)"));
    }
    Ok(())
}

fn mount(
    source: Option<&str>,
    target: impl AsRef<Path>,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> std::io::Result<()> {
    let source = source.map(|s| cstring(Path::new(s)));
    let target = cstring(target.as_ref());
    let fstype = fstype.map(|t| cstring(Path::new(t)));
    let data = data.map(|d| cstring(Path::new(d)));
    let ptr = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: all pointers are NUL-terminated strings (or null) that outlive the call.
    let result = unsafe {
        libc::mount(
            ptr(&source),
            target.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data).cast(),
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Paths come from the spec or from constants; an interior NUL would be a bug upstream,
/// and such a path simply does not exist.
fn cstring(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_paths_are_covered_by_their_parent() {
        let paths: Vec<PathBuf> = ["/usr/bin", "/usr", "/opt/py", "/opt/py/bin", "/usrx"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(
            outermost(&paths),
            ["/opt/py", "/usr", "/usrx"].map(PathBuf::from)
        );
    }

    #[test]
    fn sandbox_paths_map_under_the_staging_roots() {
        assert_eq!(
            inside(Path::new("/mnt/data")),
            PathBuf::from("/newroot/mnt/data")
        );
        assert_eq!(
            on_host(Path::new("/tmp/x")),
            PathBuf::from("/oldroot/tmp/x")
        );
    }
}
