//! A filesystem of bounded size for one working directory: a sparse image file formatted
//! as ext4 (no journal, a bounded number of inodes), attached to a loop device and
//! mounted on the directory. The kernel then refuses a write past the size (ENOSPC) and a
//! file past the inode count (ENOSPC), whenever it happens, and the host's filesystem
//! pays at most the image's size and one inode.
//!
//! Host side, as root: creating and mounting needs `CAP_SYS_ADMIN` and the loop driver.
//! The loop device is configured with `LO_FLAGS_AUTOCLEAR`, so it is released by the
//! kernel when the filesystem is unmounted; nothing else needs to be undone. Its name
//! (`lo_file_name`, which nothing else reads) says which process mounted it
//! (`sandcell-PID`), so that the mounts of a sandcell process that was killed can be
//! found and undone by the next one ([`leftover_mounts`]).

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Bytes of the image per inode of its filesystem: ext4's own default ratio, so a
/// directory of N MiB holds at most N × 64 files and directories.
pub const BYTES_PER_INODE: u64 = 16 * 1024;
/// The filesystem's block size.
const BLOCK_SIZE: u64 = 4096;
/// The smallest image: ext4 formats 1 MiB (64 inodes, 243 free blocks); a smaller quota
/// gets that much.
pub const MIN_SIZE_BYTES: u64 = 1 << 20;

const LOOP_CONTROL: &str = "/dev/loop-control";
const LOOP_MAJOR: u64 = 7;
// linux/loop.h
const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;
/// The start of a loop device's name when a sandcell process mounted it; its pid follows.
const OWNER_TAG: &str = "sandcell-";
/// How often a free loop device taken by another process in the meantime is retried.
const LOOP_ATTEMPTS: usize = 16;
/// Where `mkfs.ext4` is looked for when it is not on `PATH` (root's tools in `sbin`).
const SBIN_DIRS: &[&str] = &["/usr/sbin", "/sbin"];
/// Mount options: `noinit_itable` because the image is sparse, so its inode tables read
/// as zeros already, and the kernel's background thread would only write them out
/// (megabytes per image) for nothing.
const MOUNT_OPTIONS: &str = "noinit_itable,errors=remount-ro";

/// Why a disk could not be made, mounted or removed. Messages are sentences.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("disk quotas need root (to attach loop devices and mount)")]
    NotRoot,
    #[error("this kernel has no loop devices ({LOOP_CONTROL}: {0}); load the `loop` module")]
    NoLoopDevices(std::io::Error),
    #[error("mkfs.ext4 was not found; install e2fsprogs")]
    NoMkfs,
    #[error("mkfs.ext4 failed on {image}: {message}")]
    Mkfs { image: PathBuf, message: String },
    #[error("could not {step} {path}: {cause}")]
    Io {
        step: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
}

fn io(step: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DiskError {
    let path = path.to_path_buf();
    move |cause| DiskError::Io { step, path, cause }
}

/// Whether this process can make disks: root, the loop driver, and `mkfs.ext4`.
pub fn check_available() -> Result<(), DiskError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(DiskError::NotRoot);
    }
    File::open(LOOP_CONTROL).map_err(DiskError::NoLoopDevices)?;
    mkfs_path().map(|_| ())
}

/// The image's size for a quota of `bytes`: whole blocks, and at least [`MIN_SIZE_BYTES`].
pub fn image_size(bytes: u64) -> u64 {
    bytes.max(MIN_SIZE_BYTES).div_ceil(BLOCK_SIZE) * BLOCK_SIZE
}

/// The number of files and directories a disk for a quota of `bytes` holds.
pub fn inode_count(bytes: u64) -> u64 {
    image_size(bytes) / BYTES_PER_INODE
}

/// Makes a new image of `size_bytes` (sparse: it takes host blocks only as they are
/// written) at `image`, which must not exist, and formats it. `mount_point` gets the
/// filesystem with [`mount_image`].
pub fn create_image(image: &Path, size_bytes: u64) -> Result<(), DiskError> {
    let inode_ratio = BYTES_PER_INODE.to_string();
    let options = ["-i", &inode_ratio, "-E", "lazy_itable_init=1,nodiscard"].map(OsStr::new);
    format_image(image, image_size(size_bytes), 0o600, "sandcell", &options)
}

