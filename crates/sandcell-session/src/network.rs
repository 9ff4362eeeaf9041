//! A session's way out when its policy has an allowlist: the host's proxy
//! (`sandcell-netproxy`) listening on a Unix socket in a directory of the session's own,
//! which the sandbox shows read-only at the same path; inside, the kernel relays
//! `127.0.0.1:PORT` of the session's own network namespace (no route out) to that socket,
//! and `HTTP_PROXY`/`HTTPS_PROXY` name the port.

use crate::error::{io_error, SessionError};
use sandcell_netproxy::{Allowlist, NetPolicy, ProxyRules};
use sandcell_sandbox::Identity;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The port of the session's loopback that relays to the proxy; the same in every
/// session, since each has a network namespace of its own.
pub const PROXY_PORT: u16 = 3128;

/// Bytes a session may move through the proxy, both ways, over its whole life.
pub const NET_ALLOWANCE_BYTES: u64 = 1024 * 1024 * 1024;

/// The proxy of one session, for as long as the session lives (across restarts of its
/// process: the socket stays where the sandbox finds it).
pub(crate) struct SessionNetwork {
    policy: NetPolicy,
    dir: tempfile::TempDir,
    socket: PathBuf,
    bytes_used: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl SessionNetwork {
    /// Starts the proxy for `allowlist`, its socket usable by `identity` alone.
    pub(crate) fn start(
        name: &str,
        allowlist: &Allowlist,
        identity: Identity,
    ) -> Result<Self, SessionError> {
        let dir = tempfile::Builder::new()
            .prefix("sandcell-net-")
            .tempdir()
            .map_err(io_error(std::env::temp_dir()))?;
        let socket = dir.path().join("proxy.sock");
        let listener = tokio::net::UnixListener::bind(&socket).map_err(io_error(&socket))?;
        // Only the session's own ids may connect (on a root host: its uid; otherwise the
        // operator's, which the session's user namespace maps to itself).
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
            .map_err(io_error(&socket))?;
        if let Identity::DropFromRoot { uid, gid } = identity {
            for path in [dir.path(), socket.as_path()] {
                nix::unistd::chown(path, Some(uid.into()), Some(gid.into()))
                    .map_err(|e| io_error(path)(e.into()))?;
            }
        }
        let bytes_used = Arc::new(AtomicU64::new(0));
        let rules = Arc::new(ProxyRules {
            session: name.to_string(),
            allowlist: allowlist.clone(),
            byte_limit: NET_ALLOWANCE_BYTES,
            bytes_used: bytes_used.clone(),
        });
        let task = sandcell_netproxy::serve(listener, rules);
        Ok(Self {
            policy: NetPolicy::Allowlist(allowlist.clone()),
            dir,
            socket,
            bytes_used,
            task,
        })
    }

    /// The host directory the sandbox shows read-only (the socket's).
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn policy(&self) -> &NetPolicy {
        &self.policy
    }

    pub(crate) fn bytes_used(&self) -> u64 {
        self.bytes_used.load(Ordering::Relaxed)
    }

    /// The session process's environment: where the relay listens and where it relays
    /// to, and the proxy variables every HTTP client reads.
    pub(crate) fn env(&self) -> BTreeMap<String, String> {
        let proxy = format!("http://127.0.0.1:{PROXY_PORT}");
        let mut env = BTreeMap::from([(
            "SANDCELL_PROXY_PORTS".to_string(),
            format!("{PROXY_PORT}={}", self.socket.display()),
        )]);
        for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            env.insert(name.to_string(), proxy.clone());
        }
        env
    }
}

impl Drop for SessionNetwork {
    fn drop(&mut self) {
        self.task.abort();
    }
}
