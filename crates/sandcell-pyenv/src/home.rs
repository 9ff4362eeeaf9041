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

    /// The Python environments, one directory each (see `Environment`).
    pub fn envs(&self) -> PathBuf {
        self.root.join("envs")
    }

    /// What remains of the environment earlier sandcell versions built in place: `env/`
    /// and its matplotlib configuration `mplconfig/`. Nothing here uses or removes them:
    /// an older sandcell process may still be running on them.
    pub fn earlier_environment(&self) -> Vec<PathBuf> {
        if !self.root.join("env/sandcell-stamp").is_file() {
            return Vec::new();
        }
        ["env", "mplconfig"]
            .iter()
            .map(|name| self.root.join(name))
            .filter(|path| path.exists())
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_of_earlier_versions_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path()).unwrap();
        assert!(home.earlier_environment().is_empty());
        std::fs::create_dir_all(home.root().join("env")).unwrap();
        std::fs::write(home.root().join("env/sandcell-stamp"), "0123").unwrap();
        std::fs::create_dir_all(home.root().join("mplconfig")).unwrap();
        assert_eq!(
            home.earlier_environment(),
            vec![home.root().join("env"), home.root().join("mplconfig")]
        );
    }
}
