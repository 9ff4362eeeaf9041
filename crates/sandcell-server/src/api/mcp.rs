//! `/mcp`: the Model Context Protocol over Streamable HTTP (crate `sandcell-mcp`), behind
//! the same API keys as `/api/v1`.

use crate::state::AppState;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use sandcell_mcp::{HttpOptions, McpConfig};
use sandcell_service::User;
use tokio_util::sync::CancellationToken;

pub const MCP_PATH: &str = "/mcp";

/// The hosts a loopback server is always reached by.
const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The `/mcp` route: each request's key is checked (as for `/api/v1`) and its user handed
/// to the MCP door, which acts for that user only.
pub(super) fn routes(state: &AppState, stop: CancellationToken) -> Router<AppState> {
    let config = &state.config;
    let mut allowed_hosts: Vec<String> = LOOPBACK_HOSTS.map(str::to_owned).to_vec();
    if !config.listen.ip().is_unspecified() {
        allowed_hosts.push(config.listen.ip().to_string());
    }
    allowed_hosts.extend(config.allowed_hosts.iter().cloned());
    let mcp = sandcell_mcp::http_service(
        state.service.clone(),
        McpConfig {
            default_limits: None,
            max_upload_bytes: config.max_upload_bytes,
            default_workdir: None,
            default_environment: None,
        },
        HttpOptions {
            allowed_hosts,
            max_request_bytes: config.max_request_bytes,
            stop,
        },
    );
    Router::new()
        .route_service(MCP_PATH, mcp)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
}

/// Refuses a request without a valid key (401, as on `/api/v1`); passes on its user.
async fn authenticate(user: User, mut request: Request, next: Next) -> Response {
    request.extensions_mut().insert(user);
    next.run(request).await
}
