use std::path::PathBuf;

/// Why a session could not be created or driven. Failures of the *code* a session runs
/// are not errors: they are reported in the [`crate::Execution`].
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Environment(#[from] sandcell_pyenv::PyenvError),
    #[error("cannot use {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the Python template process could not start: {0}")]
    TemplateStart(String),
    #[error("could not start a Python session: {0}")]
    Spawn(String),
    #[error("could not build the sandbox: {0}. Run `sandcell doctor` to see which isolation layers this machine supports, or pass --no-sandbox to run without isolation")]
    Sandbox(String),
    #[error("could not give the working directory a filesystem of its own (its disk quota): {0}")]
    Disk(String),
    #[error("lost contact with the Python session: {0}")]
    Protocol(String),
    #[error("a network allowlist needs the sandbox (the session's own network namespace, whose only way out is the proxy); run without --no-sandbox")]
    NetworkNeedsSandbox,
    #[error("{}", unknown_environment(name, configured))]
    UnknownEnvironment {
        name: String,
        configured: Vec<String>,
    },
    #[error("the session has been shut down")]
    Closed,
}

pub(crate) fn io_error(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> SessionError {
    let path = path.into();
    move |source| SessionError::Io { path, source }
}

fn unknown_environment(name: &str, configured: &[String]) -> String {
    if configured.is_empty() {
        format!("there is no environment named {name:?}: none is configured besides the base one; leave the environment out, or add [environments.{name}] to the config file")
    } else {
        format!(
            "there is no environment named {name:?}; the configured ones are {}",
            configured.join(", ")
        )
    }
}
