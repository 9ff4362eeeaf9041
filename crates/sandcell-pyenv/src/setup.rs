use crate::error::{io_error, PyenvError};
use crate::home::Home;
use crate::REQUIREMENTS;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What `sandcell setup` reports while it works.
pub type SetupProgress<'a> = &'a mut dyn FnMut(&str);

/// Facts about an installed environment, read from its own interpreter at setup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EnvInfo {
    /// `3.11.7`.
    pub python_version: String,
    /// The environment's interpreter (`…/env/bin/python`).
    pub python: PathBuf,
    /// The virtual environment (`sys.prefix`).
    pub prefix: PathBuf,
    /// The installation the environment was built from (`sys.base_prefix`, resolved).
    pub base_prefix: PathBuf,
    /// The directory of the resolved base interpreter binary (may lie outside
    /// `base_prefix`, e.g. `/usr/bin` for Debian's python3).
    pub base_executable_dir: PathBuf,
    /// Installed distributions, sorted by name.
    pub packages: Vec<Package>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
}

/// A ready Python environment.
#[derive(Debug, Clone)]
pub struct Environment {
    home: Home,
    info: EnvInfo,
}

const STAMP: &str = "sandcell-stamp";
const INFO: &str = "sandcell-env.json";

/// Prints the facts `EnvInfo` holds, as JSON, from inside the environment.
const DESCRIBE: &str = r#"
import json, os, sys
from importlib import metadata
packages = sorted({(d.metadata["Name"], d.version) for d in metadata.distributions() if d.metadata["Name"]}, key=lambda p: p[0].lower())
print(json.dumps({
    "python_version": "%d.%d.%d" % sys.version_info[:3],
    "python": os.path.join(sys.prefix, "bin", "python"),
    "prefix": sys.prefix,
    "base_prefix": os.path.realpath(sys.base_prefix),
    "base_executable_dir": os.path.dirname(os.path.realpath(sys.executable)),
    "packages": [{"name": n, "version": v} for n, v in packages],
}))
"#;

impl Environment {
    /// The environment in `home`, set up first if it is missing or out of date. A
    /// second call on a ready environment only reads two small files.
    pub fn ensure(home: &Home, progress: SetupProgress) -> Result<Self, PyenvError> {
        let python = host_python()?;
        let stamp = stamp_for(&python);
        if let Some(env) = Self::open_if_current(home, &stamp) {
            return Ok(env);
        }
        // Several sandcell processes (or test threads) may start at once: one sets up,
        // the others wait and then find the stamp.
        let lock_path = home.root().join("setup.lock");
        let lock_file = File::create(&lock_path).map_err(io_error(&lock_path))?;
        let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| io_error(&lock_path)(errno.into()))?;
        if let Some(env) = Self::open_if_current(home, &stamp) {
            return Ok(env);
        }
        install(home, &python, progress)?;
        let info = describe(home)?;
        let venv = home.venv();
        let info_path = venv.join(INFO);
        let json = serde_json::to_vec_pretty(&info).map_err(|e| PyenvError::Broken {
            path: venv.clone(),
            reason: e.to_string(),
        })?;
        write_atomically(&info_path, &json)?;
        write_atomically(&venv.join(STAMP), stamp.as_bytes())?;
        progress(&format!(
            "the Python {} environment is ready in {}",
            info.python_version,
            venv.display()
        ));
        Ok(Self {
            home: home.clone(),
            info,
        })
    }

    /// The environment in `home` if it is set up and current; never installs anything.
    pub fn existing(home: &Home) -> Option<Self> {
        let python = host_python().ok()?;
        Self::open_if_current(home, &stamp_for(&python))
    }

    fn open_if_current(home: &Home, stamp: &str) -> Option<Self> {
        let venv = home.venv();
        let current = fs::read_to_string(venv.join(STAMP)).ok()?;
        if current != stamp {
            return None;
        }
        let info: EnvInfo = serde_json::from_slice(&fs::read(venv.join(INFO)).ok()?).ok()?;
        // The base interpreter may have been removed or upgraded since.
        if !info.python.exists() || !info.base_prefix.is_dir() {
            return None;
        }
        Some(Self {
            home: home.clone(),
            info,
        })
    }

    /// Installs an extra pinned package set (e.g. the benchmark's reference Jupyter) into
    /// the environment, once; `name` keys its stamp.
    pub fn ensure_extra(
        &self,
        name: &str,
        requirements: &str,
        progress: SetupProgress,
    ) -> Result<(), PyenvError> {
        let venv = self.home.venv();
        let stamp_path = venv.join(format!("{STAMP}-{name}"));
        let mut hash = Sha256::new();
        hash.update(requirements.as_bytes());
        let stamp: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        if fs::read_to_string(&stamp_path).is_ok_and(|s| s == stamp) {
            return Ok(());
        }
        progress(&format!("installing the packages for {name}"));
        let file = self.home.root().join(format!("requirements-{name}.txt"));
        write_atomically(&file, requirements.as_bytes())?;
        pip_install(&self.info.python, &file)?;
        write_atomically(&stamp_path, stamp.as_bytes())
    }

    pub fn home(&self) -> &Home {
        &self.home
    }

    pub fn info(&self) -> &EnvInfo {
        &self.info
    }

    /// Directories outside the system ones (`/usr`, `/lib`, …) that a sandbox must
    /// expose read-only for this environment's interpreter to run.
    pub fn read_only_paths(&self) -> Vec<PathBuf> {
        vec![
            self.info.base_prefix.clone(),
            self.info.base_executable_dir.clone(),
            self.info.prefix.clone(),
            self.home.mplconfig(),
        ]
    }
}

