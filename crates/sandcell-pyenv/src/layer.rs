//! Operator-defined environments: the base environment plus a read-only package layer.
//!
//! A layer is built with the base environment's interpreter as `pip install --target
//! <layer>/site -c <base requirements> <requirements…>`: the constraints keep every package
//! the base has at the base's version, and a conflict with the base fails the build with
//! pip's own reason; the dependencies pip installed although the base has them are then
//! removed, so the layer only adds. It lives under the base environment's
//! directory (`layers/<name>-<hash>/`), so it shares its lifetime, its in-use lock and
//! the sandbox's read-only view of it, and it never changes once `layer.json` marks it
//! ready. pip finds the package index through its own environment variables
//! (`PIP_INDEX_URL`, `PIP_EXTRA_INDEX_URL`, …) of the process that builds it.

use crate::error::{io_error, PyenvError};
use crate::setup::{
    packages_in, pip_install_command, write_atomically, EnvInfo, Environment, Package,
    SetupProgress,
};
use crate::stamp::sha256_hex;
use crate::store::setup_lock;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;

/// Written last: a layer directory without it is not ready and is never used.
const READY: &str = "layer.json";
/// The longest name an environment may have.
const MAX_NAME: usize = 64;
/// At most this many characters of pip's reason go into a build error.
const MAX_REASON: usize = 2000;

/// What the operator configures for one environment (`[environments.NAME]` in the config
/// file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerSpec {
    /// pip requirement lines (`shapely==2.0.6`, `pyproj>=3.6`).
    #[serde(default)]
    pub requirements: Vec<String>,
    /// Modules the environment's template imports before it forks sessions, besides the
    /// base environment's.
    #[serde(default)]
    pub preload: Vec<String>,
}

/// A ready layer: the packages of one configured environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    name: String,
    spec: LayerSpec,
    dir: PathBuf,
}

/// What `layer.json` records.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct LayerRecord {
    name: String,
    requirements: Vec<String>,
}

impl Layer {
    /// The layer of environment `name` on top of `base`, built first (under the setup
    /// lock) if it is not ready yet.
    pub fn ensure(
        base: &Environment,
        name: &str,
        spec: &LayerSpec,
        progress: SetupProgress,
    ) -> Result<Self, PyenvError> {
        let layer = Self::planned(base, name, spec)?;
        if layer.is_ready() {
            return Ok(layer);
        }
        // Another process may be building the same layer: one builds, the others wait and
        // then find it ready.
        let _setup = setup_lock(base.home().root())?;
        if layer.is_ready() {
            return Ok(layer);
        }
        layer.build(base, progress)?;
        Ok(layer)
    }

    /// Where the layer of environment `name` is (or would be) on top of `base`.
    pub fn planned(base: &Environment, name: &str, spec: &LayerSpec) -> Result<Self, PyenvError> {
        check_name(name)?;
        let hash = sha256_hex(layer_key(name, &spec.requirements).as_bytes());
        Ok(Self {
            name: name.to_owned(),
            spec: spec.clone(),
            dir: layers_dir(base.dir()).join(format!("{name}-{}", &hash[..16])),
        })
    }

    /// Whether the layer is complete (`layer.json` written, and it records this layer).
    pub fn is_ready(&self) -> bool {
        fs::read(self.dir.join(READY))
            .ok()
            .and_then(|json| serde_json::from_slice::<LayerRecord>(&json).ok())
            .is_some_and(|record| record == self.record())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn spec(&self) -> &LayerSpec {
        &self.spec
    }

    /// The layer's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory on `sys.path` (at its end) of the environment's sessions.
    pub fn site(&self) -> PathBuf {
        self.dir.join("site")
    }

    /// The distributions the layer adds to the base environment, sorted by name, read
    /// with `base`'s interpreter the way the base environment's own are.
    pub fn packages(&self, base: &Environment) -> Result<Vec<Package>, PyenvError> {
        packages_in(&base.info().python, &self.site())
    }

    fn record(&self) -> LayerRecord {
        LayerRecord {
            name: self.name.clone(),
            requirements: self.spec.requirements.clone(),
        }
    }

    /// Builds the layer into its directory, which becomes ready only at the end. The
    /// caller holds the setup lock.
    fn build(&self, base: &Environment, progress: SetupProgress) -> Result<(), PyenvError> {
        // What an interrupted build left; nothing uses a layer that is not ready.
        if self.dir.exists() {
            fs::remove_dir_all(&self.dir).map_err(io_error(&self.dir))?;
        }
        fs::create_dir_all(&self.dir).map_err(io_error(&self.dir))?;
        let requirements = self.dir.join("requirements.txt");
        let mut lines = self.spec.requirements.join("\n");
        lines.push('\n');
        write_atomically(&requirements, lines.as_bytes())?;
        progress(&format!(
            "installing the environment {} ({}) on top of the base environment",
            self.name,
            self.spec.requirements.join(", ")
        ));
        let output = pip_install_command(&base.info().python)
            .arg("--target")
            .arg(self.site())
            .arg("-c")
            .arg(base.requirements_file())
            .arg("-r")
            .arg(&requirements)
            .stdin(Stdio::null())
            .output()
            .map_err(io_error(&base.info().python))?;
        if !output.status.success() {
            // Best effort: the next build removes whatever is left anyway.
            let _ = fs::remove_dir_all(&self.dir);
            return Err(PyenvError::LayerFailed {
                name: self.name.clone(),
                reason: pip_reason(&String::from_utf8_lossy(&output.stderr), output.status),
            });
        }
        let pruned = prune_base_packages(&self.site(), base.info())?;
        if pruned > 0 {
            progress(&format!(
                "left out of the environment {} {pruned} package(s) the base environment already has",
                self.name
            ));
        }
        let json = serde_json::to_vec_pretty(&self.record()).map_err(|e| PyenvError::Broken {
            path: self.dir.clone(),
            reason: e.to_string(),
        })?;
        write_atomically(&self.dir.join(READY), &json)
    }
}

/// Removes from the layer `site` the distributions the base environment has. pip
/// `--target` installs a requirement's dependencies even when the base has them; the
/// constraints made them the base's own versions, which sessions import from the base
/// anyway (the layer is last on `sys.path`), so they would only take disk. Returns how
/// many were removed.
fn prune_base_packages(site: &Path, base: &EnvInfo) -> Result<usize, PyenvError> {
    let in_base: HashSet<String> = base
        .packages
        .iter()
        .map(|p| normalized_name(&p.name))
        .collect();
    let mut removed = 0;
    // The directories files were removed from, removed in turn once empty.
    let mut emptied = BTreeSet::new();
    for entry in fs::read_dir(site).map_err(io_error(site))? {
        let dist_info = entry.map_err(io_error(site))?.path();
        let is_dist_info = dist_info
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".dist-info"));
        if !is_dist_info {
            continue;
        }
        let Some(name) = metadata_name(&dist_info.join("METADATA")) else {
            continue;
        };
        if !in_base.contains(&normalized_name(&name)) {
            continue;
        }
        let record_path = dist_info.join("RECORD");
        let record = fs::read_to_string(&record_path).map_err(io_error(&record_path))?;
        for file in record.lines().filter_map(record_path_of) {
            let relative = Path::new(file);
            // Only files inside the layer (RECORD may name scripts in `../bin`).
            if relative
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
            {
                match fs::remove_file(site.join(relative)) {
                    Ok(()) => emptied.extend(relative.ancestors().skip(1).map(|d| site.join(d))),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_error(site.join(relative))(e)),
                }
            }
        }
        if dist_info.exists() {
            fs::remove_dir_all(&dist_info).map_err(io_error(&dist_info))?;
        }
        removed += 1;
    }
    // Deepest first; a directory that still holds something (another distribution's
    // files, in a shared namespace package) stays.
    for dir in emptied.iter().rev().filter(|dir| dir.as_path() != site) {
        let _ = fs::remove_dir(dir);
    }
    Ok(removed)
}

