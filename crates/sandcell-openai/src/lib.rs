//! The OpenAI-compatible door of sandcell: `/v1` in the shapes of OpenAI's own API
//! reference, so that a program written for OpenAI's SDK runs against `sandcell serve`
//! with only its `base_url`, key and model changed.
//!
//! For: Responses with the `code_interpreter` tool and Chat Completions (each a turn of
//! sandcell's interpreter loop through the core's `Responses`), parsing OpenAI's requests (typed, with serde), calling `sandcell-service`, and
//! answering OpenAI's objects (`file`, `container`, `container.file`, `model`, lists with
//! `first_id`/`last_id`/`has_more`) and errors (`{"error": {"message", "type", "param",
//! "code"}}` with OpenAI's statuses, made from the core's `ServiceError` in one place,
//! [`error`]). Every request's user is put in its extensions by the server, which checks
//! the API key; this crate never sees a key.
//!
//! Not for: rules of the core (limits, ownership, paths, expiry: `sandcell-service`'s
//! `Containers` and `UserFiles`), checking keys, running Python.

mod chat;
mod containers;
mod error;
mod extract;
mod files;
mod list;
mod models;
mod responses;
mod upload;

pub use error::OpenAiError;
pub use responses::container_named;

use axum::http::{Method, Uri};
use axum::Router;
use sandcell_service::Service;
use std::sync::Arc;

/// Where the door is mounted.
pub const OPENAI_PREFIX: &str = "/v1";

/// What the door needs besides the core.
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// Largest upload (one multipart body).
    pub max_upload_bytes: u64,
}

/// What every handler gets.
#[derive(Clone)]
struct DoorState {
    service: Arc<Service>,
    config: Arc<OpenAiConfig>,
}

/// The routes under `/v1` (to be nested there), for any outer state. Each request must
/// carry its [`sandcell_service::User`] in its extensions.
pub fn router<S: Clone + Send + Sync + 'static>(
    service: Arc<Service>,
    config: OpenAiConfig,
) -> Router<S> {
    let state = DoorState {
        service,
        config: Arc::new(config),
    };
    Router::new()
        .merge(models::routes())
        .merge(files::routes())
        .merge(containers::routes())
        .merge(responses::routes())
        .merge(chat::routes())
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .with_state(state)
}

async fn no_route(method: Method, uri: Uri) -> OpenAiError {
    OpenAiError::not_found(format!(
        "There is no route {method} {OPENAI_PREFIX}{}.",
        uri.path()
    ))
}

async fn wrong_method(method: Method, uri: Uri) -> OpenAiError {
    OpenAiError::method_not_allowed(format!(
        "{OPENAI_PREFIX}{} does not take {method}.",
        uri.path()
    ))
}
