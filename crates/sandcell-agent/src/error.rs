//! What can go wrong, each said in one sentence with what to do about it.

use std::path::PathBuf;

/// The model could not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{provider} refused the API key (HTTP {status}: {message}); check {key_source}")]
    Unauthorized {
        provider: String,
        status: u16,
        message: String,
        key_source: String,
    },
    #[error("{provider} does not know the model `{model}` ({message}); check the name after `{provider}:`")]
    UnknownModel {
        provider: String,
        model: String,
        message: String,
    },
    #[error("the model `{model}` of {provider} cannot call tools ({message}), and sandcell runs code through a tool; choose a model that supports tool calling")]
    ToolsUnsupported {
        provider: String,
        model: String,
        message: String,
    },
    #[error("the conversation is too long for the model's context window ({message}); start a new conversation or choose a model with a larger context")]
    ContextTooLong { message: String },
    #[error("{provider} rejected the request (HTTP {status}: {message})")]
    Rejected {
        provider: String,
        status: u16,
        message: String,
    },
    #[error("{provider} is unavailable ({reason}) after {attempts} attempts; try again later")]
    Unavailable {
        provider: String,
        reason: String,
        attempts: u32,
    },
    #[error("the connection to {provider} closed before the answer was complete; the conversation so far is kept, send the message again")]
    Cut { provider: String },
    #[error(
        "{provider} sent a response sandcell cannot read ({detail}); try again, or another model"
    )]
    Malformed { provider: String, detail: String },
    #[error("{provider} reported an error while answering ({message}); the conversation so far is kept, send the message again")]
    MidStream { provider: String, message: String },
}

/// Why a conversation turn or its set-up failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The model is not configured, or not configured right.
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("the Python session failed: {0}")]
    Session(#[from] sandcell_session::SessionError),
    #[error("cannot use {path}: {message}")]
    Io { path: PathBuf, message: String },
    /// A file in the session's working directory.
    #[error(transparent)]
    SessionFile(#[from] sandcell_safedir::SafeDirError),
    #[error("{path} is not a sandcell conversation (line {line}: {message})")]
    Transcript {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

impl AgentError {
    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        AgentError::Io {
            path: path.into(),
            message: error.to_string(),
        }
    }
}
