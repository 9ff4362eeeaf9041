//! The core of sandcell that every front door calls.
//!
//! For: sessions (created, listed, locked for one use at a time, interrupted, restarted,
//! given packages from the operator's index, stopped when idle, deleted), executions (with ids, their events kept for a while so a
//! client can re-attach), the files of a session's `/mnt/data`, conversations with a
//! model (the agent loop of `sandcell-agent`, recorded as it happens, its turns
//! followed by any number of clients), notebooks saved as a person works, the files and
//! containers of the OpenAI door (a container is a session with a name and an expiry), users and their
//! API keys, the rules for limits (defaults, the operator's ceilings, per-user and
//! per-server session quotas), the SQLite store and the metrics. Errors are one plain
//! enum, [`ServiceError`], each with its sentence for the person.
//!
//! Not for: any protocol. No HTTP status, header, JSON-RPC type or response body is
//! known here; each door (`sandcell-server`'s `/api/v1`, the command line, …) parses
//! its requests, calls this crate and maps [`ServiceError`] in one place of its own.
//! Running Python is `sandcell-session`'s, the agent loop `sandcell-agent`'s.

mod config;
mod containers;
mod conversations;
mod error;
mod event_log;
mod executions;
mod files;
mod limits;
mod metrics;
mod models;
mod nodes;
mod notebooks;
mod packages;
mod page;
mod places;
mod responses;
mod session_files;
mod sessions;
mod start_error;
mod store;
mod user_files;
mod users;

pub use config::ServiceConfig;
pub use containers::{
    ContainerFile, ContainerInfo, ContainerStatus, Containers, FileSource, NewContainer,
    DEFAULT_EXPIRY_MINUTES, MAX_EXPIRY_MINUTES,
};
pub use conversations::{
    ConversationDetail, ConversationInfo, Conversations, TurnEvent, TurnInfo, TurnLog, TurnOutcome,
};
pub use error::{sentence, ServiceError};
pub use event_log::{EventLog, LogEntry};
pub use executions::{ExecutionLog, ExecutionState, LoggedEvent};
pub use files::{FileError, FileInfo, FilePath, WorkDir};
pub use limits::{LimitNames, LimitsRequest, SessionLimits};
pub use metrics::Metrics;
pub use models::{Models, ModelsInfo, MODEL_HINT};
pub use nodes::{Node, Route, Routed, HEARTBEAT_EVERY, NODE_TIMEOUT};
pub use notebooks::{
    CellType, NotebookCell, NotebookChange, NotebookDetail, NotebookInfo, Notebooks,
};
pub use packages::NO_INDEX;
pub use page::{Page, PageRequest};
pub use responses::{
    ContainerChoice, NewResponse, ResponseEvent, ResponseEvents, ResponseRecord, ResponseStatus,
    Responses,
};
pub use session_files::{FilesError, FilesLocation, SessionFiles, WriteBack};
pub use sessions::{
    Checkout, EnvironmentInfo, SessionInfo, SessionState, Sessions, RESTARTED_NOTICE,
};
pub use start_error::StartError;
pub use store::{
    ConversationRecord, DatabaseLocation, InSession, NotebookRecord, SessionRecord, Store,
    StoreError, User, LOCAL_USER,
};
pub use user_files::{StoredFile, UserFiles};
pub use users::{create_key, hash_key, random_hex, Auth, KeyError};

use sandcell_pyenv::EnvInfo;
use sandcell_session::Runtime;
use std::sync::Arc;

/// The core: what every door holds. Cheap to share (`Arc`).
pub struct Service {
    pub config: ServiceConfig,
    pub store: Store,
    pub auth: Auth,
    pub sessions: Arc<Sessions>,
    pub conversations: Arc<Conversations>,
    pub notebooks: Arc<Notebooks>,
    /// The OpenAI door's files and containers.
    pub files: Arc<UserFiles>,
    pub containers: Arc<Containers>,
    pub responses: Arc<Responses>,
    pub metrics: Arc<Metrics>,
}

impl Service {
    /// Loads the sessions recorded in `store` (all stopped; their Python processes come
    /// from `runtime`, whose environment `python` describes to models).
    pub async fn start(
        config: ServiceConfig,
        store: Store,
        auth: Auth,
        runtime: Runtime,
        python: EnvInfo,
    ) -> Result<Arc<Self>, StartError> {
        let metrics = Arc::new(Metrics::new());
        let node = Arc::new(Node::in_data_dir(
            &config.data_dir,
            &config.advertise_url,
            config.node_timeout,
        )?);
        let session_files = Arc::new(
            SessionFiles::connect(
                &config.files,
                config.staging_dir(),
                metrics.clone(),
                &node.id,
            )
            .await?,
        );
        let sessions = Arc::new(
            Sessions::load(
                &config,
                runtime,
                store.clone(),
                metrics.clone(),
                session_files.clone(),
                node,
            )
            .await?,
        );
        let conversations = Arc::new(Conversations::new(
            store.clone(),
            sessions.clone(),
            config.models.clone(),
            python.clone(),
            config.max_limits.clone(),
        ));
        let notebooks = Arc::new(Notebooks::new(store.clone(), sessions.clone()));
        let files = Arc::new(UserFiles::new(
            store.clone(),
            config.files_dir(),
            session_files,
        ));
        let containers = Arc::new(Containers::new(
            store.clone(),
            sessions.clone(),
            files.clone(),
            config.max_limits.clone(),
            config.staging_dir(),
            config.container_minute,
        ));
        let responses = Arc::new(Responses::new(
            store.clone(),
            sessions.clone(),
            containers.clone(),
            config.models.clone(),
            python,
        ));
        responses.fail_unfinished().await?;
        Ok(Arc::new(Self {
            config,
            notebooks,
            store,
            auth,
            sessions,
            conversations,
            files,
            containers,
            responses,
            metrics,
        }))
    }

    /// Where a request for `target` is handled: here, or on the node that runs its
    /// session (which a door that can forward requests sends it to).
    pub async fn route(&self, target: Routed<'_>) -> Result<Route, ServiceError> {
        let session = match target {
            Routed::Session(id) => id.to_owned(),
            Routed::In(kind, id) => {
                match self.store.session_of(kind, id).await.map_err(|e| {
                    ServiceError::internal("The object's session cannot be looked up", &e)
                })? {
                    Some(session) => session,
                    None => return Ok(Route::Here),
                }
            }
        };
        self.sessions.route(&session).await
    }
}