/// Makes the sparse file `image` (which must not exist) of `size` bytes and formats it
/// ext4 with `options` besides the common ones: no blocks reserved for root, no journal
/// (it would take up to 64 MiB of a quota; after a host crash the filesystem mounts
/// without replay), no room kept for growing. A failure leaves no file behind.
fn format_image(
    image: &Path,
    size: u64,
    mode: u32,
    label: &str,
    options: &[&OsStr],
) -> Result<(), DiskError> {
    let mkfs = mkfs_path()?;
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(image)
        .map_err(io("create the image", image))?;
    file.set_len(size).map_err(io("size the image", image))?;
    drop(file);
    let output = Command::new(mkfs)
        .args(["-q", "-F", "-t", "ext4", "-L", label])
        .args(["-b", &BLOCK_SIZE.to_string()])
        .args(["-m", "0", "-O", "^has_journal,^resize_inode"])
        .args(options)
        .arg(image)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(io("run mkfs.ext4 for", image));
    let failure = match output {
        Ok(output) if output.status.success() => return Ok(()),
        Ok(output) => DiskError::Mkfs {
            image: image.to_path_buf(),
            message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        },
        Err(error) => error,
    };
    let _ = std::fs::remove_file(image);
    Err(failure)
}

/// Mounts the filesystem in `image` on `mount_point` (an existing directory), through a
/// free loop device that the kernel releases when it is unmounted. The mount is
/// `nosuid,nodev` (the sandbox adds its own flags on top); `lost+found`, which mkfs
/// makes and the session has no use for, is removed when empty.
pub fn mount_image(image: &Path, mount_point: &Path) -> Result<(), DiskError> {
    let backing = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(image)
        .map_err(io("open the disk image", image))?;
    let (device, _device_file) = attach_loop(&backing, image, false)?;
    // The loop device stays attached while it is mounted; its descriptor may close.
    mount(
        Some(&device),
        mount_point,
        Some("ext4"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOATIME,
        Some(MOUNT_OPTIONS),
    )
    .map_err(|e| io("mount a disk image on", mount_point)(e.into()))?;
    match std::fs::remove_dir(mount_point.join("lost+found")) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        // Not empty (files recovered by a check): the session sees them.
        Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => Ok(()),
        Err(e) => Err(io("remove lost+found in", mount_point)(e)),
    }
}

/// Makes a new image at `image` (which must not exist) holding a copy of the directory
/// `dir`: its files, links, modes and owners, with room for the filesystem's own
/// structures and nothing more. It is meant to be mounted read-only
/// ([`attach_read_only`]), wherever the directory's own path must not show.
pub fn create_image_of(dir: &Path, image: &Path) -> Result<(), DiskError> {
    let (bytes, inodes) = tree_size(dir).map_err(io("measure", dir))?;
    // Each file rounded up to a block, then a tenth more for directories, extents and the
    // inode tables, and a fixed margin for a small tree.
    let size = (bytes + bytes / 10 + 16 * 1024 * 1024).div_ceil(BLOCK_SIZE) * BLOCK_SIZE;
    let inodes = (inodes + inodes / 10 + 64).to_string();
    let options = [
        OsStr::new("-N"),
        OsStr::new(&inodes),
        OsStr::new("-E"),
        OsStr::new("nodiscard"),
        OsStr::new("-d"),
        dir.as_os_str(),
    ];
    format_image(image, size, 0o644, "sandcell-ro", &options)
}

/// The bytes (each file rounded up to whole blocks) and the entries under `dir`.
fn tree_size(dir: &Path) -> std::io::Result<(u64, u64)> {
    let (mut bytes, mut inodes) = (0, 1);
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        inodes += 1;
        if meta.is_dir() {
            let (more_bytes, more_inodes) = tree_size(&entry.path())?;
            bytes += more_bytes + BLOCK_SIZE;
            inodes += more_inodes;
        } else {
            bytes += meta.len().div_ceil(BLOCK_SIZE) * BLOCK_SIZE;
        }
    }
    Ok((bytes, inodes))
}

/// Attaches `image` to a free loop device (read-only or not), for another mount namespace
/// to mount. Returns the device's path and its open descriptor: the device stays while
/// the descriptor is open or a mount of it exists, and is released after both are gone.
pub fn attach_image(image: &Path, read_only: bool) -> Result<(PathBuf, File), DiskError> {
    let backing = OpenOptions::new()
        .read(true)
        .write(!read_only)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(image)
        .map_err(io("open the image", image))?;
    attach_loop(&backing, image, read_only)
}

