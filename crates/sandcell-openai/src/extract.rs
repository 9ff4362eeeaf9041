//! Request extractors whose every rejection is an [`OpenAiError`], so no malformed
//! request gets axum's plain-text answers.

use crate::error::OpenAiError;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sandcell_service::User;

/// Path parameters.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(OpenAiError))]
pub struct Path<T>(pub T);

/// Query parameters.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(OpenAiError))]
pub struct Query<T>(pub T);

/// A JSON body.
#[derive(axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(OpenAiError))]
pub struct Json<T>(pub T);

impl From<PathRejection> for OpenAiError {
    fn from(rejection: PathRejection) -> Self {
        OpenAiError::bad_request(format!(
            "The URL path is not valid: {}.",
            rejection.body_text()
        ))
    }
}

impl From<QueryRejection> for OpenAiError {
    fn from(rejection: QueryRejection) -> Self {
        OpenAiError::bad_request(format!(
            "The query string is not valid: {}.",
            rejection.body_text()
        ))
    }
}

impl From<JsonRejection> for OpenAiError {
    fn from(rejection: JsonRejection) -> Self {
        OpenAiError::bad_request(format!(
            "The request body is not valid: {}.",
            rejection.body_text().trim_end_matches('.')
        ))
    }
}

/// Who the request comes from: put in its extensions by the server, which checked the key.
pub struct Caller(pub User);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = OpenAiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, OpenAiError> {
        parts
            .extensions
            .get::<User>()
            .cloned()
            .map(Caller)
            .ok_or_else(|| {
                OpenAiError::internal("A request reached /v1 without its user", &"no user")
            })
    }
}
