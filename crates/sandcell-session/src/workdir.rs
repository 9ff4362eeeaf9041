//! The session's working directory as the host sees it: which files an execution
//! created or changed, and how much space the directory uses.

use crate::execution::FileChange;
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A directory with more entries than this is only partly watched.
const MAX_ENTRIES: usize = 50_000;

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
    mtime_ns: i128,
    inode: u64,
}

impl Snapshot {
    /// Walks `root` (without following symlinks).
    pub fn take(root: &Path) -> Self {
        let mut files = HashMap::new();
        let mut pending = vec![root.to_path_buf()];
        while let Some(dir) = pending.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if files.len() >= MAX_ENTRIES {
                    return Self { files };
                }
                let Ok(meta) = entry.metadata() else { continue };
                if meta.is_dir() {
                    pending.push(entry.path());
                } else if meta.is_file() {
                    let Ok(relative) = entry.path().strip_prefix(root).map(Path::to_path_buf)
                    else {
                        continue;
                    };
                    files.insert(
                        relative,
                        FileStamp {
                            size: meta.len(),
                            allocated: meta.blocks() * 512,
                            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000
                                + i128::from(meta.mtime_nsec()),
                            inode: meta.ino(),
                        },
                    );
                }
            }
        }
        Self { files }
    }

    /// Disk space used by the files seen.
    pub fn disk_usage(&self) -> u64 {
        self.files.values().map(|f| f.allocated).sum()
    }

    /// Files present in `after` that are new or different from `self`, sorted by path.
    pub fn changes(&self, after: &Snapshot) -> Vec<FileChange> {
        let mut changed: Vec<FileChange> = after
            .files
            .iter()
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
    let mut total = 0u64;
    let mut seen = 0usize;
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > MAX_ENTRIES {
                return total;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                total = total.saturating_add(meta.blocks() * 512);
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn disk_usage_counts_nested_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("d")).unwrap();
        fs::write(dir.path().join("d/f"), vec![1u8; 100_000]).unwrap();
        assert!(disk_usage(dir.path()) >= 100_000);
    }
}