/// The loop device of the sandcell disk mounted at `mount_point`, if one is (so that a
/// mount namespace made before it was mounted can mount the same filesystem).
pub fn device_of(mount_point: &Path) -> Option<PathBuf> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    table.lines().rev().find_map(|line| {
        let point = crate::mounts::unescape(line.split(' ').nth(4)?);
        let (_, tail) = line.split_once(" - ")?;
        let mut tail = tail.split(' ');
        let (fstype, source) = (tail.next()?, tail.next()?);
        (point == mount_point && fstype == "ext4" && source.starts_with("/dev/loop"))
            .then(|| PathBuf::from(source))
    })
}

/// Whether a loop device is still attached to `image`: then a filesystem of it is still
/// alive somewhere (a session process that has not finished exiting holds a mount of it),
/// with writes that may not be in the file yet.
pub fn image_in_use(image: &Path) -> bool {
    let Ok(image) = image.canonicalize() else {
        return false;
    };
    let Ok(devices) = std::fs::read_dir("/sys/block") else {
        return false;
    };
    devices.flatten().any(|device| {
        std::fs::read_to_string(device.path().join("loop/backing_file"))
            .is_ok_and(|backing| Path::new(backing.trim_end()) == image)
    })
}

/// Mounts the disk on `device` (one [`mount_image`] mounted elsewhere: the same
/// filesystem) on `mount_point`, with the same options.
pub fn mount_device(device: &Path, mount_point: &Path) -> Result<(), DiskError> {
    mount(
        Some(device),
        mount_point,
        Some("ext4"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOATIME,
        Some(MOUNT_OPTIONS),
    )
    .map_err(|e| io("mount a disk on", mount_point)(e.into()))
}

/// Unmounts the disk at `mount_point`, detaching it at once even while something on the
/// host still has a file of it open (the loop device goes when that closes). A directory
/// with nothing mounted on it is left as it is.
pub fn unmount(mount_point: &Path) -> Result<(), DiskError> {
    match umount2(
        mount_point,
        MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW,
    ) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(io("unmount the disk at", mount_point)(e.into())),
    }
}

/// The mount points of disks mounted by sandcell processes that are gone (`is_gone`
/// says which pids are): their loop devices carry the owner's pid.
pub fn leftover_mounts(is_gone: impl Fn(u32) -> bool) -> Vec<PathBuf> {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    table
        .lines()
        .filter_map(|line| {
            let mount_point = line.split(' ').nth(4)?;
            // After the optional fields: " - FSTYPE SOURCE OPTIONS".
            let (_, tail) = line.split_once(" - ")?;
            let mut tail = tail.split(' ');
            let (fstype, source) = (tail.next()?, tail.next()?);
            if fstype != "ext4" || !source.starts_with("/dev/loop") {
                return None;
            }
            let owner = loop_owner(Path::new(source))?;
            is_gone(owner).then(|| crate::mounts::unescape(mount_point))
        })
        .collect()
}

/// The pid in the name of a loop device that a sandcell process attached.
fn loop_owner(device: &Path) -> Option<u32> {
    let file = File::open(device).ok()?;
    let mut info = std::mem::MaybeUninit::<LoopInfo64>::zeroed();
    // SAFETY: LOOP_GET_STATUS64 fills one `struct loop_info64`, laid out as `LoopInfo64`
    // (every bit pattern of which is valid).
    let read = unsafe { libc::ioctl(file.as_raw_fd(), LOOP_GET_STATUS64, info.as_mut_ptr()) };
    if read != 0 {
        return None;
    }
    // SAFETY: zeroed, then filled by the kernel; plain integers and byte arrays.
    let info = unsafe { info.assume_init() };
    let name = info.lo_file_name.split(|&b| b == 0).next()?;
    std::str::from_utf8(name)
        .ok()?
        .strip_prefix(OWNER_TAG)?
        .parse()
        .ok()
}

/// Size, free bytes and free inodes of the filesystem holding `dir`, as the session sees
/// them (blocks reserved for root are not counted as free).
pub fn usage(dir: &Path) -> Result<Usage, DiskError> {
    let stat = nix::sys::statvfs::statvfs(dir)
        .map_err(|e| io("inspect the filesystem of", dir)(e.into()))?;
    let fragment = stat.fragment_size();
    Ok(Usage {
        free_bytes: stat.blocks_available() * fragment,
        free_inodes: stat.files_available(),
    })
}