/// The path of one RECORD line (CSV: a path with a comma is quoted).
fn record_path_of(line: &str) -> Option<&str> {
    let path = match line.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next()?,
        None => line.split(',').next()?,
    };
    (!path.is_empty()).then_some(path)
}

/// `Name:` of a distribution's METADATA.
fn metadata_name(metadata: &Path) -> Option<String> {
    let text = fs::read_to_string(metadata).ok()?;
    text.lines()
        .take_while(|line| !line.is_empty())
        .find_map(|line| line.strip_prefix("Name:"))
        .map(|name| name.trim().to_owned())
}

/// A distribution name as PEP 503 compares them: lower case, runs of `-`, `_`, `.` as one `-`.
fn normalized_name(name: &str) -> String {
    let mut normalized = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !normalized.ends_with('-') {
                normalized.push('-');
            }
        } else {
            normalized.push(c.to_ascii_lowercase());
        }
    }
    normalized
}

/// The directory of the layers built on top of the base environment in `env_dir`.
pub(crate) fn layers_dir(env_dir: &Path) -> PathBuf {
    env_dir.join("layers")
}

/// What names a layer's directory: its name and its requirements, one per line.
fn layer_key(name: &str, requirements: &[String]) -> String {
    let mut key = name.to_owned();
    for line in requirements {
        key.push('\n');
        key.push_str(line);
    }
    key
}

/// Names go into directory names, URLs and JSON: letters, digits, `_` and `-`.
fn check_name(name: &str) -> Result<(), PyenvError> {
    let plain = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        Ok(())
    } else {
        Err(PyenvError::BadLayerName { name: name.into() })
    }
}

/// pip's own explanation of a failure: its `ERROR:` lines, else its last line.
fn pip_reason(stderr: &str, status: std::process::ExitStatus) -> String {
    let errors: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("ERROR:"))
        .map(|line| line.trim_start_matches("ERROR:").trim())
        .collect();
    let reason = if errors.is_empty() {
        stderr
            .lines()
            .map(str::trim)
            .rfind(|line| !line.is_empty())
            .map_or_else(|| format!("pip exited with {status}"), str::to_owned)
    } else {
        errors.join(" ")
    };
    match reason.char_indices().nth(MAX_REASON) {
        Some((cut, _)) => format!("{}…", &reason[..cut]),
        None => reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain() {
        for good in ["geo", "ml_2", "a-b"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "../x", "a b", "x/y", &"n".repeat(MAX_NAME + 1)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_compare_as_pep_503_says() {
        assert_eq!(normalized_name("Typing_Extensions"), "typing-extensions");
        assert_eq!(normalized_name("zope..interface"), "zope-interface");
        assert_eq!(record_path_of("a/b.py,sha256=x,1"), Some("a/b.py"));
        assert_eq!(record_path_of("\"a,b.py\",sha256=x,1"), Some("a,b.py"));
        assert_eq!(record_path_of(""), None);
    }

    #[test]
    fn pip_reason_is_its_error_lines() {
        let stderr = "Looking in indexes: http://x\nERROR: Could not find a version that satisfies the requirement nope\nERROR: No matching distribution found for nope\n";
        let status = std::process::Command::new("false").status().unwrap();
        assert_eq!(
            pip_reason(stderr, status),
            "Could not find a version that satisfies the requirement nope No matching distribution found for nope"
        );
        assert_eq!(pip_reason("warning\nlast words\n", status), "last words");
    }
}
