//! [`ServiceError`]: why the core refused or failed a request, in terms of the domain.
//! Each front door maps it to its own protocol (an HTTP status, a JSON-RPC error) in one
//! place; the message is already the one plain sentence a person reads.

use std::time::Duration;

/// Why a request to the core did not succeed. `Display` is the sentence for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// No such thing, or one that belongs to another user (ids reveal nothing).
    #[error("{0}")]
    NotFound(String),
    /// A value out of range, missing or malformed.
    #[error("{0}")]
    Invalid(String),
    /// A file path that is absolute, climbs out with `..`, or goes through a symbolic link.
    #[error("{0}")]
    InvalidPath(String),
    /// The session (or conversation) is running something else.
    #[error("{0}")]
    Busy(String),
    /// The request conflicts with what is there.
    #[error("{0}")]
    Conflict(String),
    /// The user already has as many sessions as they may; others are not affected.
    #[error("{message}")]
    UserLimit {
        message: String,
        retry_after: Duration,
    },
    /// The server as a whole is full.
    #[error("{message}")]
    ServerFull {
        message: String,
        retry_after: Duration,
    },
    /// What was asked for is on another node that cannot be used from here now (or the
    /// database cannot tell whose it is); trying again later helps.
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after: Duration,
    },
    /// The server is stopping and starts nothing new.
    #[error("{0}")]
    ShuttingDown(String),
    /// No API key, or one this server does not know.
    #[error("{0}")]
    Unauthorized(String),
    /// Something failed inside sandcell (a session that could not start, the disk).
    #[error("{0}")]
    Internal(String),
}

impl ServiceError {
    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::NotFound(format!("There is no {what}."))
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }

    /// A failure inside sandcell; the details go to the log, the sentence to the client.
    pub fn internal(what: &str, error: &dyn std::fmt::Display) -> Self {
        tracing::error!("{what}: {error}");
        Self::Internal(format!("{what}: {error}."))
    }

    pub(crate) fn shutting_down() -> Self {
        Self::ShuttingDown("The server is shutting down and starts nothing new.".into())
    }

    /// How long a client should wait before trying again, for errors where waiting helps.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::UserLimit { retry_after, .. }
            | Self::ServerFull { retry_after, .. }
            | Self::Unavailable { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// `text` as a sentence: capitalised, with a full stop.
pub fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    let mut sentence: String = chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default();
    if !sentence.ends_with(['.', '!', '?']) {
        sentence.push('.');
    }
    sentence
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_sentences() {
        assert_eq!(
            ServiceError::not_found("session abc").to_string(),
            "There is no session abc."
        );
        assert_eq!(sentence("disk full"), "Disk full.");
        assert_eq!(sentence("Done!"), "Done!");
        let internal = ServiceError::internal("The session could not start", &"no memory");
        assert_eq!(
            internal.to_string(),
            "The session could not start: no memory."
        );
    }

    #[test]
    fn limits_and_unreachable_nodes_ask_to_retry() {
        let full = ServiceError::ServerFull {
            message: "full".into(),
            retry_after: Duration::from_secs(5),
        };
        assert_eq!(full.retry_after(), Some(Duration::from_secs(5)));
        let elsewhere = ServiceError::Unavailable {
            message: "on another node".into(),
            retry_after: Duration::from_secs(1),
        };
        assert_eq!(elsewhere.retry_after(), Some(Duration::from_secs(1)));
        assert_eq!(ServiceError::invalid("x").retry_after(), None);
    }
}
