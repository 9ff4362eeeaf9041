//! Working directories on filesystems of their own, so that the kernel enforces each
//! session's disk quota (bytes and inodes) at every write, between cells too.
//!
//! Decided once per runtime: when sandcell runs as root with a sandbox, on a kernel with
//! loop devices and with `mkfs.ext4`, every directory a session owns is a mounted image
//! (`sandcell_sandbox::disk`). Otherwise, and for directories a session is given (the
//! user's own, which must not be hidden under a mount), the host measures the directory
//! while a cell runs ([`crate::workdir`]), which misses writes between cells, stops
//! counting after 50,000 entries and does not count inodes.

use crate::error::SessionError;
use sandcell_sandbox::disk::{self, DiskError};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The file name prefix of a session's own temporary directory; the owner's pid follows,
/// so that a later sandcell can remove what a killed one left mounted.
const TEMP_PREFIX: &str = "sandcell-session-";
/// The mount point inside a temporary directory; the image lies beside it.
const TEMP_MOUNT: &str = "data";
const TEMP_IMAGE: &str = "data.disk";

/// How the working-directory quota of a runtime's own directories is enforced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskQuota {
    /// Each directory is a filesystem of the quota's size: the kernel refuses writes
    /// past it with ENOSPC, whenever they happen.
    Kernel,
    /// The host measures the directory while a cell runs; `why` the kernel cannot.
    Measured { why: String },
}

/// How long [`Disks::attach`] waits for an earlier filesystem of the same image to go.
const IMAGE_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Makes, remounts and removes the filesystems of working directories, and remembers
/// which directories have one.
#[derive(Debug)]
pub struct Disks {
    quota: DiskQuota,
    /// Mount points (canonical paths) this process made or attached.
    mounted: Mutex<HashSet<PathBuf>>,
}

impl Disks {
    /// Kernel quotas when this machine allows them (see the module's doc).
    pub(crate) fn detect() -> Self {
        let quota = match disk::check_available() {
            Ok(()) => DiskQuota::Kernel,
            Err(why) => DiskQuota::Measured {
                why: why.to_string(),
            },
        };
        Self::with(quota)
    }

    /// Measured quotas only, for sessions without a sandbox.
    pub(crate) fn measured(why: &str) -> Self {
        Self::with(DiskQuota::Measured { why: why.into() })
    }

    fn with(quota: DiskQuota) -> Self {
        Self {
            quota,
            mounted: Mutex::default(),
        }
    }

    pub fn quota(&self) -> &DiskQuota {
        &self.quota
    }

    /// Gives `dir`, a new empty directory, a filesystem of `quota_bytes` in a new image
    /// at `image`. Returns whether the kernel enforces the quota; `false`: the quota is
    /// measured, and nothing was made.
    pub fn create(&self, image: &Path, dir: &Path, quota_bytes: u64) -> Result<bool, SessionError> {
        if self.quota != DiskQuota::Kernel {
            return Ok(false);
        }
        disk::create_image(image, quota_bytes).map_err(disk_error)?;
        if let Err(error) = disk::mount_image(image, dir) {
            let _ = std::fs::remove_file(image);
            return Err(disk_error(error));
        }
        self.remember(dir);
        Ok(true)
    }

    /// Mounts again the filesystem `dir` had in `image` (after sandcell restarted or was
    /// killed), unless this process has it mounted already. Returns whether the kernel
    /// enforces the quota; `false` for a directory without an image, whose quota is
    /// measured.
    pub fn attach(&self, image: &Path, dir: &Path) -> Result<bool, SessionError> {
        if self.quota != DiskQuota::Kernel || !image.is_file() {
            return Ok(false);
        }
        if dir.canonicalize().is_ok_and(|dir| self.enforces(&dir)) {
            return Ok(true);
        }
        // Still mounted by a sandcell that was killed: mounted again, as ours.
        disk::unmount(dir).map_err(disk_error)?;
        // A second filesystem on the same image would not see what the first has not
        // written back yet (and would later be overwritten by it): wait for the first,
        // held by a session process that is still exiting, to go.
        let deadline = std::time::Instant::now() + IMAGE_RELEASE_WAIT;
        while disk::image_in_use(image) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        if disk::image_in_use(image) {
            tracing::warn!(
                "the disk image {} is still in use elsewhere; mounting it anyway",
                image.display()
            );
        }
        disk::mount_image(image, dir).map_err(disk_error)?;
        self.remember(dir);
        Ok(true)
    }

