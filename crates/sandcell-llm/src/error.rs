//! Errors reported by a provider, in a response body or in the middle of a stream.

use serde::Deserialize;
use std::fmt;

/// An error the provider reported: an HTTP error body or a mid-stream error event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderError {
    /// The HTTP status, when the error came as a response (not mid-stream).
    pub status: Option<u16>,
    /// The provider's own error type (`invalid_request_error`, `rate_limit_error`, …);
    /// Ollama gives none.
    pub kind: Option<String>,
    pub message: String,
}

impl ProviderError {
    /// Reads an error response body. All three error envelopes share the `error` key
    /// (OpenAI `{"error":{"message","type",…}}`, Anthropic
    /// `{"type":"error","error":{"type","message"}}`, Ollama `{"error":"…"}`), so no
    /// protocol is needed. A body in none of these shapes (a proxy's HTML page, say) is
    /// kept whole as the message: the status alone is still an error worth reporting.
    pub fn from_body(status: Option<u16>, body: &[u8]) -> Self {
        match serde_json::from_slice::<ErrorEnvelope>(body) {
            Ok(envelope) => envelope.error.into_provider_error(status),
            Err(_) => ProviderError {
                status,
                kind: None,
                message: String::from_utf8_lossy(body).trim().to_owned(),
            },
        }
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(status) => write!(f, "the provider answered HTTP {status}")?,
            None => write!(f, "the provider reported an error mid-stream")?,
        }
        if let Some(kind) = &self.kind {
            write!(f, " ({kind})")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ProviderError {}

/// `{"error": …}`: the error body of every protocol, and OpenAI's and Ollama's
/// mid-stream error.
#[derive(Deserialize)]
pub(crate) struct ErrorEnvelope {
    pub(crate) error: ErrorDetail,
}

/// The value under `error`: an object for OpenAI and Anthropic, a string for Ollama.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum ErrorDetail {
    Object {
        #[serde(rename = "type")]
        kind: Option<String>,
        message: String,
    },
    Text(String),
}

impl ErrorDetail {
    pub(crate) fn into_provider_error(self, status: Option<u16>) -> ProviderError {
        match self {
            ErrorDetail::Object { kind, message } => ProviderError {
                status,
                kind,
                message,
            },
            ErrorDetail::Text(message) => ProviderError {
                status,
                kind: None,
                message,
            },
        }
    }
}
