//! What the core is started with: where its data lives and the operator's limits.

use crate::limits::SessionLimits;
use crate::models::Models;
use crate::session_files::FilesLocation;
use crate::store::{DatabaseLocation, Store, StoreError};
use sandcell_session::Allowlist;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Holds the database (`sandcell.db`), this node's id (`node-id`), the sessions' working directories
    /// (`sessions/ID`), uploads being received (`uploads/`) and the OpenAI door's
    /// files (`files/ID`).
    pub data_dir: PathBuf,
    /// A session with no execution for this long has its Python process stopped.
    pub idle_timeout: Duration,
    /// Sessions whose Python process may be running at once, for the whole server.
    pub max_sessions: usize,
    /// Sessions whose Python process may be running at once, for one user.
    pub max_sessions_per_user: usize,
    /// Sessions started ahead of demand, so that creating one does not wait for a fork
    /// (at most `max_sessions`; they hold places among them).
    pub warm_sessions: usize,
    /// The highest limits a client may ask for; a session's defaults stay within them.
    pub max_limits: SessionLimits,
    /// Output (stdout and stderr) one execution keeps, in MiB: its head and tail, with a
    /// marker of what was dropped between them.
    pub output_mib: u64,
    /// How long a finished execution's result stays readable by its id.
    pub execution_retention: Duration,
    /// What conversations talk to.
    pub models: Models,
    /// How long one minute of a container's idle expiry lasts: a minute (a test may
    /// make it shorter; the API counts expiry in minutes).
    pub container_minute: Duration,
    /// The most network a session may ask for (`--allow-net` of `serve`, `allow_net` in
    /// the config file); empty: none at all.
    pub network_ceiling: Allowlist,
    /// What a session that asks for nothing gets, within the ceiling (`serve`: nothing;
    /// `mcp`: the whole ceiling, since the operator is its one user).
    pub network_default: Allowlist,
    /// Where sessions' files are kept besides their local directories.
    pub files: FilesLocation,
    /// Where the database is: `sandcell.db` in the data directory, or PostgreSQL.
    pub database: DatabaseLocation,
    /// Where other nodes sharing the database reach this one (`--advertise-url`);
    /// empty: nowhere (a node of its own).
    pub advertise_url: String,
    /// How long a node goes without a heartbeat before it is taken for gone and its
    /// sessions may be taken over.
    pub node_timeout: Duration,
}

impl ServiceConfig {
    /// The defaults: 20 idle minutes, 100 live sessions (20 per user), 2 warm, the standard
    /// session limits as maxima, results kept 10 minutes, no model, files and database kept locally only.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            idle_timeout: Duration::from_secs(20 * 60),
            max_sessions: 100,
            max_sessions_per_user: 20,
            warm_sessions: 2,
            max_limits: SessionLimits::standard(),
            output_mib: sandcell_session::Limits::default().output_mib,
            execution_retention: Duration::from_secs(10 * 60),
            models: Models::default(),
            container_minute: Duration::from_secs(60),
            network_ceiling: Allowlist::default(),
            network_default: Allowlist::default(),
            files: FilesLocation::Local,
            database: DatabaseLocation::Local,
            advertise_url: String::new(),
            node_timeout: crate::nodes::NODE_TIMEOUT,
        }
    }

    /// Opens the database (creating a local one, and bringing its schema up to date).
    pub async fn open_store(&self) -> Result<Store, StoreError> {
        Store::open_at(&self.database, &self.sqlite_file()).await
    }

    /// The SQLite database's file, used when the database is local.
    pub fn sqlite_file(&self) -> PathBuf {
        self.data_dir.join("sandcell.db")
    }

    pub fn sessions_dir(&self) -> PathBuf {
        self.data_dir.join("sessions")
    }

    /// The OpenAI door's files (`files/ID`), kept outside any session.
    pub fn files_dir(&self) -> PathBuf {
        self.data_dir.join("files")
    }

    /// Uploads are written here, then renamed into place: on the same filesystem as the
    /// sessions, and out of the sandboxed code's sight until complete.
    pub fn staging_dir(&self) -> PathBuf {
        self.data_dir.join("uploads")
    }
}
