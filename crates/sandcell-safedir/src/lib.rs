//! Host-side access to a session's files that never follows a symbolic link.
//!
//! A session's working directory (its `/mnt/data`) belongs to the sandboxed code: it can
//! plant a symbolic link under any name, swap a directory for a link at any moment, and
//! make a FIFO where the host expects a file. The host often runs as root, so one read,
//! write, chown or delete by name through such a link reaches a host file. [`SafeDir`] is
//! the one way host code touches those files: it holds the directory open and resolves
//! every path beneath it without following a link on any part, with no window between a
//! check and a use:
//!
//! * `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS` where
//!   the kernel has it (Linux 5.6+; probed once per process);
//! * else a walk opening one part at a time relative to the directory before it, with
//!   `O_NOFOLLOW`.
//!
//! Links are refused wherever they are, even ones that stay inside the directory. Files
//! are only ever read when they are regular files (a FIFO would block the host), and
//! replaced by renaming a new file over them (never written through, so a hard link
//! cannot carry a write elsewhere either). Files and directories sandcell creates belong
//! to the directory's owner, so the sandboxed user can change and delete them.
//!
//! It is not for the host's own paths (the data directory, `--out`, the files a user
//! names on the command line): the root itself is opened by name, following links, as
//! the person who gave it meant. Everything here blocks; async callers run it on a
//! blocking thread.

mod path;
mod resolve;

pub use path::SafePath;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, renameat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};
use resolve::Resolver;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// Why a file in a session directory could not be used, in one sentence.
#[derive(Debug, thiserror::Error)]
pub enum SafeDirError {
    #[error("{0}")]
    InvalidPath(String),
    #[error("{0} goes through a symbolic link, and sandcell does not follow links in a session's files.")]
    Symlink(String),
    #[error("There is no file {0}.")]
    NotFound(String),
    #[error("{0} already exists.")]
    AlreadyExists(String),
    #[error("{0} is a directory, not a file.")]
    IsDirectory(String),
    #[error("{0} is not a regular file.")]
    NotRegular(String),
    #[error("{0} cannot be used: permission denied.")]
    PermissionDenied(String),
    #[error("{0} does not fit: the working directory is full (it reached its disk quota); delete files there or use a session with a larger disk quota.")]
    NoSpace(String),
    #[error("{path} cannot be used: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A regular file, as one `stat` saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the directory (exactly the bytes of the names).
    pub path: PathBuf,
    pub size: u64,
    /// Bytes of disk the file occupies (a sparse file counts for what it uses).
    pub allocated: u64,
    pub modified: SystemTime,
    pub inode: u64,
}

/// How far [`SafeDir::files`] looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkLimits {
    /// Entries of any kind looked at, in all (a cell can make millions).
    pub max_entries: usize,
    /// Levels of subdirectories descended into.
    pub max_depth: usize,
}

/// The regular files beneath a directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub files: Vec<Entry>,
    /// False when a limit stopped the walk before it saw everything.
    pub complete: bool,
}

/// What writing a file does when its name is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// Refuse ([`SafeDirError::AlreadyExists`]), whatever is there, link or not.
    New,
    /// Replace a regular file (by renaming the new one over it); refuse a link or a directory.
    Replace,
}

/// A directory held open, whose contents are reached without following links.
#[derive(Debug)]
pub struct SafeDir {
    root: OwnedFd,
    /// How paths are shown in errors: the root as the reader knows it.
    shown_as: String,
    resolver: Resolver,
}

impl SafeDir {
    /// Opens `root` (following links in `root` itself: it is the caller's own path).
    pub fn open(root: &Path) -> Result<Self, SafeDirError> {
        let root_fd = openat(
            None,
            root,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| SafeDirError::Io {
            path: root.display().to_string(),
            source: errno.into(),
        })?;
        // SAFETY: `openat` has just returned this descriptor and nothing else owns it.
        let root_fd = unsafe { OwnedFd::from_raw_fd(root_fd) };
        let resolver = Resolver::for_this_kernel(&root_fd);
        Ok(Self {
            root: root_fd,
            shown_as: root.display().to_string(),
            resolver,
        })
    }

