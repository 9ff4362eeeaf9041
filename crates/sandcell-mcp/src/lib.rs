//! The Model Context Protocol door of sandcell.
//!
//! For: speaking MCP (on the official Rust SDK, `rmcp`) to clients such as Claude
//! Desktop, Claude Code, Cursor or VS Code. Stateful Python sessions are offered as
//! tools (`run_python`, `create_session`, `list_sessions`, `close_session`,
//! `restart_session`, `interrupt`, `upload_file`, `list_files`, `read_file`,
//! `install_packages`) and the files
//! of a session's `/mnt/data` as resources
//! (`sandcell://sessions/{session_id}/files/{path}`). Like every door it parses a
//! request, calls the core (`sandcell-service`) and maps the core's `ServiceError` in
//! one place ([`error`]); each connection has a default session, created on first use.
//! Over HTTP, MCP sessions are kept in the database (`sessions_kept`), so that any node
//! sharing it can take up a request of one.
//!
//! Not for: any rule of the core (limits, ownership, path checks, session lifecycle:
//! those are `sandcell-service`'s), running Python (`sandcell-session`), starting the
//! process or choosing the transport's options (the `sandcell mcp` command).

mod error;
mod handler;
mod params;
mod paths;
mod results;
mod sessions_kept;

pub use handler::{McpConfig, SandcellMcp, StatelessDefaults};
pub use paths::session_named;

use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::ServiceExt;
use sandcell_service::Service;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Why serving a connection stopped before its client went away.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("the MCP connection could not start: {0}")]
    Start(String),
    #[error("the MCP connection failed: {0}")]
    Connection(String),
}

/// Serves one client on this process's stdin and stdout until it disconnects.
pub async fn serve_stdio(server: SandcellMcp) -> Result<(), McpError> {
    let running = server
        .serve(rmcp::transport::stdio_pipes())
        .await
        .map_err(|e| McpError::Start(e.to_string()))?;
    running
        .waiting()
        .await
        .map(drop)
        .map_err(|e| McpError::Connection(e.to_string()))
}

/// How the Streamable HTTP transport checks and bounds its requests.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// The `Host` values (names or addresses, optionally with `:port`) requests may carry;
    /// the same hosts are the only browser origins accepted (a request without `Origin`,
    /// from a program, is not a browser's). Anything else is refused: this is what keeps a
    /// web page from reaching the server through DNS rebinding.
    pub allowed_hosts: Vec<String>,
    /// The largest request body, in bytes.
    pub max_request_bytes: usize,
    /// Cancelled when the server stops: every connection ends.
    pub stop: CancellationToken,
}

/// The Streamable HTTP transport as a tower service, for the HTTP server to route (at
/// `/mcp`). Each request must carry, in its extensions, the [`sandcell_service::User`]
/// the server authenticated; an MCP session belongs to the user who started it.
pub fn http_service(
    service: Arc<Service>,
    config: McpConfig,
    options: HttpOptions,
) -> StreamableHttpService<SandcellMcp, LocalSessionManager> {
    let origins: Vec<String> = options
        .allowed_hosts
        .iter()
        .flat_map(|host| allowed_origins(host))
        .collect();
    let mut http = StreamableHttpServerConfig::default()
        .with_allowed_hosts(options.allowed_hosts)
        .with_allowed_origins(origins)
        .enforce_origin_validation()
        .with_max_request_body_bytes(options.max_request_bytes)
        .with_cancellation_token(options.stop);
    http.session_store = Some(Arc::new(sessions_kept::KeptSessions(service.store.clone())));
    let stateless_defaults = StatelessDefaults::default();
    StreamableHttpService::new(
        move || {
            Ok(SandcellMcp::authenticated_per_request(
                service.clone(),
                config.clone(),
                stateless_defaults.clone(),
            ))
        },
        Arc::default(),
        http,
    )
}

/// The browser origins of a host: both schemes, on its port or any.
fn allowed_origins(host: &str) -> [String; 2] {
    let bracketed = if host.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let authority = if bracketed.ends_with(']') || !bracketed.contains(':') {
        format!("{bracketed}:*")
    } else {
        bracketed
    };
    [
        format!("http://{authority}"),
        format!("https://{authority}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_follow_the_allowed_hosts() {
        assert_eq!(
            allowed_origins("localhost"),
            ["http://localhost:*", "https://localhost:*"]
        );
        assert_eq!(
            allowed_origins("::1"),
            ["http://[::1]:*", "https://[::1]:*"]
        );
        assert_eq!(
            allowed_origins("example.com:8443"),
            ["http://example.com:8443", "https://example.com:8443"]
        );
    }
}
