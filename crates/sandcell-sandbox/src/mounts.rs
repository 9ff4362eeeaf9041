//! Step: the session's filesystem view, built in its own mount namespace the way
//! bubblewrap does it. A tmpfs becomes the root; beside it the old root stays reachable
//! at `/oldroot`, so every source path (even one under the host's `/tmp`) can be bound
//! into `/newroot`; then `/newroot` becomes `/` and the old root is detached for good.
//!
//! What the session sees: read-only system and Python directories, its working directory
//! read-write at `mount_point`, a private `/tmp`, a minimal `/dev`, a fresh `/proc` of its
//! own PID namespace, and a generated `/etc`. Nothing else of the host, except in
//! `/proc/self/mountinfo`, where each bind mount's root field is the host path of the
//! directory it binds: the kernel derives it from the directory itself, whatever way the
//! bind is made. Hence the working directory mounted from its own disk's device when it
//! has one (`workdir_device`), and the Python environment in the template's view
//! (`view.rs`), whose filesystems are their own.

use crate::error::{failed, SandboxError};
use crate::spec::{Identity, SandboxSpec};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::statvfs::{statvfs, FsFlags};
use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{symlink, DirBuilderExt};
use std::path::{Component, Path, PathBuf};

/// Where the staging tmpfs is mounted. Any existing directory works: after the first
/// pivot_root it is no longer visible from anywhere.
const STAGING: &str = "/tmp";
const OLD_ROOT: &str = "/oldroot";
const NEW_ROOT: &str = "/newroot";

/// Device nodes the session may open, bound from the host's `/dev`.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];

/// No set-uid binaries and no device nodes: the default for everything we mount.
const SAFE: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);

pub fn build_root(spec: &SandboxSpec) -> Result<(), SandboxError> {
    check_paths(spec)?;
    enter_staging_root()?;
    let new_root = Path::new(NEW_ROOT);
    mkdir(new_root)?;
    mount_tmpfs(new_root, "mode=0755,size=1m", SAFE)?;

    // /tmp first, so that read-only paths under /tmp (a sandcell home in a temporary
    // directory, say) are bound on top of it rather than hidden by it.
    let tmp_options = format!("mode=1777,size={}", spec.limits.tmp_size_bytes);
    let tmp = inside(Path::new("/tmp"));
    mkdir(&tmp)?;
    mount_tmpfs(&tmp, &tmp_options, SAFE)?;
    for path in outermost(&spec.read_only_paths) {
        expose_read_only(&path)?;
    }
    match &spec.workdir_device {
        Some(device) => mount_workdir_device(device, &spec.mount_point)?,
        None => bind_workdir(&spec.workdir, &spec.mount_point)?,
    }
    build_dev(&tmp_options)?;
    build_etc(spec)?;
    mount_proc()?;

    enter_new_root()?;
    std::env::set_current_dir(&spec.mount_point)
        .map_err(failed(format!("enter {}", spec.mount_point.display())))
}

/// Every path of the spec must be absolute and free of `..`: joined under `/newroot` or
/// `/oldroot`, anything else could point outside them.
fn check_paths(spec: &SandboxSpec) -> Result<(), SandboxError> {
    let paths = [&spec.workdir, &spec.mount_point]
        .into_iter()
        .chain(&spec.workdir_device)
        .chain(&spec.read_only_paths)
        .chain(&spec.etc_files);
    for path in paths {
        let plain = path.is_absolute()
            && path
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        if !plain {
            return Err(failed(format!("use the path {}", path.display()))(
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "sandbox paths must be absolute, without `..`",
                ),
            ));
        }
    }
    Ok(())
}

/// Makes our mount table private, then pivots into a staging tmpfs with the host's root
/// at `/oldroot`.
fn enter_staging_root() -> Result<(), SandboxError> {
    // Nothing we mount may propagate back to the host's mount namespace.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(failed("make the mount namespace private"))?;
    mount_tmpfs(Path::new(STAGING), "mode=0755,size=1m", SAFE)?;
    let staged_old_root = format!("{STAGING}{OLD_ROOT}");
    mkdir(Path::new(&staged_old_root))?;
    nix::unistd::pivot_root(STAGING, staged_old_root.as_str())
        .map_err(failed("change the root directory (pivot_root)"))?;
    std::env::set_current_dir("/").map_err(failed("enter the staging root"))
}