    /// The same directory, resolving with `resolver` whatever this kernel has.
    #[cfg(test)]
    fn with_resolver(mut self, resolver: Resolver) -> Self {
        self.resolver = resolver;
        self
    }

    /// Shows paths in errors under `prefix` (such as `/mnt/data`) instead of the root's
    /// host path.
    pub fn shown_as(mut self, prefix: impl Into<String>) -> Self {
        self.shown_as = prefix.into();
        self
    }

    /// Opens a regular file for reading.
    pub fn open_file(&self, path: &SafePath) -> Result<(File, Entry), SafeDirError> {
        let parent = self.parent(path, false)?;
        let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
        let fd = open_at(parent.as_raw_fd(), path.file_name(), flags)
            .map_err(|errno| self.classify(&parent, path, errno))?;
        let stat = fstat(fd.as_raw_fd()).map_err(|errno| self.io(path, errno))?;
        match kind(&stat) {
            SFlag::S_IFREG => {}
            SFlag::S_IFDIR => return Err(SafeDirError::IsDirectory(self.shown(path))),
            _ => return Err(SafeDirError::NotRegular(self.shown(path))),
        }
        // Reads must block like any file's: only opening a FIFO was not allowed to.
        nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::F_SETFL(OFlag::empty()))
            .map_err(|errno| self.io(path, errno))?;
        Ok((File::from(fd), entry(path_buf(path), &stat)))
    }

    /// Writes `bytes` as the file `path`, creating missing directories.
    pub fn write_file(
        &self,
        path: &SafePath,
        bytes: &[u8],
        create: Create,
    ) -> Result<Entry, SafeDirError> {
        self.write_with(path, create, |file| file.write_all(bytes))
    }

    /// Copies the host file `source` (the caller's own path, links followed) to `path`.
    pub fn copy_in(
        &self,
        source: &Path,
        path: &SafePath,
        create: Create,
    ) -> Result<Entry, SafeDirError> {
        let host_error = |source_error| SafeDirError::Io {
            path: source.display().to_string(),
            source: source_error,
        };
        let mut input = File::open(source).map_err(host_error)?;
        if !input.metadata().map_err(host_error)?.is_file() {
            return Err(SafeDirError::NotRegular(source.display().to_string()));
        }
        self.write_from(&mut input, path, create)
    }

    /// Writes what `source` reads as the file `path`, creating missing directories.
    pub fn write_from(
        &self,
        source: &mut impl std::io::Read,
        path: &SafePath,
        create: Create,
    ) -> Result<Entry, SafeDirError> {
        self.write_with(path, create, |file| std::io::copy(source, file).map(|_| ()))
    }

    /// Moves the fully written host file `staged` (the caller's own) to `path`, creating
    /// missing directories and replacing a regular file there; a link or a directory
    /// there is refused. When the directory is another filesystem (a session's disk of
    /// its own), the file is copied in, within that filesystem's space, and `staged`
    /// removed.
    pub fn move_in(&self, staged: &Path, path: &SafePath) -> Result<Entry, SafeDirError> {
        let host_error = |source| SafeDirError::Io {
            path: staged.display().to_string(),
            source,
        };
        if let Some((uid, gid)) = self.new_owner(path)? {
            std::os::unix::fs::lchown(staged, Some(uid), Some(gid)).map_err(host_error)?;
        }
        std::fs::set_permissions(staged, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .map_err(host_error)?;
        let stat = nix::sys::stat::lstat(staged).map_err(|errno| host_error(errno.into()))?;
        let parent = self.parent(path, true)?;
        self.refuse_link_or_directory(&parent, path)?;
        match renameat(None, staged, Some(parent.as_raw_fd()), path.file_name()) {
            Ok(()) => Ok(entry(path_buf(path), &stat)),
            Err(Errno::EXDEV) => {
                let mut input = File::open(staged).map_err(host_error)?;
                let copied = self.write_from(&mut input, path, Create::Replace);
                std::fs::remove_file(staged).map_err(host_error)?;
                copied
            }
            Err(errno) => Err(self.classify(&parent, path, errno)),
        }
    }

    /// Removes a file, or a link (which is not followed); never a directory.
    pub fn remove_file(&self, path: &SafePath) -> Result<(), SafeDirError> {
        let parent = self.parent(path, false)?;
        let stat = fstatat(
            Some(parent.as_raw_fd()),
            path.file_name(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|errno| self.classify(&parent, path, errno))?;
        if kind(&stat) == SFlag::S_IFDIR {
            return Err(SafeDirError::IsDirectory(self.shown(path)));
        }
        unlinkat(
            Some(parent.as_raw_fd()),
            path.file_name(),
            UnlinkatFlags::NoRemoveDir,
        )
        .map_err(|errno| self.classify(&parent, path, errno))
    }

    /// Every regular file beneath the directory, in no particular order. Links are not
    /// followed; a subdirectory that turned into something else meanwhile is skipped.
    pub fn files(&self, limits: WalkLimits) -> Listing {
        let mut listing = Listing {
            files: Vec::new(),
            complete: true,
        };
        let mut seen = 0;
        // A new open file description, not a duplicate of `root`: reading a directory
        // moves the offset its descriptors share.
        if let Ok(root) = open_at(
            self.root.as_raw_fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        ) {
            walk_into(root, Path::new(""), 0, limits, &mut seen, &mut listing);
        }
        listing
    }

    /// Creates the file and hands it to `fill`; with [`Create::Replace`] the new file is
    /// written under a temporary name and renamed over `path`, so nothing is ever written
    /// through a name the sandboxed code controls.
    fn write_with(
        &self,
        path: &SafePath,
        create: Create,
        fill: impl FnOnce(&mut File) -> std::io::Result<()>,
    ) -> Result<Entry, SafeDirError> {
        let parent = self.parent(path, true)?;
        let owner = self.new_owner(path)?;
        let name = match create {
            Create::New => path.file_name().to_owned(),
            Create::Replace => {
                self.refuse_link_or_directory(&parent, path)?;
                self.temporary_name(&parent, path)?
            }
        };
        let created = open_at(
            parent.as_raw_fd(),
            &name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL,
        )
        .map_err(|errno| self.classify(&parent, path, errno))?;
        let mut file = File::from(created);
        let written = owner
            .map_or(Ok(()), |(uid, gid)| {
                std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
            })
            .and_then(|()| fill(&mut file));
        let placed = match written {
            // The directory's filesystem is full (a session's disk quota).
            Err(source) if is_no_space(&source) => Err(SafeDirError::NoSpace(self.shown(path))),
            Err(source) => Err(SafeDirError::Io {
                path: self.shown(path),
                source,
            }),
            Ok(()) if create == Create::Replace => renameat(
                Some(parent.as_raw_fd()),
                name.as_str(),
                Some(parent.as_raw_fd()),
                path.file_name(),
            )
            .map_err(|errno| self.classify(&parent, path, errno)),
            Ok(()) => Ok(()),
        };
        if let Err(error) = placed {
            // Ours, just created with O_EXCL in a directory we hold open; a failed unlink
            // leaves a partial file the sandboxed code can see and delete.
            let _ = unlinkat(
                Some(parent.as_raw_fd()),
                name.as_str(),
                UnlinkatFlags::NoRemoveDir,
            );
            return Err(error);
        }
        let stat = fstat(file.as_raw_fd()).map_err(|errno| self.io(path, errno))?;
        Ok(entry(path_buf(path), &stat))
    }

    /// The directory holding `path`'s last part, reached without following links; with
    /// `create`, missing directories are made (owned like the root) on the way.
    fn parent(&self, path: &SafePath, create: bool) -> Result<OwnedFd, SafeDirError> {
        let parents = path.parents();
        if parents.is_empty() {
            self.root.try_clone().map_err(|e| SafeDirError::Io {
                path: self.shown_as.clone(),
                source: e,
            })
        } else if create {
            self.walk(path, parents, true)
        } else {
            match self.resolver {
                Resolver::Openat2 => {
                    resolve::beneath(&self.root, &parents.join("/")).map_err(|errno| match errno {
                        // Links give ELOOP here: ENOTDIR means a part is a plain file.
                        Errno::ENOTDIR => SafeDirError::NotFound(self.shown(path)),
                        errno => self.classify_errno(path, errno),
                    })
                }
                Resolver::Walk => self.walk(path, parents, false),
            }
        }
    }

    /// Opens `parents` one at a time, each relative to the one before, with `O_NOFOLLOW`.
    fn walk(
        &self,
        path: &SafePath,
        parents: &[String],
        create: bool,
    ) -> Result<OwnedFd, SafeDirError> {
        let mut dir = self.root.try_clone().map_err(|e| SafeDirError::Io {
            path: self.shown_as.clone(),
            source: e,
        })?;
        let owner = if create { self.new_owner(path)? } else { None };
        let directory = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
        for part in parents {
            let next = match open_at(dir.as_raw_fd(), part, directory) {
                Err(Errno::ENOENT) if create => {
                    match mkdirat(
                        Some(dir.as_raw_fd()),
                        part.as_str(),
                        Mode::from_bits_truncate(0o755),
                    ) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(errno) => return Err(self.classify_errno(path, errno)),
                    }
                    let made = open_at(dir.as_raw_fd(), part, directory)
                        .map_err(|errno| self.classify_part(&dir, part, path, errno))?;
                    if let Some((uid, gid)) = owner {
                        std::os::unix::fs::fchown(&made, Some(uid), Some(gid)).map_err(|e| {
                            SafeDirError::Io {
                                path: self.shown(path),
                                source: e,
                            }
                        })?;
                    }
                    made
                }
                Err(errno) => return Err(self.classify_part(&dir, part, path, errno)),
                Ok(next) => next,
            };
            dir = next;
        }
        Ok(dir)
    }

    /// Who a new file or directory must belong to: the root's owner, when sandcell runs
    /// as root and so creates root's files otherwise. Read each time: the session's
    /// directory is handed to the sandbox user after it is first opened.
    fn new_owner(&self, path: &SafePath) -> Result<Option<(u32, u32)>, SafeDirError> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(None);
        }
        let stat = fstat(self.root.as_raw_fd()).map_err(|errno| self.io(path, errno))?;
        Ok(Some((stat.st_uid, stat.st_gid)))
    }

    /// A link where a file will be renamed to would be replaced, not followed; but a
    /// link is refused wherever it is, here too.
    fn refuse_link_or_directory(
        &self,
        parent: &OwnedFd,
        path: &SafePath,
    ) -> Result<(), SafeDirError> {
        match fstatat(
            Some(parent.as_raw_fd()),
            path.file_name(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(stat) if kind(&stat) == SFlag::S_IFLNK => {
                Err(SafeDirError::Symlink(self.shown(path)))
            }
            Ok(stat) if kind(&stat) == SFlag::S_IFDIR => {
                Err(SafeDirError::IsDirectory(self.shown(path)))
            }
            _ => Ok(()),
        }
    }

    /// A name beside `path` that nothing has: the sandboxed code may have taken any name
    /// it can guess, so a taken one is skipped (creation uses O_EXCL anyway).
    fn temporary_name(&self, parent: &OwnedFd, path: &SafePath) -> Result<String, SafeDirError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        for _ in 0..100 {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let name = format!(".sandcell-{}-{n}.tmp", std::process::id());
            let taken = fstatat(
                Some(parent.as_raw_fd()),
                name.as_str(),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            );
            if matches!(taken, Err(Errno::ENOENT)) {
                return Ok(name);
            }
        }
        Err(SafeDirError::AlreadyExists(self.shown(path)))
    }

    fn shown(&self, path: &SafePath) -> String {
        format!("{}/{path}", self.shown_as.trim_end_matches('/'))
    }

    fn io(&self, path: &SafePath, errno: Errno) -> SafeDirError {
        SafeDirError::Io {
            path: self.shown(path),
            source: errno.into(),
        }
    }

    /// The error for a failed operation on `path`'s last part in `parent`, looking at
    /// what is actually there when the error alone cannot tell (a link and a file both
    /// give `ENOTDIR` to a directory open).
    fn classify(&self, parent: &OwnedFd, path: &SafePath, errno: Errno) -> SafeDirError {
        self.classify_part(parent, path.file_name(), path, errno)
    }

    fn classify_part(
        &self,
        dir: &OwnedFd,
        part: &str,
        path: &SafePath,
        errno: Errno,
    ) -> SafeDirError {
        if errno != Errno::ENOTDIR {
            return self.classify_errno(path, errno);
        }
        match fstatat(Some(dir.as_raw_fd()), part, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) if kind(&stat) == SFlag::S_IFLNK => SafeDirError::Symlink(self.shown(path)),
            Ok(stat) if part == path.file_name() && kind(&stat) != SFlag::S_IFDIR => {
                SafeDirError::NotRegular(self.shown(path))
            }
            _ => SafeDirError::NotFound(self.shown(path)),
        }
    }

    fn classify_errno(&self, path: &SafePath, errno: Errno) -> SafeDirError {
        let shown = self.shown(path);
        match errno {
            // ELOOP: a link where O_NOFOLLOW or RESOLVE_NO_SYMLINKS met it; EXDEV: openat2
            // saw the path leave the directory, which only a link can do.
            Errno::ELOOP | Errno::EXDEV => SafeDirError::Symlink(shown),
            Errno::ENOENT | Errno::ENOTDIR => SafeDirError::NotFound(shown),
            Errno::EEXIST => SafeDirError::AlreadyExists(shown),
            Errno::EISDIR => SafeDirError::IsDirectory(shown),
            Errno::EACCES | Errno::EPERM => SafeDirError::PermissionDenied(shown),
            Errno::ENOSPC | Errno::EDQUOT => SafeDirError::NoSpace(shown),
            other => SafeDirError::Io {
                path: shown,
                source: other.into(),
            },
        }
    }
}

