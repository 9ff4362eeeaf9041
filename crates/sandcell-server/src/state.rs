//! What every request handler can reach.

use crate::auth::Auth;
use crate::config::ServerConfig;
use crate::conversations::Conversations;
use crate::metrics::Metrics;
use crate::sessions::Sessions;
use crate::store::Store;
use std::sync::Arc;

/// The server's shared state, handed to every handler (`State<AppState>`). Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<ServerConfig>,
    pub store: Store,
    pub sessions: Arc<Sessions>,
    pub conversations: Arc<Conversations>,
    pub metrics: Arc<Metrics>,
    pub auth: Arc<Auth>,
}
