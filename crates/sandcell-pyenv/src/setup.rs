use crate::error::{io_error, PyenvError};
use crate::home::Home;
use crate::layer::layers_dir;
use crate::stamp::{sha256_hex, EnvSpec, Interpreter, Stamp};
use crate::store::{remove_unused, setup_lock, EnvDir, InUse, Removal};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

/// What `sandcell setup` reports while it works.
pub type SetupProgress<'a> = &'a mut dyn FnMut(&str);

/// Facts about an installed environment, read from its own interpreter at setup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EnvInfo {
    /// `3.11.7`.
    pub python_version: String,
    /// The environment's interpreter (`…/envs/<name>/venv/bin/python`).
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

/// A ready Python environment. While any clone of it lives, this process holds the
/// environment's in-use lock, so no setup (in this process or another) removes it.
#[derive(Debug, Clone)]
pub struct Environment {
    home: Home,
    dir: EnvDir,
    info: EnvInfo,
    _in_use: Arc<InUse>,
}

/// Defines `packages(paths)`: the distributions installed on `paths` (`sys.path` when
/// empty) as `[{"name": …, "version": …}]`, sorted by name. The one way sandcell lists
/// installed packages, for the base environment and for layers alike.
const PACKAGES: &str = r#"
import json, os, sys
from importlib import metadata
def packages(paths):
    found = metadata.distributions(path=paths) if paths else metadata.distributions()
    named = sorted({(d.metadata["Name"], d.version) for d in found if d.metadata["Name"]}, key=lambda p: p[0].lower())
    return [{"name": n, "version": v} for n, v in named]
"#;

/// Prints the facts `EnvInfo` holds, as JSON, from inside the environment.
const DESCRIBE: &str = r#"
print(json.dumps({
    "python_version": "%d.%d.%d" % sys.version_info[:3],
    "python": os.path.join(sys.prefix, "bin", "python"),
    "prefix": sys.prefix,
    "base_prefix": os.path.realpath(sys.base_prefix),
    "base_executable_dir": os.path.dirname(os.path.realpath(sys.executable)),
    "packages": packages([]),
}))
"#;

/// Prints, as JSON, the packages installed in the directories given as arguments.
const LIST_PACKAGES: &str = "print(json.dumps(packages(sys.argv[1:])))";

impl Environment {
    /// The environment for the host's interpreter and the shipped requirements
    /// ([`EnvSpec::from_env`]), built first if there is none yet.
    pub fn ensure(home: &Home, progress: SetupProgress) -> Result<Self, PyenvError> {
        Self::ensure_for(home, &EnvSpec::from_env()?, progress)
    }

    /// The environment `spec` describes, built first if there is none yet. Finding a ready
    /// one costs one short run of the interpreter (to learn what it is) and reading two
    /// small files. A build goes into a new directory beside the existing environments;
    /// those that no process uses are removed after it.
    pub fn ensure_for(
        home: &Home,
        spec: &EnvSpec,
        progress: SetupProgress,
    ) -> Result<Self, PyenvError> {
        let stamp = Stamp::new(Interpreter::probe(&spec.python)?, &spec.requirements);
        let dir = EnvDir::new(home.envs().join(stamp.dir_name()));
        if let Some(env) = Self::open(home, &dir, &stamp) {
            return Ok(env);
        }
        stamp.interpreter.check_version()?;
        // Several sandcell processes (or test threads) may start at once: one builds, the
        // others wait and then find the environment ready.
        let _setup = setup_lock(home.root())?;
        if let Some(env) = Self::open(home, &dir, &stamp) {
            return Ok(env);
        }
        let env = build(home, dir, &stamp, &spec.requirements, progress)?;
        match remove_unused(&home.envs(), env.dir.path()) {
            Ok(removal) => report_removal(&removal, progress),
            // The new environment is ready; what is left is only disk space.
            Err(e) => progress(&format!("could not remove older environments: {e}")),
        }
        Ok(env)
    }

    /// The environment for the host's interpreter and the shipped requirements if it is
    /// ready; never builds anything.
    pub fn existing(home: &Home) -> Option<Self> {
        let spec = EnvSpec::from_env().ok()?;
        let stamp = Stamp::new(Interpreter::probe(&spec.python).ok()?, &spec.requirements);
        Self::open(
            home,
            &EnvDir::new(home.envs().join(stamp.dir_name())),
            &stamp,
        )
    }

    /// The environment in `dir` if it is ready and is what `stamp` describes, held in use.
    fn open(home: &Home, dir: &EnvDir, stamp: &Stamp) -> Option<Self> {
        let in_use = dir.hold()?;
        let recorded = fs::read(dir.stamp_file()).ok()?;
        if recorded != stamp.to_json() {
            return None;
        }
        let info: EnvInfo = serde_json::from_slice(&fs::read(dir.ready_file()).ok()?).ok()?;
        // The base interpreter may have been removed since.
        if !info.python.exists() || !info.base_prefix.is_dir() {
            return None;
        }
        Some(Self {
            home: home.clone(),
            dir: dir.clone(),
            info,
            _in_use: Arc::new(in_use),
        })
    }

