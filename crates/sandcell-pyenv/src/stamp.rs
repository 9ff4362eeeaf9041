//! What an environment is: the interpreter it is built from, described by what that
//! interpreter is rather than by the path it was found at, and the requirements installed.

use crate::error::PyenvError;
use crate::REQUIREMENTS;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What to build an environment from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvSpec {
    /// A way to run the base interpreter (any path to it: a symlink, a shim, the binary).
    pub python: PathBuf,
    /// The pinned requirements, in `pip install -r` format.
    pub requirements: String,
}

impl EnvSpec {
    /// `$SANDCELL_PYTHON`, else `python3` on `PATH`, with the shipped requirements.
    pub fn from_env() -> Result<Self, PyenvError> {
        Ok(Self {
            python: host_python(
                std::env::var_os("SANDCELL_PYTHON"),
                std::env::var_os("PATH"),
            )?,
            requirements: REQUIREMENTS.to_string(),
        })
    }
}

/// The interpreter named by `SANDCELL_PYTHON`, else the first `python3` on `PATH`.
fn host_python(
    sandcell_python: Option<OsString>,
    path: Option<OsString>,
) -> Result<PathBuf, PyenvError> {
    if let Some(python) = sandcell_python.filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(python));
    }
    let path = path.unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    std::env::split_paths(&path)
        .map(|dir| dir.join("python3"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| PyenvError::PythonMissing {
            python: "python3".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })
}

/// Facts about a base interpreter that decide what an environment built from it holds,
/// as the interpreter itself reports them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Interpreter {
    /// `sys.version`: release, build date and compiler.
    pub version: String,
    pub version_info: (u32, u32, u32),
    /// `sys.implementation.name`, `sys.implementation.cache_tag` and `sys.abiflags`: the
    /// ABI compiled packages are installed for.
    pub implementation: String,
    pub cache_tag: String,
    pub abiflags: String,
    /// The interpreter binary, symlinks resolved. Environments are created from this path,
    /// so they do not depend on the way the interpreter was found.
    /// (Strings, not paths: they come from JSON, so they are UTF-8 and the stamp
    /// always serialises.)
    pub executable: String,
    /// `sys.base_prefix`, resolved: the standard library the environment runs on.
    pub base_prefix: String,
}

/// Prints the facts `Interpreter` holds, as JSON. Run with `-I -S`: nothing from the
/// caller's environment variables or site-packages changes the answer.
const PROBE: &str = r#"
import json, os, sys
print(json.dumps({
    "version": sys.version,
    "version_info": list(sys.version_info[:3]),
    "implementation": sys.implementation.name,
    "cache_tag": sys.implementation.cache_tag or "",
    "abiflags": getattr(sys, "abiflags", ""),
    "executable": os.path.realpath(sys.executable) if sys.executable else "",
    "base_prefix": os.path.realpath(sys.base_prefix),
}))
"#;

impl Interpreter {
    /// Asks `python` what it is (one short run of the interpreter, without `site`).
    pub(crate) fn probe(python: &Path) -> Result<Self, PyenvError> {
        let shown = python.display().to_string();
        let output = Command::new(python)
            .args(["-I", "-S", "-c", PROBE])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| PyenvError::PythonMissing {
                python: shown.clone(),
                source,
            })?;
        let not_python = |reason: String| PyenvError::NotPython {
            python: shown.clone(),
            reason,
        };
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(not_python(format!("{}: {}", output.status, stderr.trim())));
        }
        let interpreter: Self =
            serde_json::from_slice(&output.stdout).map_err(|e| not_python(e.to_string()))?;
        if !Path::new(&interpreter.executable).is_absolute() {
            return Err(not_python("it does not know its own executable".into()));
        }
        Ok(interpreter)
    }

    /// sandcell's kernel and the pinned packages need Python 3.10 or newer.
    pub(crate) fn check_version(&self) -> Result<(), PyenvError> {
        let (major, minor, patch) = self.version_info;
        if (major, minor) < (3, 10) {
            return Err(PyenvError::PythonTooOld {
                python: self.executable.clone(),
                version: format!("{major}.{minor}.{patch}"),
            });
        }
        Ok(())
    }

    pub(crate) fn version(&self) -> String {
        let (major, minor, patch) = self.version_info;
        format!("{major}.{minor}.{patch}")
    }
}

/// How environments are built; raised when a change to the building steps makes older
/// environments different from new ones.
const LAYOUT: u32 = 1;

/// What an environment is. Written into it as `stamp.json`; its hash names its directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub layout: u32,
    pub interpreter: Interpreter,
    pub requirements_sha256: String,
}

impl Stamp {
    pub(crate) fn new(interpreter: Interpreter, requirements: &str) -> Self {
        Self {
            layout: LAYOUT,
            interpreter,
            requirements_sha256: sha256_hex(requirements.as_bytes()),
        }
    }

    /// The stamp as written into the environment; equal stamps give equal bytes.
    pub(crate) fn to_json(&self) -> Vec<u8> {
        // Serialising strings and numbers cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// The name of the environment's directory: 64 bits of the stamp's hash, enough to
    /// tell apart the few environments one data directory holds (the whole stamp is
    /// compared before an environment is used).
    pub(crate) fn dir_name(&self) -> String {
        sha256_hex(&self.to_json())[..16].to_string()
    }
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host's `python3`, for the tests that need a real interpreter.
    fn python3() -> PathBuf {
        host_python(None, std::env::var_os("PATH"))
            .expect("these tests need a python3 on PATH (or set SANDCELL_PYTHON)")
    }

    #[test]
    fn sandcell_python_comes_before_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("python3"), "").unwrap();
        let on_path = host_python(None, Some(dir.path().as_os_str().to_owned())).unwrap();
        assert_eq!(on_path, dir.path().join("python3"));
        let named = host_python(
            Some("/opt/py/bin/python3".into()),
            Some(dir.path().as_os_str().to_owned()),
        )
        .unwrap();
        assert_eq!(named, PathBuf::from("/opt/py/bin/python3"));
    }

    #[test]
    fn another_path_to_the_same_interpreter_gives_the_same_stamp() {
        let python = python3();
        let direct = Interpreter::probe(&python).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("python3");
        std::os::unix::fs::symlink(&python, &link).unwrap();
        let through_link = Interpreter::probe(&link).unwrap();
        let resolved = Interpreter::probe(Path::new(&direct.executable)).unwrap();
        assert_eq!(direct, through_link);
        assert_eq!(direct, resolved);
        assert_eq!(
            Stamp::new(through_link, REQUIREMENTS).dir_name(),
            Stamp::new(direct, REQUIREMENTS).dir_name()
        );
    }

    #[test]
    fn the_stamp_changes_with_the_requirements_and_the_interpreter() {
        let interpreter = Interpreter::probe(&python3()).unwrap();
        let pinned = Stamp::new(interpreter.clone(), REQUIREMENTS);
        let more = Stamp::new(interpreter.clone(), &format!("{REQUIREMENTS}six==1.17.0\n"));
        assert_ne!(pinned.dir_name(), more.dir_name());
        let rebuilt = Interpreter {
            version: format!("{} [another build]", interpreter.version),
            ..interpreter
        };
        assert_ne!(
            pinned.dir_name(),
            Stamp::new(rebuilt, REQUIREMENTS).dir_name()
        );
    }

    #[test]
    fn something_that_is_not_python_is_refused_with_its_reason() {
        let error = Interpreter::probe(Path::new("/bin/false")).unwrap_err();
        assert!(matches!(error, PyenvError::NotPython { .. }), "{error}");
    }
}
