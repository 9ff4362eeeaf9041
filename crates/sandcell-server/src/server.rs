//! Starting, running and stopping the server.

use crate::config::ServerConfig;
use crate::state::AppState;
use axum::serve::ListenerExt;
use sandcell_pyenv::EnvInfo;
use sandcell_service::{Auth, Service, StartError, Store};
use sandcell_session::Runtime;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long running executions have to end after their interrupt at shutdown, before
/// they are abandoned (and their processes stopped).
const EXECUTION_GRACE: Duration = Duration::from_secs(10);
/// How long connections then have to finish before they are dropped.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// A server bound to its address, ready to [`run`](Server::run).
pub struct Server {
    listener: TcpListener,
    config: ServerConfig,
    store: Store,
    auth: Auth,
}

impl Server {
    /// Opens the data directory and the database, decides how requests are
    /// authenticated and binds the address; no Python runs yet.
    ///
    /// Refuses to listen beyond loopback without API keys.
    pub async fn bind(config: ServerConfig) -> Result<Self, ServerError> {
        let data_dir = &config.service.data_dir;
        std::fs::create_dir_all(data_dir).map_err(|source| StartError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        let store = config
            .service
            .open_store()
            .await
            .map_err(StartError::from)?;
        let auth = if store.has_keys().await.map_err(StartError::from)? {
            Auth::Keys
        } else if config.listen.ip().is_loopback() {
            Auth::Local(store.local_user().await.map_err(StartError::from)?)
        } else {
            return Err(ServerError::KeysRequired {
                listen: config.listen,
            });
        };
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Listen {
                    listen: config.listen,
                    source,
                })?;
        let mut config = config;
        if config.service.advertise_url.is_empty() {
            let bound = listener.local_addr().map_err(ServerError::Serve)?;
            config.service.advertise_url = default_advertise_url(bound);
        }
        Ok(Self {
            listener,
            config,
            store,
            auth,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        self.listener.local_addr().map_err(ServerError::Serve)
    }

    /// Where other nodes sharing the database reach this one.
    pub fn advertise_url(&self) -> &str {
        &self.config.service.advertise_url
    }

    /// Whether requests need an API key.
    pub fn requires_keys(&self) -> bool {
        matches!(self.auth, Auth::Keys)
    }

    /// Loads the sessions (all stopped, their Python processes to come from `runtime`,
    /// whose environment `python` describes to models) and serves until `shutdown`
    /// completes; then stops gracefully: no new executions, running ones interrupted
    /// (and abandoned after a grace period), conversations' turns cancelled, connections
    /// drained, every Python process stopped. Files, metadata and conversations are
    /// already on disk.
    pub async fn run(
        self,
        runtime: Runtime,
        python: EnvInfo,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let service = Service::start(
            self.config.service.clone(),
            self.store,
            self.auth,
            runtime,
            python,
        )
        .await?;
        let sessions = service.sessions.clone();
        let containers = service.containers.clone();
        let conversations = service.conversations.clone();
        let client = crate::api::forwarding_client()
            .map_err(|e| ServerError::Serve(std::io::Error::other(e)))?;
        let state = AppState {
            config: Arc::new(self.config),
            service,
            client,
        };
        let background = [
            sessions.spawn_idle_reaper(),
            sessions.spawn_warm_refill(),
            containers.spawn_expiry_reaper(),
            sessions.spawn_heartbeat(),
        ];
        let stop = CancellationToken::new();
        let app = crate::api::router(state, stop.clone());
        // Streamed answers (Server-Sent Events, on /api/v1 and /mcp) are written in small
        // pieces: without TCP_NODELAY each waits for the client's delayed ACK (~40 ms).
        let listener = self.listener.tap_io(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!("cannot set TCP_NODELAY: {error}");
            }
        });
        let mut serving = tokio::spawn(
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.clone().cancelled_owned())
                .into_future(),
        );
        let outcome = tokio::select! {
            () = shutdown => None,
            ended = &mut serving => Some(ended),
        };
        if outcome.is_none() {
            tracing::info!("shutting down");
            sessions.begin_shutdown();
            conversations.cancel_all();
            stop.cancel();
            if tokio::time::timeout(EXECUTION_GRACE, &mut serving)
                .await
                .is_err()
            {
                tracing::warn!("executions still running after the grace period are stopped");
                sessions.cancel_running();
                if tokio::time::timeout(DRAIN_GRACE, &mut serving)
                    .await
                    .is_err()
                {
                    serving.abort();
                }
            }
        }
        for task in background {
            task.abort();
        }
        sessions.stop_all().await;
        match outcome {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(error))) => Err(ServerError::Serve(error)),
            Some(Err(error)) => Err(ServerError::Serve(std::io::Error::other(error))),
        }
    }
}

/// The address other nodes reach a node listening on `bound` by: that address, or, when
/// it is every address of the machine, the machine's host name (as a StatefulSet's pods
/// are named in their headless Service's domain).
fn default_advertise_url(bound: SocketAddr) -> String {
    if !bound.ip().is_unspecified() {
        return format!("http://{bound}");
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_default();
    let host = if host.is_empty() {
        "localhost".to_owned()
    } else {
        host
    };
    format!("http://{host}:{}", bound.port())
}

/// Why the server could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{listen} is not a loopback address and the server has no API keys, so anyone who can reach it could run code: create a key with `sandcell serve --create-key NAME` and send it as `Authorization: Bearer KEY`")]
    KeysRequired { listen: std::net::SocketAddr },
    #[error("cannot listen on {listen}")]
    Listen {
        listen: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("the server stopped: {0}")]
    Serve(#[source] std::io::Error),
}
