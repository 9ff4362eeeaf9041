//! The files the template process runs, embedded in the binary and written into the
//! data directory on first use: the `sandcell_runtime` Python package and the sandbox
//! library it loads. They go to a directory named by their content hash, so different
//! sandcell versions never overwrite each other's files, and a directory once complete is
//! never changed.

use crate::error::SessionError;
use sha2::{Digest, Sha256};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

include!(concat!(env!("OUT_DIR"), "/python_files.rs"));

const ENTER_LIBRARY: &[u8] = include_bytes!(env!("SANDCELL_ENTER_SO"));
const ENTER_LIBRARY_NAME: &str = "libsandcell_enter.so";
const COMPLETE: &str = ".complete";

/// Where the runtime files are on disk.
#[derive(Debug, Clone)]
pub struct RuntimeFiles {
    /// Goes on the template's `PYTHONPATH`; holds `sandcell_runtime/`.
    pub dir: PathBuf,
    /// `libsandcell_enter.so`.
    pub enter_library: PathBuf,
}

impl RuntimeFiles {
    /// The files under `parent`, written there if this version's are not yet.
    pub fn install(parent: &Path) -> Result<Self, SessionError> {
        let dir = parent.join(content_hash());
        let files = Self {
            enter_library: dir.join(ENTER_LIBRARY_NAME),
            dir: dir.clone(),
        };
        if dir.join(COMPLETE).exists() {
            return Ok(files);
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SessionError::Io { path, source }
        };
        fs::create_dir_all(parent).map_err(io(parent))?;
        let staging = tempfile::Builder::new()
            .prefix(".staging")
            .tempdir_in(parent)
            .map_err(io(parent))?;
        let package = staging.path().join("sandcell_runtime");
        fs::create_dir(&package).map_err(io(&package))?;
        for (name, content) in PYTHON_FILES {
            let path = package.join(name);
            fs::write(&path, content).map_err(io(&path))?;
        }
        let library = staging.path().join(ENTER_LIBRARY_NAME);
        fs::write(&library, ENTER_LIBRARY).map_err(io(&library))?;
        fs::write(staging.path().join(COMPLETE), b"").map_err(io(staging.path()))?;
        // Sandboxed sessions may run as another user: everything must be readable.
        for dir in [staging.path(), package.as_path()] {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(io(dir))?;
        }
        let staging = staging.keep();
        if let Err(source) = fs::rename(&staging, &dir) {
            // Another process installed the same version first: use theirs.
            let _ = fs::remove_dir_all(&staging);
            if !dir.join(COMPLETE).exists() {
                return Err(SessionError::Io { path: dir, source });
            }
        }
        Ok(files)
    }
}

fn content_hash() -> String {
    let mut hash = Sha256::new();
    for (name, content) in PYTHON_FILES {
        hash.update(name.as_bytes());
        hash.update(content.as_bytes());
    }
    hash.update(ENTER_LIBRARY);
    hash.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
