//! [`OpenAiError`]: every error of `/v1`, in OpenAI's shape
//! (`{"error": {"message", "type", "param", "code"}}`) with OpenAI's status codes, so the
//! SDKs raise the exception they would for OpenAI (`BadRequestError`,
//! `AuthenticationError`, `NotFoundError`, `RateLimitError`, …). The core's
//! [`ServiceError`] becomes one here, in one place.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sandcell_service::ServiceError;
use serde::Serialize;
use std::time::Duration;

/// An error answered to a request on `/v1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAiError {
    status: StatusCode,
    body: ErrorDetail,
    retry_after: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct ErrorDetail {
    /// One plain sentence.
    message: String,
    #[serde(rename = "type")]
    kind: &'static str,
    /// The request field at fault, when one is.
    param: Option<String>,
    code: Option<&'static str>,
}

/// OpenAI's `type` of a request it refuses.
const INVALID_REQUEST: &str = "invalid_request_error";

impl OpenAiError {
    fn new(
        status: StatusCode,
        kind: &'static str,
        code: Option<&'static str>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            body: ErrorDetail {
                message: message.into(),
                kind,
                param: None,
                code,
            },
            retry_after: None,
        }
    }

    /// A malformed or unacceptable request (400).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, INVALID_REQUEST, None, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, INVALID_REQUEST, None, message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            INVALID_REQUEST,
            None,
            message,
        )
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            INVALID_REQUEST,
            None,
            message,
        )
    }

    /// A failure inside sandcell (500); the details go to the log.
    pub fn internal(what: &str, error: &dyn std::fmt::Display) -> Self {
        ServiceError::internal(what, error).into()
    }

    /// Names the request field at fault.
    pub fn param(mut self, name: impl Into<String>) -> Self {
        self.body.param = Some(name.into());
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<ServiceError> for OpenAiError {
    fn from(error: ServiceError) -> Self {
        let retry_after = error.retry_after();
        let (status, kind, code) = match &error {
            ServiceError::NotFound(_) => (StatusCode::NOT_FOUND, INVALID_REQUEST, None),
            ServiceError::Invalid(_) => (StatusCode::BAD_REQUEST, INVALID_REQUEST, None),
            ServiceError::InvalidPath(_) => (
                StatusCode::BAD_REQUEST,
                INVALID_REQUEST,
                Some("invalid_path"),
            ),
            ServiceError::Busy(_) | ServiceError::Conflict(_) => {
                (StatusCode::CONFLICT, INVALID_REQUEST, Some("conflict"))
            }
            ServiceError::UserLimit { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "requests",
                Some("rate_limit_exceeded"),
            ),
            ServiceError::ServerFull { .. } | ServiceError::ShuttingDown(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                Some("server_overloaded"),
            ),
            ServiceError::Unavailable { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                Some("node_unavailable"),
            ),
            ServiceError::Unauthorized(_) => (
                StatusCode::UNAUTHORIZED,
                INVALID_REQUEST,
                Some("invalid_api_key"),
            ),
            ServiceError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", None),
        };
        Self {
            retry_after,
            ..Self::new(status, kind, code, error.to_string())
        }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: ErrorDetail,
        }
        let mut response = (self.status, axum::Json(Body { error: self.body })).into_response();
        if let Some(wait) = self.retry_after {
            // Whole seconds, rounded up: a client must not come back too early.
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(error: OpenAiError) -> (StatusCode, serde_json::Value, Option<String>) {
        let response = error.into_response();
        let status = response.status();
        let retry = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap(), retry)
    }

    #[tokio::test]
    async fn core_errors_take_openais_shape_and_status() {
        let (status, json, _) = body(ServiceError::not_found("container cntr_x").into()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            json,
            serde_json::json!({"error": {"message": "There is no container cntr_x.",
                "type": "invalid_request_error", "param": null, "code": null}})
        );
        let (status, json, retry) = body(
            ServiceError::UserLimit {
                message: "Too many sessions.".into(),
                retry_after: Duration::from_millis(4500),
            }
            .into(),
        )
        .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(json["error"]["code"], "rate_limit_exceeded");
        assert_eq!(retry.as_deref(), Some("5"));
        let (status, json, _) = body(ServiceError::Unauthorized("No key.".into()).into()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(json["error"]["code"], "invalid_api_key");
        let (status, json, _) = body(OpenAiError::bad_request("Bad.").param("purpose")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(json["error"]["param"], "purpose");
    }
}
