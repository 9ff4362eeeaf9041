//! What a server is started with: where it listens and how large requests may be, around
//! the core's own configuration.

use sandcell_service::ServiceConfig;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// Where `sandcell serve` listens unless told otherwise: loopback only.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);

const MIB: u64 = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Largest upload request (a raw file, or a whole multipart body).
    pub max_upload_bytes: u64,
    /// Largest body of any other request.
    pub max_request_bytes: usize,
    /// Host names (or `host:port`) `/mcp` accepts in `Host` and `Origin` besides loopback
    /// and the listening address: the names clients reach this server by.
    pub allowed_hosts: Vec<String>,
    /// The data directory, the limits and the models.
    pub service: ServiceConfig,
}

impl ServerConfig {
    /// The defaults: loopback port 8080, 1 GiB uploads, 16 MiB other requests, no host
    /// names besides loopback's, and the core's defaults.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            max_upload_bytes: 1024 * MIB,
            max_request_bytes: 16 * 1024 * 1024,
            allowed_hosts: Vec::new(),
            service: ServiceConfig::new(data_dir),
        }
    }
}
