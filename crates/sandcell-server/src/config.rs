//! What a server is started with.

use crate::limits::SessionLimits;
use crate::models::Models;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Where `sandcell serve` listens unless told otherwise: loopback only.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);

const MIB: u64 = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Holds the database (`sandcell.db`), the sessions' working directories
    /// (`sessions/ID`) and uploads being received (`uploads/`).
    pub data_dir: PathBuf,
    /// A session with no execution for this long has its Python process stopped.
    pub idle_timeout: Duration,
    /// Sessions whose Python process may be running at once.
    pub max_sessions: usize,
    /// The highest limits a client may ask for; a session's defaults stay within them.
    pub max_limits: SessionLimits,
    /// Largest upload request (a raw file, or a whole multipart body).
    pub max_upload_bytes: u64,
    /// Largest body of any other request.
    pub max_request_bytes: usize,
    /// What conversations talk to.
    pub models: Models,
}

impl ServerConfig {
    /// The defaults: loopback port 8080, 20 idle minutes, 100 live sessions, the standard
    /// session limits as maxima, 1 GiB uploads, 16 MiB other requests, no model.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            data_dir: data_dir.into(),
            idle_timeout: Duration::from_secs(20 * 60),
            max_sessions: 100,
            max_limits: SessionLimits::standard(),
            max_upload_bytes: 1024 * MIB,
            max_request_bytes: 16 * 1024 * 1024,
            models: Models::default(),
        }
    }

    pub fn database(&self) -> PathBuf {
        self.data_dir.join("sandcell.db")
    }

    pub fn sessions_dir(&self) -> PathBuf {
        self.data_dir.join("sessions")
    }

    /// Uploads are written here, then renamed into place: on the same filesystem as the
    /// sessions, and out of the sandboxed code's sight until complete.
    pub fn staging_dir(&self) -> PathBuf {
        self.data_dir.join("uploads")
    }
}
