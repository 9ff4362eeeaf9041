//! What every request handler can reach.

use crate::config::ServerConfig;
use sandcell_service::Service;
use std::sync::Arc;

/// The server's shared state, handed to every handler (`State<AppState>`). Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<ServerConfig>,
    /// The core every handler calls.
    pub service: Arc<Service>,
    /// Carries requests to the node that runs their session.
    pub client: reqwest::Client,
}
