//! The HTTP door of sandcell (`sandcell serve`).
//!
//! For: the HTTP API under `/api/v1` (sessions, executions streamed as Server-Sent
//! Events or answered as JSON, re-attaching to an execution, the files of each session's
//! `/mnt/data` with uploads streamed to disk, conversations with a model and their event
//! streams), API keys read from `Authorization: Bearer`, Prometheus metrics, an OpenAPI
//! document generated from the handlers, and the web app (`sandcell-web`) at `/`. Each
//! handler parses its request, calls the core (`sandcell-service`) and maps the core's
//! errors in one place (the `From<ServiceError>` in `api/error.rs`).
//!
//! Not for: any rule of the core (limits, ownership, paths, sessions' lifecycle:
//! `sandcell-service`), running Python (`sandcell-session`), the agent loop
//! (`sandcell-agent`), the page itself (`sandcell-web`), or the command line (the
//! `sandcell` binary starts the runtime and calls [`Server`]).

mod api;
mod config;
mod server;
mod state;

pub use api::{openapi, router, API_PREFIX, MCP_PATH};
pub use config::{ServerConfig, DEFAULT_LISTEN};
pub use server::{Server, ServerError};
pub use state::AppState;