    /// Installs an extra pinned package set (e.g. the benchmark's reference Jupyter) into
    /// this environment, once; `name` keys its stamp. Unlike a rebuild this changes the
    /// environment in place, so it is for tools that run beside sessions, not for what
    /// sessions import.
    pub fn ensure_extra(
        &self,
        name: &str,
        requirements: &str,
        progress: SetupProgress,
    ) -> Result<(), PyenvError> {
        let stamp_path = self.dir.path().join(format!("extra-{name}.stamp"));
        let stamp = sha256_hex(requirements.as_bytes());
        let installed = || fs::read_to_string(&stamp_path).is_ok_and(|s| s == stamp);
        if installed() {
            return Ok(());
        }
        let _setup = setup_lock(self.home.root())?;
        if installed() {
            return Ok(());
        }
        progress(&format!("installing the packages for {name}"));
        let file = self.dir.path().join(format!("requirements-{name}.txt"));
        write_atomically(&file, requirements.as_bytes())?;
        pip_install(&self.info.python, &file)?;
        // The images of the sessions' view copy the venv as it was: the next runtime
        // makes them again (runtimes using the old ones keep them open).
        match fs::remove_dir_all(self.view_dir()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(PyenvError::Io {
                    path: self.view_dir(),
                    source,
                })
            }
        }
        write_atomically(&stamp_path, stamp.as_bytes())
    }

    /// Where the images of the sessions' view of this environment are kept
    /// (`sandcell-session` makes them): read-only copies of what never changes, except
    /// that [`Environment::ensure_extra`] removes them.
    pub fn view_dir(&self) -> PathBuf {
        self.dir.path().join("view")
    }

    pub fn home(&self) -> &Home {
        &self.home
    }

    pub fn info(&self) -> &EnvInfo {
        &self.info
    }

    /// The environment's directory (`envs/<name>`, holding the virtual environment in
    /// `venv/`, matplotlib's configuration and what the environment was built from).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// matplotlib's configuration and font cache, built with the environment.
    pub fn mplconfig(&self) -> PathBuf {
        self.dir.mplconfig()
    }

    /// The requirements the environment was built from; a layer's build is constrained
    /// to them.
    pub(crate) fn requirements_file(&self) -> PathBuf {
        self.dir.requirements_file()
    }

    /// Directories outside the system ones (`/usr`, `/lib`, …) that a sandbox must
    /// expose read-only for this environment's interpreter to run, and the layers built
    /// on top of it (those that exist now: a runtime is started after its layers).
    pub fn read_only_paths(&self) -> Vec<PathBuf> {
        let mut paths = vec![
            self.info.base_prefix.clone(),
            self.info.base_executable_dir.clone(),
            self.info.prefix.clone(),
            self.mplconfig(),
        ];
        let layers = layers_dir(self.dir.path());
        if layers.is_dir() {
            paths.push(layers);
        }
        paths
    }
}

fn report_removal(removal: &Removal, progress: SetupProgress) {
    if removal.removed > 0 {
        progress(&format!(
            "removed {} older environment(s) that no sandcell process was using",
            removal.removed
        ));
    }
    if let Some(previous) = &removal.kept_previous {
        progress(&format!(
            "kept the previous environment, {}, unused, for a switch back without a rebuild",
            previous.display()
        ));
    }
    if removal.kept_in_use > 0 {
        progress(&format!(
            "kept {} older environment(s) that running sandcell processes still use; a later build removes them once they are unused",
            removal.kept_in_use
        ));
    }
}

