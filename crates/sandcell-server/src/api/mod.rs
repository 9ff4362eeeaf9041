//! The HTTP API: one module per resource, each giving an [`OpenApiRouter`] whose
//! handlers carry their own OpenAPI description, so the document is generated from the
//! routes that exist. A new resource adds a module and one `merge` in [`routes`].

mod auth;
mod conversations;
mod error;
mod extract;
mod files;
mod forward;
mod mcp;
mod notebooks;
mod openai;
mod service;
mod sessions;
mod stream;

use crate::state::AppState;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use error::{ApiError, ErrorBody, ErrorCode};
use tokio_util::sync::CancellationToken;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi as Document;
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

/// Where the API lives.
pub const API_PREFIX: &str = "/api/v1";
pub(crate) use forward::client as forwarding_client;
pub use mcp::MCP_PATH;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "sandcell",
        description = "Stateful, sandboxed Python sessions: run code, stream its output, manage its files; conversations with a model that runs code in them. Every error is `{\"error\": {\"code\", \"message\"}}`."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(ErrorBody, ErrorCode)),
    tags(
        (name = "sessions", description = "Sessions and executions"),
        (name = "files", description = "The files of a session's /mnt/data"),
        (name = "conversations", description = "Chats with a model whose code runs in a session"),
        (name = "notebooks", description = "Notebooks saved as you work, exported and opened as .ipynb"),
        (name = "service", description = "Health, metrics and this document"),
    )
)]
struct ApiDoc;

/// Adds the bearer-key scheme the `security` requirement names.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, document: &mut Document) {
        let components = document.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key from `sandcell serve --create-key NAME`. Not needed by a server on a loopback address that has no keys.",
                    ))
                    .build(),
            ),
        );
    }
}

fn routes() -> OpenApiRouter<AppState> {
    let api = OpenApiRouter::new()
        .merge(sessions::routes())
        .merge(files::routes())
        .merge(conversations::routes())
        .merge(notebooks::routes())
        .merge(service::api_routes());
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(service::routes())
        .nest(API_PREFIX, api)
}

/// The OpenAPI document of every route.
pub fn openapi() -> Document {
    let mut document = routes().into_openapi();
    // axum writes a catch-all parameter as `{*path}`; OpenAPI knows only `{path}`.
    document.paths.paths = std::mem::take(&mut document.paths.paths)
        .into_iter()
        .map(|(path, item)| (path.replace("{*", "{"), item))
        .collect();
    document
}

/// The whole server: the API, `/mcp`, `/v1` (OpenAI's API) and the web app. `stop` ends the MCP connections.
pub fn router(state: AppState, stop: CancellationToken) -> Router {
    let (router, _) = routes().split_for_parts();
    router
        .merge(mcp::routes(&state, stop))
        .merge(openai::routes(&state))
        .merge(sandcell_web::router())
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(state.config.max_request_bytes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            forward::forward,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), count_errors))
        .with_state(state)
}

async fn no_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(&format!("route {method} {}", uri.path()))
}

async fn wrong_method(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{} does not take {method}.", uri.path()),
    )
}

/// Counts error responses by code, whichever handler or extractor produced them.
async fn count_errors(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if let Some(code) = response.extensions().get::<ErrorCode>() {
        state.service.metrics.record_error(&code.as_str());
    }
    response
}