    /// Removes `dir` with its files, and the image at `image` if there is one: the
    /// filesystem is unmounted first (the kernel then releases the loop device).
    /// Blocking.
    pub fn remove(&self, image: &Path, dir: &Path) -> Result<(), SessionError> {
        if let Ok(canonical) = dir.canonicalize() {
            self.lock().remove(&canonical);
        }
        if self.quota == DiskQuota::Kernel {
            disk::unmount(dir).map_err(disk_error)?;
        }
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_at(dir)(e)),
            _ => {}
        }
        match std::fs::remove_file(image) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_at(image)(e)),
            _ => Ok(()),
        }
    }

    /// Unmounts every filesystem made or attached by [`Disks::create`] or
    /// [`Disks::attach`] (their images stay, to be attached again). Failures are logged.
    /// Blocking.
    pub fn unmount_all(&self) {
        let mounted: Vec<PathBuf> = self.lock().drain().collect();
        for dir in mounted {
            if let Err(e) = disk::unmount(&dir) {
                tracing::warn!("{e}");
            }
        }
    }

    /// Whether the kernel enforces the quota of `dir` (a canonical path).
    pub(crate) fn enforces(&self, dir: &Path) -> bool {
        self.lock().contains(dir)
    }

    /// A new temporary directory for a session that was given none; with a filesystem
    /// of its own when quotas are the kernel's.
    pub(crate) fn temporary(&self, quota_bytes: u64) -> Result<TempWorkDir, SessionError> {
        let prefix = format!("{TEMP_PREFIX}{}-", std::process::id());
        let dir = tempfile::Builder::new()
            .prefix(&prefix)
            .tempdir()
            .map_err(|e| SessionError::Io {
                path: std::env::temp_dir(),
                source: e,
            })?;
        if self.quota != DiskQuota::Kernel {
            let workdir = dir.path().to_path_buf();
            return Ok(TempWorkDir {
                _dir: dir,
                workdir,
                kernel_quota: false,
            });
        }
        let workdir = dir.path().join(TEMP_MOUNT);
        std::fs::create_dir(&workdir).map_err(|e| SessionError::Io {
            path: workdir.clone(),
            source: e,
        })?;
        let image = dir.path().join(TEMP_IMAGE);
        disk::create_image(&image, quota_bytes).map_err(disk_error)?;
        disk::mount_image(&image, &workdir).map_err(disk_error)?;
        Ok(TempWorkDir {
            _dir: dir,
            workdir,
            kernel_quota: true,
        })
    }

    /// Unmounts the disks of sandcell processes that are gone (killed before they could),
    /// and removes those that were temporary directories. Their images stay elsewhere: a
    /// service mounts its sessions' disks again when it starts ([`Disks::attach`]).
    /// Returns how many were unmounted. Blocking.
    pub(crate) fn remove_leftovers(&self) -> usize {
        if self.quota != DiskQuota::Kernel {
            return 0;
        }
        let gone = |pid: u32| pid != std::process::id() && !crate::isolation::process_exists(pid);
        let mut removed = 0;
        for mount_point in disk::leftover_mounts(gone) {
            if let Err(e) = disk::unmount(&mount_point) {
                tracing::warn!("{e}");
                continue;
            }
            removed += 1;
            let Some(dir) = mount_point.parent() else {
                continue;
            };
            let temporary = dir.parent() == Some(std::env::temp_dir().as_path())
                && mount_point.file_name() == Some(TEMP_MOUNT.as_ref())
                && dir
                    .file_name()
                    .and_then(|name| name.to_str())
                    .and_then(temporary_owner)
                    .is_some();
            if temporary {
                if let Err(e) = std::fs::remove_dir_all(dir) {
                    tracing::warn!("cannot remove the leftover {}: {e}", dir.display());
                }
            }
        }
        removed
    }

    fn remember(&self, dir: &Path) {
        if let Ok(canonical) = dir.canonicalize() {
            self.lock().insert(canonical);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<PathBuf>> {
        self.mounted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A session's own temporary working directory; unmounted and removed on drop.
#[derive(Debug)]
pub(crate) struct TempWorkDir {
    /// Held for its drop, which removes it (and the image in it).
    _dir: tempfile::TempDir,
    /// The session's `/mnt/data`: the mount point inside `dir`, or `dir` itself.
    pub(crate) workdir: PathBuf,
    pub(crate) kernel_quota: bool,
}

impl Drop for TempWorkDir {
    fn drop(&mut self) {
        if self.kernel_quota {
            if let Err(e) = disk::unmount(&self.workdir) {
                tracing::warn!("{e}");
            }
        }
        // `_dir` (the image with it) is removed next, by its own drop.
    }
}

/// The owner of a temporary directory named `sandcell-session-PID-…`.
fn temporary_owner(name: &str) -> Option<u32> {
    let (owner, _) = name.strip_prefix(TEMP_PREFIX)?.split_once('-')?;
    owner.parse().ok()
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> SessionError {
    let path = path.to_path_buf();
    move |source| SessionError::Io { path, source }
}

fn disk_error(error: DiskError) -> SessionError {
    SessionError::Disk(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_directories_name_their_owner() {
        assert_eq!(temporary_owner("sandcell-session-4321-AbC9"), Some(4321));
        for other in ["sandcell-session-x-1", "sandcell-session-12", "other-12-3"] {
            assert_eq!(temporary_owner(other), None, "{other}");
        }
    }
}