/// Makes `/newroot` the root, detaches the staging root (and the host's tree under it),
/// and makes the new root itself read-only.
fn enter_new_root() -> Result<(), SandboxError> {
    std::env::set_current_dir(NEW_ROOT).map_err(failed("enter the new root"))?;
    // pivot_root(".", ".") stacks the old root on top of the new one, at the same
    // place; unmounting "." then removes exactly the old root.
    nix::unistd::pivot_root(".", ".").map_err(failed("change the root directory (pivot_root)"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(failed("detach the host's root"))?;
    std::env::set_current_dir("/").map_err(failed("enter the sandbox root"))?;
    remount_read_only(Path::new("/"), MsFlags::empty())
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
        return copy_symlink(&source, &target);
    }
    create_mount_point(&target, meta.is_dir())?;
    bind(&source, &target, MsFlags::MS_REC)?;
    // The recursive bind brought the source's submounts along: each is its own mount
    // and must be made read-only on its own.
    for mount_point in mounts_beneath(&target)? {
        remount_read_only(&mount_point, SAFE)?;
    }
    Ok(())
}

fn bind_workdir(workdir: &Path, mount_point: &Path) -> Result<(), SandboxError> {
    let target = inside(mount_point);
    mkdir_all(&target)?;
    bind(&on_host(workdir), &target, MsFlags::empty())?;
    let locked = locked_flags(&target)? - MsFlags::MS_RDONLY;
    mount(
        None::<&str>,
        &target,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | SAFE | locked,
        None::<&str>,
    )
    .map_err(failed(format!("remount {}", mount_point.display())))
}

/// The working directory's disk, mounted from its loop device (the filesystem the host
/// has mounted at the working directory's path).
fn mount_workdir_device(device: &Path, mount_point: &Path) -> Result<(), SandboxError> {
    let target = inside(mount_point);
    mkdir_all(&target)?;
    // A mount's source field is the device's path as given: the node is bound at its own
    // path in the staging root, so that the field reads `/dev/loopN`.
    if let Some(parent) = device.parent() {
        mkdir_all(parent)?;
    }
    create_mount_point(device, false)?;
    bind(&on_host(device), device, MsFlags::empty())?;
    crate::disk::mount_device(device, &target).map_err(|e| {
        failed(format!("mount {}", mount_point.display()))(std::io::Error::other(e))
    })?;
    umount2(device, MntFlags::MNT_DETACH).map_err(failed(format!("unmount {}", device.display())))
}

/// A tmpfs `/dev` holding bound host devices, a private devpts and `/dev/shm`.
fn build_dev(shm_options: &str) -> Result<(), SandboxError> {
    let dev = inside(Path::new("/dev"));
    mkdir(&dev)?;
    // The bound device nodes are mounts of their own and keep the host's flags, so
    // the tmpfs itself can forbid devices.
    mount_tmpfs(&dev, "mode=0755,size=64k", SAFE | MsFlags::MS_NOEXEC)?;
    for name in DEVICES {
        let target = dev.join(name);
        create_mount_point(&target, false)?;
        bind(
            &on_host(&Path::new("/dev").join(name)),
            &target,
            MsFlags::empty(),
        )?;
    }
    let shm = dev.join("shm");
    mkdir(&shm)?;
    mount_tmpfs(&shm, shm_options, SAFE)?;
    // A new devpts instance, for the ptys IPython's `!cmd` opens. No `gid=` option: the
    // host's tty group does not exist inside (and is unmapped in a user namespace), so
    // ptys belong to the session's own group.
    let pts = dev.join("pts");
    mkdir(&pts)?;
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(failed("mount /dev/pts"))?;
    let links = [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ];
    for (name, target) in links {
        symlink(target, dev.join(name)).map_err(failed(format!("create /dev/{name}")))?;
    }
    remount_read_only(&dev, SAFE | MsFlags::MS_NOEXEC)
}

/// A tmpfs `/etc` with generated account and host files, plus the host files the spec
/// names.
fn build_etc(spec: &SandboxSpec) -> Result<(), SandboxError> {
    let etc = inside(Path::new("/etc"));
    mkdir(&etc)?;
    mount_tmpfs(&etc, "mode=0755,size=1m", SAFE)?;
    let (Identity::DropFromRoot { uid, gid } | Identity::UserNamespace { uid, gid }) =
        spec.identity;
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
        fs::write(etc.join(name), content).map_err(failed(format!("write /etc/{name}")))?;
    }
    for file in &spec.etc_files {
        let Some(name) = file.file_name() else {
            continue;
        };
        let source = on_host(file);
        let Ok(meta) = fs::symlink_metadata(&source) else {
            continue; // optional: only the files the host has
        };
        let target = etc.join(name);
        if meta.file_type().is_symlink() {
            // e.g. localtime -> /usr/share/zoneinfo/…, which resolves inside too.
            copy_symlink(&source, &target)?;
            continue;
        }
        create_mount_point(&target, meta.is_dir())?;
        bind(&source, &target, MsFlags::empty())?;
        remount_read_only(&target, SAFE)?;
    }
    remount_read_only(&etc, SAFE)
}

/// A procfs of the new PID namespace: the session sees only its own processes.
fn mount_proc() -> Result<(), SandboxError> {
    let target = inside(Path::new("/proc"));
    mkdir(&target)?;
    mount(
        Some("proc"),
        &target,
        Some("proc"),
        SAFE | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(failed("mount /proc for the session's PID namespace"))
}

fn bind(source: &Path, target: &Path, extra: MsFlags) -> Result<(), SandboxError> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | extra,
        None::<&str>,
    )
    .map_err(failed(format!("bind {} into the sandbox", shown(source))))
}

