use crate::error::{io_error, PyenvError};
use std::path::{Path, PathBuf};

/// sandcell's per-user data directory: `$SANDCELL_HOME`, else `$XDG_DATA_HOME/sandcell`,
/// else `~/.local/share/sandcell`.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// The data directory named by the environment; it is created if missing.
    pub fn from_env() -> Result<Self, PyenvError> {
        let var = |name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let root = if let Some(home) = var("SANDCELL_HOME") {
            home
        } else if let Some(data) = var("XDG_DATA_HOME") {
            data.join("sandcell")
        } else if let Some(home) = var("HOME") {
            home.join(".local/share/sandcell")
        } else {
            return Err(PyenvError::NoHome);
        };
        Self::at(root)
    }

    /// A data directory at an explicit place; it is created if missing.
    pub fn at(root: impl Into<PathBuf>) -> Result<Self, PyenvError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(io_error(&root))?;
        let root = root.canonicalize().map_err(io_error(&root))?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The virtual environment.
    pub fn venv(&self) -> PathBuf {
        self.root.join("env")
    }

    /// matplotlib's configuration and font cache, built once at setup.
    pub fn mplconfig(&self) -> PathBuf {
        self.root.join("mplconfig")
    }

    /// IPython's profile directory (`IPYTHONDIR`) for the template and its sessions.
    pub fn ipython(&self) -> PathBuf {
        self.root.join("ipython")
    }

    /// Files the session runtime writes (its Python package, the sandbox library).
    pub fn runtime(&self) -> PathBuf {
        self.root.join("runtime")
    }
}
