//! Step, before the template process runs: the template's view, a mount namespace of its
//! own in which the Python environment is at neutral paths. In it, an empty directory of
//! the host (`root`) holds a writable filesystem of the runtime's own (the small files:
//! the runtime's package, IPython's and matplotlib's directories, the venv's `bin` and
//! `pyvenv.cfg` rewritten for the new paths), with the read-only images of the
//! interpreter, the venv and the package layers mounted beneath it, and the rewritten
//! files bound over the venv's. Sessions are forked from the template, so they copy this
//! namespace, and their sandbox binds `root` whole: each of its mounts is a filesystem of
//! its own, whose root field in `/proc/self/mountinfo` is `/` (or a path inside it) and
//! whose source is a loop device, never a host path.
//!
//! Not for: making the images (the host does, `sandcell-session`), nor anything after the
//! exec: the sandbox proper is built later, per session, by [`crate::confine`].

use crate::error::{failed, SandboxError};
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What the template's view holds, in host terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewSpec {
    /// The empty directory the view's filesystems are mounted on.
    pub root: PathBuf,
    /// The loop device of the writable filesystem mounted at `root`.
    pub base: PathBuf,
    /// Loop devices of read-only filesystems, and the directories under `root` they are
    /// mounted on (in order: a later one may lie inside an earlier one).
    pub images: Vec<(PathBuf, PathBuf)>,
    /// Files or directories under `root` bound, read-only, over others under `root`.
    pub overlays: Vec<(PathBuf, PathBuf)>,
}

/// A [`ViewSpec`] turned into C strings, so that [`PreparedView::enter`] allocates
/// nothing: it runs in a child forked from a threaded process, before its exec.
#[derive(Debug)]
pub struct PreparedView {
    root: CString,
    base: CString,
    images: Vec<(CString, CString)>,
    overlays: Vec<(CString, CString)>,
}

const EXT4: &std::ffi::CStr = c"ext4";
const WRITABLE_OPTIONS: &std::ffi::CStr = c"errors=remount-ro";
const SAFE: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);

fn c_path(path: &Path) -> Result<CString, SandboxError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        failed(format!("use the path {}", path.display()))(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "it holds a NUL byte",
        ))
    })
}

impl PreparedView {
    pub fn new(spec: &ViewSpec) -> Result<Self, SandboxError> {
        let pairs = |list: &[(PathBuf, PathBuf)]| -> Result<Vec<(CString, CString)>, SandboxError> {
            list.iter()
                .map(|(from, to)| Ok((c_path(from)?, c_path(to)?)))
                .collect()
        };
        Ok(Self {
            root: c_path(&spec.root)?,
            base: c_path(&spec.base)?,
            images: pairs(&spec.images)?,
            overlays: pairs(&spec.overlays)?,
        })
    }

    /// In the template's process, between fork and exec: a new mount namespace with the
    /// view mounted. Only system calls, on strings made beforehand.
    pub fn enter(&self) -> nix::Result<()> {
        unshare(CloneFlags::CLONE_NEWNS)?;
        // Nothing mounted here may propagate back to the host's namespace.
        mount(
            None::<&str>,
            c"/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )?;
        mount(
            Some(self.base.as_c_str()),
            self.root.as_c_str(),
            Some(EXT4),
            SAFE | MsFlags::MS_NOATIME,
            Some(WRITABLE_OPTIONS),
        )?;
        for (device, target) in &self.images {
            mount(
                Some(device.as_c_str()),
                target.as_c_str(),
                Some(EXT4),
                SAFE | MsFlags::MS_RDONLY | MsFlags::MS_NOATIME,
                None::<&str>,
            )?;
        }
        for (source, target) in &self.overlays {
            mount(
                Some(source.as_c_str()),
                target.as_c_str(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )?;
            mount(
                None::<&str>,
                target.as_c_str(),
                None::<&str>,
                MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | SAFE,
                None::<&str>,
            )?;
        }
        Ok(())
    }
}
