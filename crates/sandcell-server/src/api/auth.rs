//! Who a request comes from: the `Authorization: Bearer KEY` header, checked by the core.

use super::error::ApiError;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sandcell_service::{Auth, ServiceError, User};

impl FromRequestParts<AppState> for User {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(user_of(parts, state).await?)
    }
}

/// The user whose key the request carries (the local user of a server without keys).
pub(super) async fn user_of(parts: &Parts, state: &AppState) -> Result<User, ServiceError> {
    let service = &state.service;
    // A server without keys ignores the header, whatever it holds.
    let key = match (&service.auth, parts.headers.get(AUTHORIZATION)) {
        (Auth::Keys, Some(header)) => Some(
            header
                .to_str()
                .ok()
                .and_then(|value| value.strip_prefix("Bearer "))
                .map(str::trim)
                .ok_or_else(|| {
                    ServiceError::Unauthorized(
                        "The Authorization header must be `Bearer KEY`.".into(),
                    )
                })?,
        ),
        _ => None,
    };
    service.auth.user(&service.store, key).await
}
