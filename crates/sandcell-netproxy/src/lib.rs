//! A session's network policy, and the host-side proxy that enforces it.
//!
//! For: reading allowlist entries (`host`, `*.domain`, IP or CIDR, each with an optional
//! `:PORT`) into an [`Allowlist`]; a session's [`NetPolicy`] (none, or an allowlist within
//! the operator's ceiling); and [`serve`], an HTTP proxy (`CONNECT` and plain HTTP
//! forwarding) on a Unix socket that a session reaches from inside its sandbox. The
//! proxy resolves names itself, refuses every address that is the host's own (loopback,
//! private, link-local, CGNAT, unspecified, multicast, the cloud metadata service) unless
//! the operator listed that exact address or range, counts the session's bytes against
//! its allowance, and logs each connection.
//!
//! Not for: giving a session a network of its own (a session's network namespace has no
//! route out; this proxy is the only way out), inspecting TLS (HTTPS is a tunnel to an
//! allowed host and port), following redirects (each new request is checked on its own),
//! or sessions, sandboxes and command lines.

mod address;
mod policy;
mod proxy;

pub use policy::{Allowlist, NetEntry, NetPolicy, NetPolicyError, PackageIndex};
pub use proxy::{serve, ProxyRules};