/// What is left on a filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub free_bytes: u64,
    pub free_inodes: u64,
}

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Attaches `backing` to a free loop device (`LOOP_CTL_GET_FREE`, then one
/// `LOOP_CONFIGURE`, retried when another process took the same device first). Returns
/// the device's path and its open descriptor: with `LO_FLAGS_AUTOCLEAR`, closing it
/// before anything mounts the device releases it.
fn attach_loop(
    backing: &File,
    image: &Path,
    read_only: bool,
) -> Result<(PathBuf, File), DiskError> {
    let control = File::open(LOOP_CONTROL).map_err(DiskError::NoLoopDevices)?;
    let mut name = [0u8; LO_NAME_SIZE];
    let tag = format!("{OWNER_TAG}{}", std::process::id());
    name[..tag.len()].copy_from_slice(tag.as_bytes());
    let fd = u32::try_from(backing.as_raw_fd())
        .map_err(|_| io("attach", image)(std::io::Error::from_raw_os_error(libc::EBADF)))?;
    let mut last = None;
    for _ in 0..LOOP_ATTEMPTS {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let number = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if number < 0 {
            return Err(io("find a free loop device for", image)(
                std::io::Error::last_os_error(),
            ));
        }
        let path = PathBuf::from(format!("/dev/loop{number}"));
        let device = open_loop_device(&path, number)?;
        let config = LoopConfig {
            fd,
            block_size: 0,
            info: LoopInfo64 {
                lo_device: 0,
                lo_inode: 0,
                lo_rdevice: 0,
                lo_offset: 0,
                lo_sizelimit: 0,
                lo_number: 0,
                lo_encrypt_type: 0,
                lo_encrypt_key_size: 0,
                lo_flags: if read_only {
                    LO_FLAGS_AUTOCLEAR | LO_FLAGS_READ_ONLY
                } else {
                    LO_FLAGS_AUTOCLEAR
                },
                lo_file_name: name,
                lo_crypt_name: [0; LO_NAME_SIZE],
                lo_encrypt_key: [0; 32],
                lo_init: [0; 2],
            },
            reserved: [0; 8],
        };
        // SAFETY: LOOP_CONFIGURE reads one `struct loop_config`, laid out as above.
        let configured = unsafe {
            libc::ioctl(
                device.as_raw_fd(),
                LOOP_CONFIGURE,
                &config as *const LoopConfig,
            )
        };
        if configured == 0 {
            return Ok((path, device));
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EBUSY) {
            return Err(io("attach a loop device to", image)(error));
        }
        last = Some(error);
    }
    Err(io("attach a loop device to", image)(last.unwrap_or_else(
        || std::io::Error::from_raw_os_error(libc::EBUSY),
    )))
}

/// Opens `/dev/loopN`, making the device node first where no device manager does
/// (a `/dev` that is not devtmpfs, as in some containers).
fn open_loop_device(path: &Path, number: libc::c_int) -> Result<File, DiskError> {
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
    };
    match open() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let minor = u64::try_from(number).unwrap_or(0);
            nix::sys::stat::mknod(
                path,
                nix::sys::stat::SFlag::S_IFBLK,
                nix::sys::stat::Mode::from_bits_truncate(0o600),
                nix::sys::stat::makedev(LOOP_MAJOR, minor),
            )
            .map_err(|e| io("make the device node", path)(e.into()))?;
            open().map_err(io("open", path))
        }
        Err(e) => Err(io("open", path)(e)),
        Ok(file) => match file.metadata() {
            Ok(meta) if meta.file_type().is_block_device() => Ok(file),
            _ => Err(io("open", path)(std::io::Error::other(
                "it is not a block device",
            ))),
        },
    }
}

/// `mkfs.ext4` on `PATH`, else in root's `sbin` directories.
fn mkfs_path() -> Result<PathBuf, DiskError> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join("mkfs.ext4"))
        .find(|candidate| candidate.is_file())
        .ok_or(DiskError::NoMkfs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loop_ioctl_structures_have_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }

    #[test]
    fn images_are_whole_blocks_and_not_too_small() {
        assert_eq!(image_size(16 << 20), 16 << 20);
        assert_eq!(image_size(1), MIN_SIZE_BYTES);
        assert_eq!(image_size((16 << 20) + 1), (16 << 20) + BLOCK_SIZE);
        assert_eq!(inode_count(16 << 20), 1024);
    }
}
