//! Files in a session's working directory (`/mnt/data`), reached safely from the host.
//!
//! The sandboxed code owns that directory: it can plant symbolic links anywhere in it and
//! swap a directory for a link at any moment. So a path is never resolved by name from
//! the host: each part is opened relative to the directory before it with `O_NOFOLLOW`
//! (`openat`), which refuses a link wherever it appears, with no window between a check
//! and a use. Links are not followed at all, even ones that stay inside the directory.
//! Everything here blocks; callers run it on a blocking thread.

use crate::error::ServiceError;
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, renameat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};
use serde::Serialize;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use utoipa::ToSchema;

/// A listing stops after this many entries.
const MAX_ENTRIES: usize = 50_000;
/// …and does not descend deeper than this.
const MAX_DEPTH: usize = 64;
/// Longest name of one part, and of a whole path (Linux's NAME_MAX and PATH_MAX).
const MAX_NAME: usize = 255;
const MAX_PATH: usize = 4096;

/// A file in the working directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FileInfo {
    /// Relative to `/mnt/data`, parts separated by `/`.
    pub path: String,
    pub size: u64,
    /// Guessed from the name.
    pub mime: String,
    /// Last modification, RFC 3339, UTC.
    pub modified: String,
}

/// A checked path inside a working directory: relative, without `.`, `..` or empty parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePath {
    parts: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{0}")]
    InvalidPath(String),
    #[error("{0} goes through a symbolic link, and sandcell does not follow links in /mnt/data.")]
    Symlink(String),
    #[error("There is no file {0} in /mnt/data.")]
    NotFound(String),
    #[error("{0} is a directory, not a file.")]
    IsDirectory(String),
    #[error("{0} is not a regular file.")]
    NotRegular(String),
    #[error("{0} cannot be used: permission denied.")]
    PermissionDenied(String),
    #[error("{path} cannot be used: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl From<FileError> for ServiceError {
    fn from(error: FileError) -> Self {
        match &error {
            FileError::InvalidPath(_) | FileError::Symlink(_) => {
                ServiceError::InvalidPath(error.to_string())
            }
            FileError::NotFound(_) => ServiceError::NotFound(error.to_string()),
            FileError::IsDirectory(_)
            | FileError::NotRegular(_)
            | FileError::PermissionDenied(_) => ServiceError::Conflict(error.to_string()),
            FileError::Io { .. } => ServiceError::internal("A file operation failed", &error),
        }
    }
}

impl FilePath {
    /// Checks a path as a client gave it (already percent-decoded).
    pub fn parse(raw: &str) -> Result<Self, FileError> {
        let invalid = |why: &str| {
            Err(FileError::InvalidPath(format!(
                "The file path {raw:?} {why}."
            )))
        };
        if raw.is_empty() {
            return invalid("is empty");
        }
        if raw.starts_with('/') {
            return invalid("is absolute; give it relative to /mnt/data");
        }
        if raw.len() > MAX_PATH {
            return invalid("is too long");
        }
        if raw.contains('\0') {
            return invalid("contains a NUL character");
        }
        let mut parts = Vec::new();
        for part in raw.split('/') {
            match part {
                "" => return invalid("has an empty part (`//` or a trailing `/`)"),
                "." | ".." => return invalid("contains `.` or `..`"),
                _ if part.len() > MAX_NAME => return invalid("has a part longer than 255 bytes"),
                _ => parts.push(part.to_owned()),
            }
        }
        Ok(Self { parts })
    }

    fn name(&self) -> &str {
        self.parts.last().map_or("", String::as_str)
    }

    fn parents(&self) -> &[String] {
        &self.parts[..self.parts.len().saturating_sub(1)]
    }

    /// The last part, for `Content-Disposition`.
    pub fn file_name(&self) -> &str {
        self.name()
    }
}

impl std::fmt::Display for FilePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.parts.join("/"))
    }
}

/// A session's working directory on the host.
#[derive(Debug, Clone)]
pub struct WorkDir {
    root: PathBuf,
}