/// Remounts a bind mount read-only. In a user namespace the flags the source mount was
/// locked with (nodev, noexec, atime modes…) must be repeated or the kernel refuses.
fn remount_read_only(target: &Path, extra: MsFlags) -> Result<(), SandboxError> {
    let flags =
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | extra | locked_flags(target)?;
    mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
        .map_err(failed(format!("make {} read-only", shown(target))))
}

/// The per-mount flags of the mount at `target`, as mount(2) flags.
fn locked_flags(target: &Path) -> Result<MsFlags, SandboxError> {
    let stat = statvfs(target).map_err(failed(format!("inspect {}", shown(target))))?;
    let pairs = [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ];
    let mut flags = pairs
        .iter()
        .filter(|(st, _)| stat.flags().contains(*st))
        .fold(MsFlags::empty(), |flags, (_, ms)| flags | *ms);
    // Neither noatime nor relatime means strictatime, which a remount must repeat too
    // (it would default to relatime).
    if !flags.intersects(MsFlags::MS_NOATIME | MsFlags::MS_RELATIME) {
        flags |= MsFlags::MS_STRICTATIME;
    }
    Ok(flags)
}

/// Every mount point at or beneath `target`, parents first (the mount table's order).
fn mounts_beneath(target: &Path) -> Result<Vec<PathBuf>, SandboxError> {
    // Our /proc is not mounted yet; the host's is, under the old root. Its paths are
    // relative to our current root, so they read "/newroot/…".
    let table = fs::read_to_string(on_host(Path::new("/proc/self/mountinfo")))
        .map_err(failed("read the mount table"))?;
    Ok(table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape)
        .filter(|mount_point| mount_point.starts_with(target))
        .collect())
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
pub(crate) fn unescape(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            let digits = std::str::from_utf8(digits).ok()?;
            u8::from_str_radix(digits, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

/// Recreates the host's symlink at `source` as `target` (same link text).
fn copy_symlink(source: &Path, target: &Path) -> Result<(), SandboxError> {
    let link = fs::read_link(source).map_err(failed(format!("read {}", shown(source))))?;
    symlink(&link, target).map_err(failed(format!("create the link {}", shown(target))))
}

/// An empty directory or file for a bind mount to cover.
fn create_mount_point(target: &Path, is_dir: bool) -> Result<(), SandboxError> {
    if is_dir {
        return mkdir(target);
    }
    fs::write(target, b"").map_err(failed(format!("create {}", shown(target))))
}

fn mount_tmpfs(target: &Path, options: &str, flags: MsFlags) -> Result<(), SandboxError> {
    mount(Some("tmpfs"), target, Some("tmpfs"), flags, Some(options))
        .map_err(failed(format!("mount a tmpfs at {}", shown(target))))
}

fn mkdir(path: &Path) -> Result<(), SandboxError> {
    match fs::DirBuilder::new().mode(0o755).create(path) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(failed(format!("create {}", shown(path)))(e))
        }
        _ => Ok(()),
    }
}

fn mkdir_all(path: &Path) -> Result<(), SandboxError> {
    fs::DirBuilder::new()
        .mode(0o755)
        .recursive(true)
        .create(path)
        .map_err(failed(format!("create {}", shown(path))))
}

/// A path without the staging prefix, for messages: `/newroot/usr` (the sandbox's
/// `/usr`) and `/oldroot/usr` (the host's) both read `/usr`.
fn shown(path: &Path) -> String {
    [NEW_ROOT, OLD_ROOT]
        .iter()
        .find_map(|prefix| path.strip_prefix(prefix).ok())
        .map_or_else(|| path.to_path_buf(), |rest| Path::new("/").join(rest))
        .display()
        .to_string()
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
        assert_eq!(shown(Path::new("/newroot/usr")), "/usr");
        assert_eq!(shown(Path::new("/oldroot/tmp/w")), "/tmp/w");
    }

    #[test]
    fn relative_and_dotted_paths_are_refused() {
        let spec = |workdir: &str| SandboxSpec {
            workdir: PathBuf::from(workdir),
            workdir_device: None,
            mount_point: PathBuf::from("/mnt/data"),
            read_only_paths: vec![PathBuf::from("/usr")],
            etc_files: Vec::new(),
            identity: Identity::UserNamespace { uid: 1, gid: 1 },
            cgroup_procs: Vec::new(),
            limits: crate::spec::RlimitSpec {
                file_size_bytes: 1,
                open_files: 1,
                tmp_size_bytes: 1,
                address_space_bytes: None,
                processes: None,
            },
            hostname: "h".into(),
            landlock: false,
        };
        assert!(check_paths(&spec("/tmp/work")).is_ok());
        for bad in ["tmp/work", "/tmp/../etc", "./work"] {
            assert!(check_paths(&spec(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/a\040b\134c"), PathBuf::from(r"/a b\c"));
        assert_eq!(unescape(r"/trailing\04"), PathBuf::from(r"/trailing\04"));
    }
}
