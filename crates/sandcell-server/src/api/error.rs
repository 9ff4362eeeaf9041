//! [`ApiError`], what a request gets back (always the JSON body `{"error": {"code",
//! "message"}}`). The core's [`ServiceError`] becomes an [`ApiError`] here, in one place.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sandcell_service::ServiceError;
use serde::Serialize;
use std::time::Duration;
use utoipa::ToSchema;

/// What kind of error a request met; each has one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed (not JSON, a bad multipart body, a bad header).
    BadRequest,
    /// A file path that is absolute, climbs out with `..`, or goes through a symbolic link.
    InvalidPath,
    /// No API key, or one this server does not know.
    Unauthorized,
    NotFound,
    MethodNotAllowed,
    /// The session is running another execution.
    SessionBusy,
    /// The request conflicts with what is there (a directory where a file is asked for).
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    /// Well-formed, but a value is out of range or missing.
    InvalidRequest,
    /// The user already runs as many live sessions as one user may (others are not
    /// affected); `Retry-After` says when to try again.
    SessionQuota,
    /// The server already runs as many live sessions as it is allowed, all busy;
    /// `Retry-After` says when to try again.
    TooManySessions,
    /// The session runs on another node that cannot be reached now (or the database
    /// cannot say which node runs it); `Retry-After` says when to try again.
    NodeUnavailable,
    /// The server is stopping and takes no new executions.
    ShuttingDown,
    /// Something failed inside the server (a session that could not start, the disk).
    Internal,
}

impl ErrorCode {
    pub fn status(self) -> StatusCode {
        match self {
            Self::BadRequest | Self::InvalidPath => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::SessionBusy | Self::Conflict => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::InvalidRequest => StatusCode::UNPROCESSABLE_ENTITY,
            Self::SessionQuota => StatusCode::TOO_MANY_REQUESTS,
            Self::TooManySessions | Self::NodeUnavailable | Self::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The code as it appears in JSON (and in the errors metric).
    pub fn as_str(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// One plain sentence saying what went wrong and, where it helps, what to do.
    pub message: String,
}

/// An error answered to a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Sent as `Retry-After` (whole seconds, rounded up).
    pub retry_after: Option<Duration>,
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        let code = match &error {
            ServiceError::NotFound(_) => ErrorCode::NotFound,
            ServiceError::Invalid(_) => ErrorCode::InvalidRequest,
            ServiceError::InvalidPath(_) => ErrorCode::InvalidPath,
            ServiceError::Busy(_) => ErrorCode::SessionBusy,
            ServiceError::Conflict(_) => ErrorCode::Conflict,
            ServiceError::UserLimit { .. } => ErrorCode::SessionQuota,
            ServiceError::ServerFull { .. } => ErrorCode::TooManySessions,
            ServiceError::Unavailable { .. } => ErrorCode::NodeUnavailable,
            ServiceError::ShuttingDown(_) => ErrorCode::ShuttingDown,
            ServiceError::Unauthorized(_) => ErrorCode::Unauthorized,
            ServiceError::Internal(_) => ErrorCode::Internal,
        };
        Self {
            code,
            message: error.to_string(),
            retry_after: error.retry_after(),
        }
    }
}

/// A file error is the core's error about a file.
impl From<sandcell_service::FileError> for ApiError {
    fn from(error: sandcell_service::FileError) -> Self {
        ServiceError::from(error).into()
    }
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("There is no {what}."))
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    /// A failure inside the server; the details go to the log, the sentence to the client.
    pub fn internal(what: &str, error: &dyn std::fmt::Display) -> Self {
        ServiceError::internal(what, error).into()
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message.clone(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.code.status(), axum::Json(self.body())).into_response();
        if self.code == ErrorCode::Unauthorized {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(wait) = self.retry_after {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        // The metrics layer counts errors by code, whichever handler or extractor made them.
        response.extensions_mut().insert(self.code);
        response
    }
}