impl WorkDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Every regular file, sorted by path. Links are not followed; names that are not
    /// UTF-8 are left out (they could not be asked for by name).
    pub fn list(&self) -> Result<Vec<FileInfo>, FileError> {
        let root = self.open_root()?;
        let mut files = Vec::new();
        list_into(root, "", 0, &mut files);
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    /// Opens a regular file for reading.
    pub fn open(&self, path: &FilePath) -> Result<(std::fs::File, FileInfo), FileError> {
        let parent = self.walk(path, false)?;
        let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
        let fd = open_at(parent.as_raw_fd(), path.name(), flags)
            .map_err(|errno| classify(&parent, path, errno))?;
        let stat = fstat(fd.as_raw_fd()).map_err(|e| io_error(path, e))?;
        match kind(&stat) {
            SFlag::S_IFREG => {}
            SFlag::S_IFDIR => return Err(FileError::IsDirectory(path.to_string())),
            _ => return Err(FileError::NotRegular(path.to_string())),
        }
        Ok((std::fs::File::from(fd), info(&path.to_string(), &stat)))
    }

    /// Removes a file (or a link, which is not followed).
    pub fn remove(&self, path: &FilePath) -> Result<(), FileError> {
        let parent = self.walk(path, false)?;
        let stat = fstatat(
            Some(parent.as_raw_fd()),
            path.name(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|errno| classify(&parent, path, errno))?;
        if kind(&stat) == SFlag::S_IFDIR {
            return Err(FileError::IsDirectory(path.to_string()));
        }
        unlinkat(
            Some(parent.as_raw_fd()),
            path.name(),
            UnlinkatFlags::NoRemoveDir,
        )
        .map_err(|errno| classify(&parent, path, errno))
    }

    /// Moves a fully written temporary file to `path` (creating missing directories),
    /// replacing any file there (a link there is refused). The file and new directories get the working
    /// directory's owner, so the sandboxed code can change them like its own.
    pub fn place(
        &self,
        path: &FilePath,
        staged: tempfile::NamedTempFile,
    ) -> Result<FileInfo, FileError> {
        let owner = self.owner()?;
        let file = staged.as_file();
        std::os::unix::fs::fchown(file, Some(owner.st_uid), Some(owner.st_gid)).map_err(|e| {
            FileError::Io {
                path: path.to_string(),
                source: e,
            }
        })?;
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .map_err(|e| FileError::Io {
                path: path.to_string(),
                source: e,
            })?;
        let parent = self.walk(path, true)?;
        // Renaming would replace a link, not write through it; but a link is refused
        // wherever it is, here too.
        if fstatat(
            Some(parent.as_raw_fd()),
            path.name(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .is_ok_and(|stat| kind(&stat) == SFlag::S_IFLNK)
        {
            return Err(FileError::Symlink(path.to_string()));
        }
        renameat(None, staged.path(), Some(parent.as_raw_fd()), path.name())
            .map_err(|errno| classify(&parent, path, errno))?;
        // The name is gone from the staging directory: nothing is left to clean up.
        let (file, _) = staged.keep().map_err(|e| FileError::Io {
            path: path.to_string(),
            source: e.error,
        })?;
        let stat = fstat(file.as_raw_fd()).map_err(|e| io_error(path, e))?;
        Ok(info(&path.to_string(), &stat))
    }

    fn open_root(&self) -> Result<OwnedFd, FileError> {
        // The root itself is the server's own directory: following links to it is fine.
        let fd = openat(
            None,
            &self.root,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| FileError::Io {
            path: self.root.display().to_string(),
            source: errno.into(),
        })?;
        // SAFETY: `openat` has just returned this descriptor and nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn owner(&self) -> Result<FileStat, FileError> {
        let root = self.open_root()?;
        fstat(root.as_raw_fd()).map_err(|errno| FileError::Io {
            path: self.root.display().to_string(),
            source: errno.into(),
        })
    }

    /// The directory that holds `path`'s last part, reached part by part without
    /// following links; with `create`, missing directories are made on the way.
    fn walk(&self, path: &FilePath, create: bool) -> Result<OwnedFd, FileError> {
        let mut dir = self.open_root()?;
        let owner = if create { Some(self.owner()?) } else { None };
        for (depth, part) in path.parents().iter().enumerate() {
            let so_far = FilePath {
                parts: path.parts[..=depth].to_vec(),
            };
            let next = match open_at(dir.as_raw_fd(), part, OFlag::O_RDONLY | OFlag::O_DIRECTORY) {
                Err(Errno::ENOENT) if create => {
                    match mkdirat(
                        Some(dir.as_raw_fd()),
                        part.as_str(),
                        Mode::from_bits_truncate(0o755),
                    ) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(errno) => return Err(classify(&dir, &so_far, errno)),
                    }
                    let made = open_at(dir.as_raw_fd(), part, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
                        .map_err(|errno| classify(&dir, &so_far, errno))?;
                    if let Some(owner) = &owner {
                        std::os::unix::fs::fchown(&made, Some(owner.st_uid), Some(owner.st_gid))
                            .map_err(|e| FileError::Io {
                                path: so_far.to_string(),
                                source: e,
                            })?;
                    }
                    made
                }
                Err(errno) => return Err(classify(&dir, &so_far, errno)),
                Ok(next) => next,
            };
            dir = next;
        }
        Ok(dir)
    }
}

/// `openat(2)` relative to `dir`; a symbolic link as `name` is refused, never followed.
fn open_at(dir: RawFd, name: &str, flags: OFlag) -> nix::Result<OwnedFd> {
    let fd = openat(
        Some(dir),
        name,
        flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: `openat` has just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The error for a failed operation on `path`'s last part in `dir`, looking at what is
/// actually there when the error alone cannot tell (a link and a file both give
/// `ENOTDIR` to a directory open).
fn classify(dir: &OwnedFd, path: &FilePath, errno: Errno) -> FileError {
    let shown = path.to_string();
    match errno {
        Errno::ELOOP => FileError::Symlink(shown),
        Errno::ENOENT => FileError::NotFound(shown),
        Errno::EISDIR => FileError::IsDirectory(shown),
        Errno::EACCES | Errno::EPERM => FileError::PermissionDenied(shown),
        Errno::ENOTDIR => {
            match fstatat(
                Some(dir.as_raw_fd()),
                path.name(),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                Ok(stat) if kind(&stat) == SFlag::S_IFLNK => FileError::Symlink(shown),
                Ok(_) => FileError::NotRegular(shown),
                Err(_) => FileError::NotFound(shown),
            }
        }
        other => io_error(path, other),
    }
}

fn io_error(path: &FilePath, errno: Errno) -> FileError {
    FileError::Io {
        path: path.to_string(),
        source: errno.into(),
    }
}

fn kind(stat: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT
}

fn info(path: &str, stat: &FileStat) -> FileInfo {
    let modified = SystemTime::UNIX_EPOCH
        .checked_add(Duration::new(
            u64::try_from(stat.st_mtime).unwrap_or(0),
            u32::try_from(stat.st_mtime_nsec).unwrap_or(0),
        ))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    FileInfo {
        path: path.to_owned(),
        size: u64::try_from(stat.st_size).unwrap_or(0),
        mime: mime_guess::from_path(Path::new(path))
            .first_raw()
            .unwrap_or("application/octet-stream")
            .to_owned(),
        modified: humantime::format_rfc3339_millis(modified).to_string(),
    }
}

/// Adds the regular files beneath `dir` to `files`; subdirectories are opened the same
/// careful way, and ones that turned into something else meanwhile are skipped.
fn list_into(dir: OwnedFd, prefix: &str, depth: usize, files: &mut Vec<FileInfo>) {
    let Ok(mut entries) = Dir::from(dir) else {
        return;
    };
    let fd = entries.as_raw_fd();
    let mut subdirs = Vec::new();
    for entry in entries.iter().flatten() {
        if files.len() >= MAX_ENTRIES {
            return;
        }
        let Ok(name) = entry.file_name().to_str() else {
            continue;
        };
        if name == "." || name == ".." {
            continue;
        }
        let Ok(stat) = fstatat(Some(fd), name, AtFlags::AT_SYMLINK_NOFOLLOW) else {
            continue;
        };
        let path = format!("{prefix}{name}");
        match kind(&stat) {
            SFlag::S_IFREG => files.push(info(&path, &stat)),
            SFlag::S_IFDIR if depth < MAX_DEPTH => subdirs.push((name.to_owned(), path)),
            _ => {}
        }
    }
    for (name, path) in subdirs {
        if let Ok(subdir) = open_at(fd, &name, OFlag::O_RDONLY | OFlag::O_DIRECTORY) {
            list_into(subdir, &format!("{path}/"), depth + 1, files);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn staged(dir: &Path, content: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new_in(dir).unwrap();
        file.write_all(content).unwrap();
        file
    }

    #[test]
    fn paths_that_leave_the_directory_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "..",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            "a\0b",
        ] {
            assert!(
                matches!(FilePath::parse(bad), Err(FileError::InvalidPath(_))),
                "{bad:?}"
            );
        }
        assert!(FilePath::parse(&"x".repeat(256)).is_err());
        let path = FilePath::parse("data/2024 report..csv").unwrap();
        assert_eq!(path.to_string(), "data/2024 report..csv");
        assert_eq!(path.file_name(), "2024 report..csv");
    }

    #[test]
    fn files_are_placed_listed_read_and_removed() {
        let root = tempfile::tempdir().unwrap();
        let staging = tempfile::tempdir().unwrap();
        let work = WorkDir::new(root.path());
        let path = FilePath::parse("sub/dir/table.csv").unwrap();
        let placed = work.place(&path, staged(staging.path(), b"a,b\n")).unwrap();
        assert_eq!(placed.size, 4);
        assert_eq!(placed.mime, "text/csv");
        assert_eq!(std::fs::read_dir(staging.path()).unwrap().count(), 0);
        // Replacing keeps one file with the new content.
        work.place(&path, staged(staging.path(), b"a,b\n1,2\n"))
            .unwrap();
        std::fs::write(root.path().join("top.txt"), "x").unwrap();
        let listed: Vec<_> = work.list().unwrap().into_iter().map(|f| f.path).collect();
        assert_eq!(listed, ["sub/dir/table.csv", "top.txt"]);
        let (mut file, info) = work.open(&path).unwrap();
        let mut content = String::new();
        file.read_to_string(&mut content).unwrap();
        assert_eq!((content.as_str(), info.size), ("a,b\n1,2\n", 8));
        work.remove(&path).unwrap();
        assert!(matches!(work.open(&path), Err(FileError::NotFound(_))));
        assert!(matches!(
            work.remove(&FilePath::parse("sub").unwrap()),
            Err(FileError::IsDirectory(_))
        ));
    }

    #[test]
    fn links_are_never_followed() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let staging = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.path().join("link"))
            .unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("dir")).unwrap();
        std::os::unix::fs::symlink("real", root.path().join("inside")).unwrap();
        std::fs::create_dir(root.path().join("real")).unwrap();
        std::fs::write(root.path().join("real/f"), "f").unwrap();
        let work = WorkDir::new(root.path());
        let symlink = |p: &str| {
            matches!(
                work.open(&FilePath::parse(p).unwrap()),
                Err(FileError::Symlink(_))
            )
        };
        assert!(symlink("link"));
        assert!(symlink("dir/secret"));
        assert!(symlink("inside/f"));
        let into_link = work.place(
            &FilePath::parse("dir/planted").unwrap(),
            staged(staging.path(), b"x"),
        );
        assert!(
            matches!(into_link, Err(FileError::Symlink(_))),
            "{into_link:?}"
        );
        assert!(!outside.path().join("planted").exists());
        // Listing shows only real files; removing a link removes the link only.
        let listed: Vec<_> = work.list().unwrap().into_iter().map(|f| f.path).collect();
        assert_eq!(listed, ["real/f"]);
        work.remove(&FilePath::parse("link").unwrap()).unwrap();
        assert!(outside.path().join("secret").exists());
        // Nor is a link written over.
        std::os::unix::fs::symlink(outside.path().join("secret"), root.path().join("link"))
            .unwrap();
        let over_link = work.place(
            &FilePath::parse("link").unwrap(),
            staged(staging.path(), b"new"),
        );
        assert!(
            matches!(over_link, Err(FileError::Symlink(_))),
            "{over_link:?}"
        );
        assert_eq!(
            std::fs::read_to_string(outside.path().join("secret")).unwrap(),
            "s"
        );
    }

    #[test]
    fn fifos_are_not_opened() {
        let root = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(&root.path().join("pipe"), Mode::from_bits_truncate(0o644)).unwrap();
        let work = WorkDir::new(root.path());
        assert!(matches!(
            work.open(&FilePath::parse("pipe").unwrap()),
            Err(FileError::NotRegular(_))
        ));
    }
}
