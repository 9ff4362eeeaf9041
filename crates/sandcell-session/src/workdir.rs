//! The session's working directory as the host sees it: which files an execution
//! created or changed, and how much space the directory uses.

use crate::execution::FileChange;
use crate::network::PACKAGES_DIR;
use sandcell_safedir::{Listing, SafeDir, WalkLimits};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A directory with more entries than this, or deeper, is only partly watched.
const WATCHED: WalkLimits = WalkLimits {
    max_entries: 50_000,
    max_depth: 64,
};

/// What each regular file looked like at one moment.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Snapshot {
    files: HashMap<PathBuf, FileStamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    size: u64,
    /// Bytes of disk the file occupies (sparse files count for what they use).
    allocated: u64,
    modified: SystemTime,
    inode: u64,
}

impl Snapshot {
    /// Walks `root` without following a link anywhere (the session's code can plant
    /// them, or swap a directory for one, while the host walks).
    pub fn take(root: &Path) -> Self {
        let files = regular_files(root)
            .files
            .into_iter()
            .map(|entry| {
                let stamp = FileStamp {
                    size: entry.size,
                    allocated: entry.allocated,
                    modified: entry.modified,
                    inode: entry.inode,
                };
                (entry.path, stamp)
            })
            .collect();
        Self { files }
    }

    /// Disk space used by the files seen.
    pub fn disk_usage(&self) -> u64 {
        self.files.values().map(|f| f.allocated).sum()
    }

    /// Files present in `after` that are new or different from `self`, sorted by path.
    /// The package layer (`%pip install`'s) is not reported: those files are not the
    /// code's results. It still counts in [`Snapshot::disk_usage`].
    pub fn changes(&self, after: &Snapshot) -> Vec<FileChange> {
        let mut changed: Vec<FileChange> = after
            .files
            .iter()
            .filter(|(path, _)| !path.starts_with(PACKAGES_DIR))
            .filter(|(path, stamp)| self.files.get(*path) != Some(stamp))
            .map(|(path, stamp)| FileChange {
                path: path.to_string_lossy().into_owned(),
                size: stamp.size,
                mime: mime_guess::from_path(path)
                    .first_raw()
                    .unwrap_or("application/octet-stream")
                    .to_string(),
            })
            .collect();
        changed.sort_by(|a, b| a.path.cmp(&b.path));
        changed
    }
}

/// Bytes used by the regular files under `root` (allocated blocks, so sparse files
/// count for what they occupy).
pub fn disk_usage(root: &Path) -> u64 {
    regular_files(root)
        .files
        .iter()
        .fold(0, |total: u64, entry| total.saturating_add(entry.allocated))
}

/// The regular files beneath `root`; none when it cannot be opened (a session whose
/// directory is gone has nothing to report).
fn regular_files(root: &Path) -> Listing {
    SafeDir::open(root)
        .map(|dir| dir.files(WATCHED))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn new_and_modified_files_are_reported_but_unchanged_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("same.txt"), "x").unwrap();
        fs::write(dir.path().join("edit.csv"), "a").unwrap();
        let before = Snapshot::take(dir.path());
        fs::write(dir.path().join("edit.csv"), "a,b\n1,2\n").unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/plot.png"), [0u8; 10]).unwrap();
        let changes = before.changes(&Snapshot::take(dir.path()));
        let paths: Vec<_> = changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["edit.csv", "sub/plot.png"]);
        assert_eq!(changes[0].mime, "text/csv");
        assert_eq!(changes[1].size, 10);
        assert_eq!(changes[1].mime, "image/png");
    }

    #[test]
    fn links_planted_by_the_session_are_not_walked() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("host.bin"), vec![1u8; 100_000]).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("escape")).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", dir.path().join("shadow")).unwrap();
        fs::write(dir.path().join("own.txt"), "x").unwrap();
        let changes = Snapshot::default().changes(&Snapshot::take(dir.path()));
        let paths: Vec<_> = changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["own.txt"]);
        assert!(disk_usage(dir.path()) < 100_000);
    }

    #[test]
    fn disk_usage_counts_nested_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("d")).unwrap();
        fs::write(dir.path().join("d/f"), vec![1u8; 100_000]).unwrap();
        assert!(disk_usage(dir.path()) >= 100_000);
    }
}