/// The interpreter to build the environment from: `$SANDCELL_PYTHON`, else `python3`
/// on `PATH`.
fn host_python() -> Result<PathBuf, PyenvError> {
    if let Some(python) = std::env::var_os("SANDCELL_PYTHON").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(python));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    std::env::split_paths(&path)
        .map(|dir| dir.join("python3"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| PyenvError::PythonMissing {
            python: "python3".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })
}

/// What the environment was built from: the pinned requirements and the interpreter.
fn stamp_for(python: &Path) -> String {
    let mut hash = Sha256::new();
    hash.update(REQUIREMENTS.as_bytes());
    hash.update(python.as_os_str().as_encoded_bytes());
    if let Ok(resolved) = python.canonicalize() {
        hash.update(resolved.as_os_str().as_encoded_bytes());
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn install(home: &Home, python: &Path, progress: SetupProgress) -> Result<(), PyenvError> {
    let shown = python.display().to_string();
    let version = Command::new(python)
        .args(["-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"])
        .output()
        .map_err(|source| PyenvError::PythonMissing {
            python: shown.clone(),
            source,
        })?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    if (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) < (3, 10) {
        return Err(PyenvError::PythonTooOld {
            python: shown,
            version,
        });
    }

    let venv = home.venv();
    progress(&format!(
        "creating a Python {version} environment in {}",
        venv.display()
    ));
    let created = Command::new(python)
        .arg("-m")
        .arg("venv")
        .arg("--clear")
        .arg(&venv)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| PyenvError::PythonMissing {
            python: shown.clone(),
            source,
        })?;
    if !created.status.success() {
        let stderr = String::from_utf8_lossy(&created.stderr);
        if stderr.contains("ensurepip") || stderr.contains("No module named venv") {
            return Err(PyenvError::VenvMissing { python: shown });
        }
        eprint!("{stderr}");
        return Err(PyenvError::StepFailed {
            step: format!("{shown} -m venv"),
            status: created.status.to_string(),
        });
    }

    let requirements = home.root().join("requirements.txt");
    write_atomically(&requirements, REQUIREMENTS.as_bytes())?;
    let count = REQUIREMENTS
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .count();
    progress(&format!(
        "installing the pinned packages (up to {count}: numpy, pandas, matplotlib, scipy, scikit-learn, …); this takes a minute or two"
    ));
    let venv_python = venv.join("bin/python");
    pip_install(&venv_python, &requirements)?;

    progress("building matplotlib's font cache");
    let mplconfig = home.mplconfig();
    fs::create_dir_all(&mplconfig).map_err(io_error(&mplconfig))?;
    run_step(
        "building matplotlib's font cache",
        Command::new(&venv_python)
            .args(["-c", "import matplotlib.pyplot"])
            .env("MPLCONFIGDIR", &mplconfig)
            .env("MPLBACKEND", "Agg"),
    )
}

/// `pip install -r requirements` with the environment's interpreter, progress shown.
fn pip_install(python: &Path, requirements: &Path) -> Result<(), PyenvError> {
    run_step(
        "pip install",
        Command::new(python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "--prefer-binary",
                "-r",
            ])
            .arg(requirements),
    )
}

/// Runs one setup step with its output shown on our stderr (never stdout, which may be
/// carrying JSON for a script).
fn run_step(step: &str, command: &mut Command) -> Result<(), PyenvError> {
    let stderr = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_err(io_error("/dev/stderr"))?;
    let status = command
        .stdin(Stdio::null())
        .stdout(Stdio::from(stderr))
        .status()
        .map_err(|source| PyenvError::PythonMissing {
            python: format!("{:?}", command.get_program()),
            source,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(PyenvError::StepFailed {
            step: step.into(),
            status: status.to_string(),
        })
    }
}

fn describe(home: &Home) -> Result<EnvInfo, PyenvError> {
    let venv = home.venv();
    let output = Command::new(venv.join("bin/python"))
        .args(["-c", DESCRIBE])
        .stdin(Stdio::null())
        .output()
        .map_err(io_error(venv.join("bin/python")))?;
    let broken = |reason: String| PyenvError::Broken {
        path: venv.clone(),
        reason,
    };
    if !output.status.success() {
        return Err(broken(String::from_utf8_lossy(&output.stderr).into_owned()));
    }
    serde_json::from_slice(&output.stdout).map_err(|e| broken(e.to_string()))
}

/// Writes a file so that readers see either the old or the new content.
pub(crate) fn write_atomically(path: &Path, content: &[u8]) -> Result<(), PyenvError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
    file.write_all(content).map_err(io_error(&tmp))?;
    file.sync_all().map_err(io_error(&tmp))?;
    fs::rename(&tmp, path).map_err(io_error(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_changes_with_the_interpreter() {
        assert_ne!(
            stamp_for(Path::new("/usr/bin/python3")),
            stamp_for(Path::new("/opt/python/bin/python3"))
        );
    }

    #[test]
    fn an_environment_without_a_stamp_is_not_current() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path()).unwrap();
        assert!(Environment::open_if_current(&home, "abc").is_none());
    }
}
