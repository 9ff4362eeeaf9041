//! `/v1`: the OpenAI-compatible door (crate `sandcell-openai`), behind the same API keys
//! as `/api/v1`; a refused key is answered in OpenAI's error shape.

use super::auth::user_of;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use sandcell_openai::{OpenAiConfig, OpenAiError, OPENAI_PREFIX};

/// The `/v1` routes: each request's key is checked and its user handed to the door.
pub(super) fn routes(state: &AppState) -> Router<AppState> {
    let door = sandcell_openai::router(
        state.service.clone(),
        OpenAiConfig {
            max_upload_bytes: state.config.max_upload_bytes,
        },
    );
    Router::new()
        .nest(OPENAI_PREFIX, door)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
}

async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    match user_of(&parts, &state).await {
        Ok(user) => {
            parts.extensions.insert(user);
            next.run(Request::from_parts(parts, body)).await
        }
        Err(error) => OpenAiError::from(error).into_response(),
    }
}
