//! The HTTP server of sandcell (`sandcell serve`).
//!
//! For: serving sessions over HTTP: creating, listing and deleting them, running code
//! with the output streamed as Server-Sent Events (or answered as JSON), interrupts and
//! restarts, the files of each session's `/mnt/data` (uploads streamed to disk, paths
//! opened without following links); conversations with a model (the agent loop of
//! `sandcell-agent`, its events streamed, every record stored as it happens); users
//! identified by API keys, idle sessions stopped, sessions, conversations and files kept
//! across server restarts in one SQLite database and the data directory, Prometheus
//! metrics, an OpenAPI document generated from the handlers, and the web app
//! (`sandcell-web`) at `/`.
//!
//! Not for: running Python (`sandcell-session`), the agent loop and the providers' wire
//! formats (`sandcell-agent`, `sandcell-llm`), the page itself (`sandcell-web`), or the
//! command line (the `sandcell` binary starts the runtime and calls [`Server`]).

mod api;
mod auth;
mod config;
mod conversations;
mod error;
mod files;
mod limits;
mod metrics;
mod models;
mod server;
mod sessions;
mod state;
mod store;

pub use api::{openapi, router, API_PREFIX};
pub use auth::{create_key, Auth, KeyError};
pub use config::{ServerConfig, DEFAULT_LISTEN};
pub use conversations::{
    ConversationDetail, ConversationInfo, Conversations, TurnEvent, TurnOutcome,
};
pub use error::{ApiError, ErrorBody, ErrorCode, ServerError};
pub use files::{FileInfo, WorkDir};
pub use limits::{LimitsRequest, SessionLimits};
pub use metrics::Metrics;
pub use models::{Models, ModelsInfo, MODEL_HINT};
pub use server::Server;
pub use sessions::{
    Checkout, RunningExecution, SessionInfo, SessionState, Sessions, RESTARTED_NOTICE,
};
pub use state::AppState;
pub use store::{ConversationRecord, SessionRecord, Store, StoreError, User, LOCAL_USER};
