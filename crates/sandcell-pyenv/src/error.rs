use std::path::PathBuf;

/// Why the Python environment could not be found or set up. Each message is a sentence
/// a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum PyenvError {
    #[error("cannot find sandcell's data directory: neither SANDCELL_HOME, XDG_DATA_HOME nor HOME is set")]
    NoHome,
    #[error("cannot use {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot run {python} (install python3, 3.10 or newer, or set SANDCELL_PYTHON to its path)"
    )]
    PythonMissing {
        python: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{python} did not answer as a Python interpreter ({reason}); install python3, 3.10 or newer, or set SANDCELL_PYTHON to its path")]
    NotPython { python: String, reason: String },
    #[error("{python} is Python {version}, but sandcell needs 3.10 or newer; install a newer python3 or set SANDCELL_PYTHON")]
    PythonTooOld { python: String, version: String },
    #[error("{python} cannot create virtual environments (the venv/ensurepip module is missing); on Debian or Ubuntu run `apt-get install python3-venv`, then run `sandcell setup` again")]
    VenvMissing { python: String },
    #[error("{step} failed ({status}); the output above says why; fix it and run `sandcell setup` again")]
    StepFailed { step: String, status: String },
    #[error(
        "the Python environment in {path} is not usable ({reason}); run `sandcell setup` again"
    )]
    Broken { path: PathBuf, reason: String },
    #[error("the environment {name} could not be built: {reason}; fix its requirements in the config file (or the package index pip is given by PIP_INDEX_URL) and run `sandcell setup` again")]
    LayerFailed { name: String, reason: String },
    #[error("{name:?} cannot name an environment: use 1 to 64 letters, digits, `_` or `-`")]
    BadLayerName { name: String },
}

pub(crate) fn io_error(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> PyenvError {
    let path = path.into();
    move |source| PyenvError::Io { path, source }
}
