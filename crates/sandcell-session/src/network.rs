//! A session's ways out: the host's proxies (`sandcell-netproxy`), one for the policy's
//! allowlist and one for the package index, each listening on a Unix socket in a
//! directory of the session's own, which the sandbox shows read-only at the same path;
//! inside, the kernel relays a port of `127.0.0.1` in the session's own network
//! namespace (no route out) to each socket. `HTTP_PROXY`/`HTTPS_PROXY` name the first,
//! `PIP_PROXY` the second.

use crate::error::{io_error, SessionError};
use crate::isolation::SANDBOX_WORKDIR;
use sandcell_netproxy::{NetPolicy, PackageIndex, ProxyRules};
use sandcell_sandbox::Identity;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The port of the session's loopback that relays to the proxy of its allowlist; the
/// same in every session, since each has a network namespace of its own.
pub const PROXY_PORT: u16 = 3128;

/// The port that relays to the package proxy, which reaches the package index alone.
pub(crate) const PACKAGE_PROXY_PORT: u16 = 3129;

/// Where `%pip install` puts packages: the session's own layer, in its working directory
/// (so it counts against the disk quota and goes with the session), at the end of
/// `sys.path` (the shared environment's packages come first).
pub const PACKAGES_DIR: &str = ".packages";

/// Bytes a session may move through its proxies, both ways, over its whole life.
pub(crate) const NET_ALLOWANCE_BYTES: u64 = 1024 * 1024 * 1024;

/// One proxy: the port inside that relays to it, its socket, the task serving it.
struct Listener {
    port: u16,
    socket: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

/// The proxies of one session, for as long as the session lives (across restarts of
/// its process: the sockets stay where the sandbox finds them).
pub(crate) struct SessionNetwork {
    policy: NetPolicy,
    package_index: Option<String>,
    dir: tempfile::TempDir,
    listeners: Vec<Listener>,
    bytes_used: Arc<AtomicU64>,
}

impl SessionNetwork {
    /// Starts a proxy for the policy's allowlist and one for the package index, those
    /// that apply; `None` when neither does. Their sockets are usable by `identity` alone.
    pub(crate) fn start(
        name: &str,
        policy: &NetPolicy,
        package_index: Option<&PackageIndex>,
        identity: Identity,
    ) -> Result<Option<Self>, SessionError> {
        let mut wanted = Vec::new();
        if let Some(allowlist) = policy.allowlist() {
            wanted.push((PROXY_PORT, "proxy.sock", allowlist.clone()));
        }
        if let Some(index) = package_index {
            wanted.push((PACKAGE_PROXY_PORT, "packages.sock", index.allowlist()));
        }
        if wanted.is_empty() {
            return Ok(None);
        }
        let dir = tempfile::Builder::new()
            .prefix("sandcell-net-")
            .tempdir()
            .map_err(io_error(std::env::temp_dir()))?;
        if let Identity::DropFromRoot { uid, gid } = identity {
            nix::unistd::chown(dir.path(), Some(uid.into()), Some(gid.into()))
                .map_err(|e| io_error(dir.path())(e.into()))?;
        }
        let bytes_used = Arc::new(AtomicU64::new(0));
        let mut network = Self {
            policy: policy.clone(),
            package_index: package_index.map(|index| index.url().to_string()),
            dir,
            listeners: Vec::new(),
            bytes_used,
        };
        for (port, file, allowlist) in wanted {
            let socket = network.dir.path().join(file);
            let listener = tokio::net::UnixListener::bind(&socket).map_err(io_error(&socket))?;
            // Only the session's own ids may connect (on a root host: its uid; otherwise
            // the operator's, which the session's user namespace maps to itself).
            std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
                .map_err(io_error(&socket))?;
            if let Identity::DropFromRoot { uid, gid } = identity {
                nix::unistd::chown(&socket, Some(uid.into()), Some(gid.into()))
                    .map_err(|e| io_error(&socket)(e.into()))?;
            }
            let rules = Arc::new(ProxyRules {
                session: name.to_string(),
                allowlist,
                byte_limit: NET_ALLOWANCE_BYTES,
                bytes_used: network.bytes_used.clone(),
            });
            let task = sandcell_netproxy::serve(listener, rules);
            network.listeners.push(Listener { port, socket, task });
        }
        Ok(Some(network))
    }

    /// The host directory the sandbox shows read-only (the sockets').
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn policy(&self) -> &NetPolicy {
        &self.policy
    }

    pub(crate) fn bytes_used(&self) -> u64 {
        self.bytes_used.load(Ordering::Relaxed)
    }

    /// The session process's environment: where the relays listen and where they relay
    /// to, the proxy variables every HTTP client reads (for the allowlist), and pip's
    /// settings (for the package index).
    pub(crate) fn env(&self) -> BTreeMap<String, String> {
        let relays: Vec<String> = self
            .listeners
            .iter()
            .map(|l| format!("{}={}", l.port, l.socket.display()))
            .collect();
        let mut env = BTreeMap::from([("SANDCELL_PROXY_PORTS".to_string(), relays.join(","))]);
        let mut set = |name: &str, value: &str| env.insert(name.to_string(), value.to_string());
        if self.policy.allowlist().is_some() {
            let proxy = format!("http://127.0.0.1:{PROXY_PORT}");
            for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
                set(name, &proxy);
            }
        }
        if let Some(url) = &self.package_index {
            let packages = format!("{SANDBOX_WORKDIR}/{PACKAGES_DIR}");
            set("SANDCELL_PACKAGES", &packages);
            set("PIP_TARGET", &packages);
            set("PIP_INDEX_URL", url);
            set(
                "PIP_PROXY",
                &format!("http://127.0.0.1:{PACKAGE_PROXY_PORT}"),
            );
            set("PIP_NO_CACHE_DIR", "1");
            set("PIP_DISABLE_PIP_VERSION_CHECK", "1");
        }
        env
    }
}

impl Drop for SessionNetwork {
    fn drop(&mut self) {
        for listener in &self.listeners {
            listener.task.abort();
        }
    }
}