/// Builds the environment `stamp` describes in `dir`, which becomes ready (and visible
/// to other processes) only at the end.
fn build(
    home: &Home,
    dir: EnvDir,
    stamp: &Stamp,
    requirements: &str,
    progress: SetupProgress,
) -> Result<Environment, PyenvError> {
    let envs = home.envs();
    fs::create_dir_all(&envs).map_err(io_error(&envs))?;
    if dir.path().exists() {
        dir.remove_stale()?;
    }
    let in_use = dir.create()?;
    write_atomically(&dir.stamp_file(), &stamp.to_json())?;
    let requirements_file = dir.requirements_file();
    write_atomically(&requirements_file, requirements.as_bytes())?;

    let interpreter = &stamp.interpreter;
    let python = &interpreter.executable;
    let venv = dir.venv();
    progress(&format!(
        "creating a Python {} environment in {} (beside any existing one: running sessions keep theirs)",
        interpreter.version(),
        venv.display()
    ));
    let created = Command::new(python)
        .arg("-m")
        .arg("venv")
        .arg(&venv)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| PyenvError::PythonMissing {
            python: python.clone(),
            source,
        })?;
    if !created.status.success() {
        let stderr = String::from_utf8_lossy(&created.stderr);
        if stderr.contains("ensurepip") || stderr.contains("No module named venv") {
            return Err(PyenvError::VenvMissing {
                python: python.clone(),
            });
        }
        eprint!("{stderr}");
        return Err(PyenvError::StepFailed {
            step: format!("{python} -m venv"),
            status: created.status.to_string(),
        });
    }

    let count = requirements
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .count();
    progress(&format!(
        "installing the pinned packages (up to {count}: numpy, pandas, matplotlib, scipy, scikit-learn, …); this takes a minute or two"
    ));
    let venv_python = venv.join("bin/python");
    pip_install(&venv_python, &requirements_file)?;

    progress("building matplotlib's font cache");
    let mplconfig = dir.mplconfig();
    fs::create_dir_all(&mplconfig).map_err(io_error(&mplconfig))?;
    run_step(
        "building matplotlib's font cache",
        Command::new(&venv_python)
            .args(["-c", "import matplotlib.pyplot"])
            .env("MPLCONFIGDIR", &mplconfig)
            .env("MPLBACKEND", "Agg"),
    )?;

    let info = describe(&venv_python)?;
    let json = serde_json::to_vec_pretty(&info).map_err(|e| PyenvError::Broken {
        path: venv.clone(),
        reason: e.to_string(),
    })?;
    write_atomically(&dir.ready_file(), &json)?;
    progress(&format!(
        "the Python {} environment is ready in {}",
        info.python_version,
        venv.display()
    ));
    Ok(Environment {
        home: home.clone(),
        dir,
        info,
        _in_use: Arc::new(in_use),
    })
}

/// `pip install -r requirements` with the environment's interpreter, progress shown.
fn pip_install(python: &Path, requirements: &Path) -> Result<(), PyenvError> {
    run_step(
        "pip install",
        pip_install_command(python).arg("-r").arg(requirements),
    )
}

/// `python -m pip install`, quiet about pip's own version and never asking anything; the
/// caller adds what to install, and where.
pub(crate) fn pip_install_command(python: &Path) -> Command {
    let mut command = Command::new(python);
    command.args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--prefer-binary",
    ]);
    command
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

fn describe(venv_python: &Path) -> Result<EnvInfo, PyenvError> {
    run_json(venv_python, DESCRIBE, &[])
}

/// The distributions installed in `site` (a directory of packages, such as a layer's), as
/// `python` reads them.
pub(crate) fn packages_in(python: &Path, site: &Path) -> Result<Vec<Package>, PyenvError> {
    run_json(python, LIST_PACKAGES, &[site])
}

/// Runs `script` (after [`PACKAGES`]) with `python` and reads the JSON it prints.
fn run_json<T: serde::de::DeserializeOwned>(
    python: &Path,
    script: &str,
    args: &[&Path],
) -> Result<T, PyenvError> {
    let output = Command::new(python)
        .arg("-c")
        .arg([PACKAGES, script].concat())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(io_error(python))?;
    let broken = |reason: String| PyenvError::Broken {
        path: python.to_path_buf(),
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
    fn the_packages_of_a_directory_are_its_distributions_sorted_by_name() {
        let site = tempfile::tempdir().unwrap();
        for (dir, name, version) in [
            ("zeta_pkg-2.0.dist-info", "zeta-pkg", "2.0"),
            ("Alpha-1.5.dist-info", "Alpha", "1.5"),
        ] {
            let info = site.path().join(dir);
            fs::create_dir(&info).unwrap();
            fs::write(
                info.join("METADATA"),
                format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"),
            )
            .unwrap();
        }
        fs::create_dir(site.path().join("alpha")).unwrap();
        let python = std::env::var_os("SANDCELL_PYTHON").unwrap_or_else(|| "python3".into());
        let packages =
            packages_in(Path::new(&python), site.path()).expect("these tests need python3");
        let package = |name: &str, version: &str| Package {
            name: name.into(),
            version: version.into(),
        };
        assert_eq!(
            packages,
            [package("Alpha", "1.5"), package("zeta-pkg", "2.0")],
            "only what the directory holds, not the interpreter's own packages"
        );
    }

    #[test]
    fn an_environment_that_is_not_ready_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path()).unwrap();
        let python = std::env::var_os("SANDCELL_PYTHON").unwrap_or_else(|| "python3".into());
        let stamp = Stamp::new(
            Interpreter::probe(Path::new(&python)).expect("these tests need python3"),
            "",
        );
        let env = EnvDir::new(home.envs().join(stamp.dir_name()));
        fs::create_dir_all(home.envs()).unwrap();
        drop(env.create().unwrap());
        fs::write(env.stamp_file(), stamp.to_json()).unwrap();
        assert!(Environment::open(&home, &env, &stamp).is_none());
    }
}
