//! Files in a session's working directory (`/mnt/data`), reached safely from the host.
//!
//! The sandboxed code owns that directory: it can plant symbolic links anywhere in it and
//! swap a directory for a link at any moment. Every access goes through
//! `sandcell_safedir::SafeDir`, which never follows a link on any part of a path; this
//! module adds what a client sees of a file and how its errors become the core's.
//! Everything here blocks; callers run it on a blocking thread.

use crate::error::ServiceError;
use crate::session_files::SessionFiles;
use sandcell_safedir::{Entry, SafeDir, WalkLimits};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use utoipa::ToSchema;

pub use sandcell_safedir::{SafeDirError as FileError, SafePath as FilePath};

/// How far a listing looks.
pub(crate) const LISTING: WalkLimits = WalkLimits {
    max_entries: 50_000,
    max_depth: 64,
};
/// How paths are shown in errors: as the sandboxed code sees them.
const SHOWN_AS: &str = "/mnt/data";

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

impl From<FileError> for ServiceError {
    fn from(error: FileError) -> Self {
        match &error {
            FileError::InvalidPath(_) | FileError::Symlink(_) => {
                ServiceError::InvalidPath(error.to_string())
            }
            FileError::NotFound(_) => ServiceError::NotFound(error.to_string()),
            FileError::AlreadyExists(_)
            | FileError::IsDirectory(_)
            | FileError::NotRegular(_)
            | FileError::PermissionDenied(_)
            | FileError::NoSpace(_) => ServiceError::Conflict(error.to_string()),
            FileError::Io { .. } => ServiceError::internal("A file operation failed", &error),
        }
    }
}

/// A session's working directory on the host.
#[derive(Debug, Clone)]
pub struct WorkDir {
    root: PathBuf,
    /// Where a change made through this value is written back, if anywhere.
    write_back: Option<WriteBackTo>,
}

/// The session a working directory is written back for, and its disk quota.
#[derive(Debug, Clone)]
pub(crate) struct WriteBackTo {
    pub files: Arc<SessionFiles>,
    pub session_id: String,
    pub quota: u64,
}

impl WorkDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            write_back: None,
        }
    }

    /// A working directory whose changes (a file placed or removed) are written back
    /// after they are made, in the background.
    pub(crate) fn writing_back(root: impl Into<PathBuf>, to: WriteBackTo) -> Self {
        Self {
            root: root.into(),
            write_back: Some(to),
        }
    }

    /// Every regular file, sorted by path. Links are not followed; names that are not
    /// UTF-8 are left out (they could not be asked for by name).
    pub fn list(&self) -> Result<Vec<FileInfo>, FileError> {
        let mut files: Vec<FileInfo> = self
            .open_dir()?
            .files(LISTING)
            .files
            .iter()
            .filter_map(|entry| Some(info(entry.path.to_str()?, entry)))
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    /// Opens a regular file for reading.
    pub fn open(&self, path: &FilePath) -> Result<(std::fs::File, FileInfo), FileError> {
        let (file, entry) = self.open_dir()?.open_file(path)?;
        Ok((file, info(&path.to_string(), &entry)))
    }

    /// Removes a file (or a link, which is not followed).
    pub fn remove(&self, path: &FilePath) -> Result<(), FileError> {
        self.open_dir()?.remove_file(path)?;
        self.changed();
        Ok(())
    }

    /// Moves a fully written temporary file to `path` (creating missing directories),
    /// replacing any file there (a link there is refused). The file and new directories
    /// get the working directory's owner, so the sandboxed code can change them like its
    /// own.
    pub fn place(
        &self,
        path: &FilePath,
        staged: tempfile::NamedTempFile,
    ) -> Result<FileInfo, FileError> {
        let entry = self.open_dir()?.move_in(staged.path(), path)?;
        // The name is gone from the staging directory: nothing is left to clean up.
        let _ = staged.into_temp_path().keep();
        self.changed();
        Ok(info(&path.to_string(), &entry))
    }

    /// Starts writing the directory back, when it is written back anywhere.
    fn changed(&self) {
        let Some(to) = self.write_back.clone() else {
            return;
        };
        // Callers run on the runtime's blocking threads, where its handle is at hand.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                session = to.session_id,
                "a file change is written back with the next execution only"
            );
            return;
        };
        let root = self.root.clone();
        runtime.spawn(async move {
            to.files.write_back(&to.session_id, &root, to.quota).await;
        });
    }

    fn open_dir(&self) -> Result<SafeDir, FileError> {
        Ok(SafeDir::open(&self.root)?.shown_as(SHOWN_AS))
    }
}

fn info(path: &str, entry: &Entry) -> FileInfo {
    FileInfo {
        path: path.to_owned(),
        size: entry.size,
        mime: mime_guess::from_path(path)
            .first_raw()
            .unwrap_or("application/octet-stream")
            .to_owned(),
        modified: humantime::format_rfc3339_millis(entry.modified).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::path::Path;

    fn staged(dir: &Path, content: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new_in(dir).unwrap();
        file.write_all(content).unwrap();
        file
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
}