fn is_no_space(error: &std::io::Error) -> bool {
    error
        .raw_os_error()
        .is_some_and(|code| code == Errno::ENOSPC as i32 || code == Errno::EDQUOT as i32)
}

/// `openat(2)` of one name relative to `dir`; a link as `name` is refused, never followed.
fn open_at(dir: RawFd, name: &str, flags: OFlag) -> nix::Result<OwnedFd> {
    let fd = openat(
        Some(dir),
        name,
        flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )?;
    // SAFETY: `openat` has just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn kind(stat: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT
}

fn path_buf(path: &SafePath) -> PathBuf {
    path.parts().iter().collect()
}

fn entry(path: PathBuf, stat: &FileStat) -> Entry {
    let modified = SystemTime::UNIX_EPOCH
        .checked_add(Duration::new(
            u64::try_from(stat.st_mtime).unwrap_or(0),
            u32::try_from(stat.st_mtime_nsec).unwrap_or(0),
        ))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    Entry {
        path,
        size: u64::try_from(stat.st_size).unwrap_or(0),
        allocated: u64::try_from(stat.st_blocks)
            .unwrap_or(0)
            .saturating_mul(512),
        modified,
        inode: stat.st_ino,
    }
}

/// Adds the regular files beneath `dir` to `listing`; subdirectories are opened one name
/// at a time with `O_NOFOLLOW`, relative to the directory already open.
fn walk_into(
    dir: OwnedFd,
    prefix: &Path,
    depth: usize,
    limits: WalkLimits,
    seen: &mut usize,
    listing: &mut Listing,
) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(mut entries) = Dir::from(dir) else {
        return;
    };
    let fd = entries.as_raw_fd();
    let mut subdirs = Vec::new();
    for dirent in entries.iter().flatten() {
        let name = dirent.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        if *seen >= limits.max_entries {
            listing.complete = false;
            return;
        }
        *seen += 1;
        let Ok(stat) = fstatat(Some(fd), name, AtFlags::AT_SYMLINK_NOFOLLOW) else {
            continue;
        };
        let path = prefix.join(std::ffi::OsStr::from_bytes(name.to_bytes()));
        match kind(&stat) {
            SFlag::S_IFREG => listing.files.push(entry(path, &stat)),
            SFlag::S_IFDIR if depth < limits.max_depth => subdirs.push((name.to_owned(), path)),
            SFlag::S_IFDIR => listing.complete = false,
            _ => {}
        }
    }
    for (name, path) in subdirs {
        let opened = openat(
            Some(fd),
            name.as_c_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        );
        if let Ok(subdir) = opened {
            // SAFETY: `openat` has just returned this descriptor and nothing else owns it.
            let subdir = unsafe { OwnedFd::from_raw_fd(subdir) };
            walk_into(subdir, &path, depth + 1, limits, seen, listing);
        }
    }
}

#[cfg(test)]
mod tests;
