//! The Model Context Protocol door of sandcell.
//!
//! For: speaking MCP (on the official Rust SDK, `rmcp`) to clients such as Claude
//! Desktop, Claude Code, Cursor or VS Code. Stateful Python sessions are offered as
//! tools (`run_python`, `create_session`, `list_sessions`, `close_session`,
//! `restart_session`, `interrupt`, `upload_file`, `list_files`, `read_file`) and the files
//! of a session's `/mnt/data` as resources
//! (`sandcell://sessions/{session_id}/files/{path}`). Like every door it parses a
//! request, calls the core (`sandcell-service`) and maps the core's `ServiceError` in
//! one place ([`error`]); each connection has a default session, created on first use.
//!
//! Not for: any rule of the core (limits, ownership, path checks, session lifecycle:
//! those are `sandcell-service`'s), running Python (`sandcell-session`), starting the
//! process or choosing the transport's options (the `sandcell mcp` command).

mod error;
mod handler;
mod params;
mod paths;
mod results;

pub use handler::{McpConfig, SandcellMcp};

use rmcp::ServiceExt;

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
