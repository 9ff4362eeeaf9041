//! The proxy: HTTP `CONNECT` and plain HTTP forwarding, one session's rules on every
//! request, bytes counted against the session's allowance.

use crate::address::special_kind;
use crate::policy::{host_name, Allowlist};
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener};

/// A request head larger than this is refused (HTTP servers commonly allow 8–64 KiB).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// A client that has not sent its request head by then is dropped.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Connecting to the target (after resolving its name).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const HEADERS: usize = 100;
/// Connections one session may have open through one proxy at once: each costs the host
/// a task and two descriptors, so a session cannot make the host run out of them.
const MAX_CONNECTIONS: usize = 64;

/// What one session's proxy enforces.
#[derive(Debug)]
pub struct ProxyRules {
    /// Names the session in logs.
    pub session: String,
    /// What the session may reach.
    pub allowlist: Allowlist,
    /// Bytes (both directions, all connections) the session may move through the proxy.
    pub byte_limit: u64,
    /// Bytes moved so far; shared by every listener of the session, kept across restarts.
    pub bytes_used: Arc<AtomicU64>,
}

/// Why a request was not forwarded; each is one sentence for the client.
#[derive(Debug)]
enum Refusal {
    BadRequest(&'static str),
    NotListed { host: String, port: u16 },
    Special { host: String, kind: &'static str },
    Unresolvable { host: String },
    Unreachable { host: String, port: u16 },
    Allowance { limit: u64 },
    TooMany,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::BadRequest(what) => write!(f, "sandcell's proxy cannot forward this request: {what}."),
            Refusal::NotListed { host, port } => write!(f, "The session's network policy does not allow {host}:{port}; the operator can allow it with --allow-net."),
            Refusal::Special { host, kind } => write!(f, "{host} leads to {kind}, which sessions may not reach unless the operator lists that exact address."),
            Refusal::Unresolvable { host } => write!(f, "The name {host} could not be resolved."),
            Refusal::Unreachable { host, port } => write!(f, "{host}:{port} could not be reached."),
            Refusal::Allowance { limit } => write!(f, "The session has used its network allowance of {} MiB.", limit / (1024 * 1024)),
            Refusal::TooMany => write!(f, "The session already has {MAX_CONNECTIONS} connections open through the proxy; close some and try again."),
        }
    }
}

impl Refusal {
    fn status(&self) -> &'static str {
        match self {
            Refusal::BadRequest(_) => "400 Bad Request",
            Refusal::Unresolvable { .. } | Refusal::Unreachable { .. } => "502 Bad Gateway",
            Refusal::TooMany => "429 Too Many Requests",
            _ => "403 Forbidden",
        }
    }
}

/// Serves `listener` until the task is aborted: every connection in a task of its own.
pub fn serve(listener: UnixListener, rules: Arc<ProxyRules>) -> tokio::task::JoinHandle<()> {
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((mut client, _)) => {
                    let rules = rules.clone();
                    match open.clone().try_acquire_owned() {
                        Ok(permit) => {
                            tokio::spawn(async move {
                                handle(client, rules).await;
                                drop(permit);
                            });
                        }
                        Err(_) => {
                            tokio::spawn(async move {
                                refuse(&mut client, &rules, "-", 0, Refusal::TooMany).await;
                            });
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(session = %rules.session, "the network proxy stopped accepting: {error}");
                    return;
                }
            }
        }
    })
}

/// A request as the proxy forwards it.
struct Request {
    host: String,
    port: u16,
    /// `None` for `CONNECT`; else the head to send upstream (origin form, `Connection: close`).
    head: Option<Vec<u8>>,
    /// Bytes the client sent after the head.
    rest: Vec<u8>,
}

async fn handle<S>(mut client: S, rules: Arc<ProxyRules>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let request = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut client)).await {
        Ok(Ok(Ok(request))) => request,
        Ok(Ok(Err(refusal))) => return refuse(&mut client, &rules, "-", 0, refusal).await,
        Ok(Err(_)) | Err(_) => return,
    };
    let (host, port) = (request.host.clone(), request.port);
    if rules.bytes_used.load(Ordering::Relaxed) >= rules.byte_limit {
        let refusal = Refusal::Allowance {
            limit: rules.byte_limit,
        };
        return refuse(&mut client, &rules, &host, port, refusal).await;
    }
    let addrs = match allowed_addresses(&rules.allowlist, &host, port).await {
        Ok(addrs) => addrs,
        Err(refusal) => return refuse(&mut client, &rules, &host, port, refusal).await,
    };
    let upstream = match connect(&addrs).await {
        Some(upstream) => upstream,
        None => {
            let refusal = Refusal::Unreachable {
                host: host.clone(),
                port,
            };
            return refuse(&mut client, &rules, &host, port, refusal).await;
        }
    };
    let outcome = forward(client, upstream, request, &rules).await;
    let (up, down, verdict) = match outcome {
        Ok((up, down)) => (up, down, "allowed"),
        Err((up, down)) => (up, down, "cut off"),
    };
    tracing::info!(session = %rules.session, host = %host, port, bytes_up = up, bytes_down = down, verdict, "network connection");
}

async fn refuse<S: AsyncWrite + Unpin>(
    client: &mut S,
    rules: &ProxyRules,
    host: &str,
    port: u16,
    refusal: Refusal,
) {
    let body = format!("{refusal}\n");
    tracing::info!(session = %rules.session, host = %host, port, bytes_up = 0, bytes_down = 0, verdict = "refused", reason = %refusal, "network connection");
    let answer = format!(
        "HTTP/1.1 {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        refusal.status(),
        body.len()
    );
    let _ = client.write_all(answer.as_bytes()).await;
    let _ = client.shutdown().await;
}

/// Reads the request head. The outer error is the connection's; the inner, the request's.
async fn read_head<S: AsyncRead + Unpin>(client: &mut S) -> io::Result<Result<Request, Refusal>> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                return Ok(request_of(&parsed, buf[len..].to_vec()));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD_BYTES => {}
            Ok(httparse::Status::Partial) => {
                return Ok(Err(Refusal::BadRequest("its head is too large")))
            }
            Err(_) => return Ok(Err(Refusal::BadRequest("it is not HTTP"))),
        }
    }
}

fn request_of(parsed: &httparse::Request, rest: Vec<u8>) -> Result<Request, Refusal> {
    let (Some(method), Some(target), Some(version)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(Refusal::BadRequest("it is not HTTP"));
    };
    if method == "CONNECT" {
        let (host, port) = split_authority(target, None)
            .ok_or(Refusal::BadRequest("CONNECT needs a host:port"))?;
        return Ok(Request {
            host,
            port,
            head: None,
            rest,
        });
    }
    let Some(after_scheme) = target.strip_prefix("http://") else {
        return Err(Refusal::BadRequest(
            "a proxy request needs an absolute http:// URL (HTTPS goes through CONNECT)",
        ));
    };
    let (authority, path) = match after_scheme.find(['/', '?']) {
        Some(i) => (&after_scheme[..i], &after_scheme[i..]),
        None => (after_scheme, "/"),
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    let (host, port) =
        split_authority(authority, Some(80)).ok_or(Refusal::BadRequest("its URL has no host"))?;
    let mut head = format!("{method} {path} HTTP/1.{version}\r\n").into_bytes();
    for header in parsed.headers.iter() {
        let name = header.name.to_ascii_lowercase();
        // Hop-by-hop headers are the proxy's; each request gets a connection of its own,
        // so a second request on it cannot go elsewhere without being checked.
        if matches!(
            name.as_str(),
            "connection" | "keep-alive" | "proxy-connection" | "proxy-authorization"
        ) {
            continue;
        }
        head.extend_from_slice(header.name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(header.value);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"Connection: close\r\n\r\n");
    Ok(Request {
        host,
        port,
        head: Some(head),
        rest,
    })
}

/// `host:port`, `[v6]:port`, or `host` with `default_port`.
fn split_authority(authority: &str, default_port: Option<u16>) -> Option<(String, u16)> {
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(port) => port.parse().ok().filter(|p| *p > 0)?,
        None => default_port?,
    };
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// The addresses a request may connect to: an address the operator listed, or a listed
/// name's public addresses. The name is resolved here, and the addresses checked are the
/// ones connected to, so no later answer (DNS rebinding) changes where it goes.
async fn allowed_addresses(
    allowlist: &Allowlist,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, Refusal> {
    if let Ok(addr) = host.parse::<IpAddr>() {
        if allowlist.lists_address(addr, port) {
            return Ok(vec![SocketAddr::new(addr, port)]);
        }
        return Err(match special_kind(addr) {
            Some(kind) => Refusal::Special {
                host: host.to_string(),
                kind,
            },
            None => Refusal::NotListed {
                host: host.to_string(),
                port,
            },
        });
    }
    let not_listed = || Refusal::NotListed {
        host: host.to_string(),
        port,
    };
    let name = host_name(host).ok_or_else(not_listed)?;
    if !allowlist.allows_name(&name, port) {
        return Err(not_listed());
    }
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), port))
        .await
        .map_err(|_| Refusal::Unresolvable { host: name.clone() })?
        .collect();
    let mut refused = None;
    let allowed: Vec<SocketAddr> = resolved
        .into_iter()
        .filter(|addr| {
            if allowlist.lists_address(addr.ip(), port) {
                return true;
            }
            match special_kind(addr.ip()) {
                Some(kind) => {
                    refused = Some(kind);
                    false
                }
                None => true,
            }
        })
        .collect();
    match (allowed.is_empty(), refused) {
        (false, _) => Ok(allowed),
        (true, Some(kind)) => Err(Refusal::Special { host: name, kind }),
        (true, None) => Err(Refusal::Unresolvable { host: name }),
    }
}

async fn connect(addrs: &[SocketAddr]) -> Option<TcpStream> {
    for addr in addrs {
        if let Ok(Ok(stream)) =
            tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await
        {
            return Some(stream);
        }
    }
    None
}

/// Relays the request and everything after it. `Ok` with the bytes each way when both
/// sides ended; `Err` with the bytes so far when the allowance ran out or a side failed.
async fn forward<S>(
    mut client: S,
    mut upstream: TcpStream,
    request: Request,
    rules: &ProxyRules,
) -> Result<(u64, u64), (u64, u64)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let first = match &request.head {
        None => {
            client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await
        }
        Some(head) => upstream.write_all(head).await,
    };
    if first.is_err() || upstream.write_all(&request.rest).await.is_err() {
        return Err((0, 0));
    }
    let sent = request.head.as_ref().map_or(0, Vec::len) + request.rest.len();
    let sent = sent as u64;
    rules.bytes_used.fetch_add(sent, Ordering::Relaxed);
    let (client_read, client_write) = tokio::io::split(client);
    let (upstream_read, upstream_write) = upstream.into_split();
    let up = pump(client_read, upstream_write, rules);
    let down = pump(upstream_read, client_write, rules);
    tokio::pin!(up, down);
    let (mut up_total, mut down_total) = (None, None);
    while up_total.is_none() || down_total.is_none() {
        tokio::select! {
            result = &mut up, if up_total.is_none() => match result {
                Ok(n) => up_total = Some(n),
                Err(n) => return Err((sent + n, down_total.unwrap_or(0))),
            },
            result = &mut down, if down_total.is_none() => match result {
                Ok(n) => down_total = Some(n),
                Err(n) => return Err((sent + up_total.unwrap_or(0), n)),
            },
        }
    }
    Ok((sent + up_total.unwrap_or(0), down_total.unwrap_or(0)))
}

/// Copies until end of stream (then half-closes the writer). `Err` with the bytes copied
/// when either side fails or the session's allowance runs out.
async fn pump<R, W>(mut from: R, mut to: W, rules: &ProxyRules) -> Result<u64, u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => {
                let _ = to.shutdown().await;
                return Ok(total);
            }
            Ok(n) => n,
            Err(_) => return Err(total),
        };
        let before = rules.bytes_used.fetch_add(n as u64, Ordering::Relaxed);
        if before.saturating_add(n as u64) > rules.byte_limit {
            return Err(total);
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return Err(total);
        }
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixStream;

    /// A target on the host's loopback that sends `size` bytes to whoever connects.
    async fn sender(size: usize) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let _ = stream.write_all(&vec![b'x'; size]).await;
                });
            }
        });
        port
    }

    /// A proxy for `allowed` with `byte_limit`, on a socket in `dir`.
    fn proxy(dir: &std::path::Path, allowed: &str, byte_limit: u64) -> Arc<ProxyRules> {
        let socket = dir.join("proxy.sock");
        let rules = Arc::new(ProxyRules {
            session: "test".into(),
            allowlist: Allowlist::parse(&[allowed]).unwrap(),
            byte_limit,
            bytes_used: Arc::new(AtomicU64::new(0)),
        });
        serve(UnixListener::bind(&socket).unwrap(), rules.clone());
        rules
    }

    /// What a client reads after a `CONNECT` to `port` through the proxy at `dir`.
    async fn tunnel(dir: &std::path::Path, port: u16) -> Vec<u8> {
        let mut client = UnixStream::connect(dir.join("proxy.sock")).await.unwrap();
        let request = format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n");
        client.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn a_session_moves_no_more_than_its_allowance() {
        let port = sender(300_000).await;
        let dir = tempfile::tempdir().unwrap();
        let rules = proxy(dir.path(), &format!("127.0.0.1:{port}"), 100_000);
        let first = tunnel(dir.path(), port).await;
        assert!(first.starts_with(b"HTTP/1.1 200 "), "{:?}", &first[..40]);
        // The tunnel is cut at the allowance, not after the whole 300 kB.
        assert!(first.len() < 100_000, "{}", first.len());
        assert!(rules.bytes_used.load(Ordering::Relaxed) > 100_000);
        let second = tunnel(dir.path(), port).await;
        let second = String::from_utf8(second).unwrap();
        assert!(
            second.starts_with("HTTP/1.1 403 ") && second.contains("network allowance"),
            "{second}"
        );
    }

    #[tokio::test]
    async fn a_session_holds_a_bounded_number_of_connections() {
        let dir = tempfile::tempdir().unwrap();
        proxy(dir.path(), "127.0.0.1:9", 1_000_000);
        let socket = dir.path().join("proxy.sock");
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            held.push(UnixStream::connect(&socket).await.unwrap());
        }
        // Each accepted one now waits for its head; the next is turned away.
        let mut extra = UnixStream::connect(&socket).await.unwrap();
        let mut answer = String::new();
        extra.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 429 "), "{answer}");
        // One that ends gives its place back.
        drop(held.pop());
        let refused = loop {
            let answer = tunnel(dir.path(), 10).await;
            if !answer.starts_with(b"HTTP/1.1 429 ") {
                break String::from_utf8(answer).unwrap();
            }
            tokio::task::yield_now().await;
        };
        assert!(refused.starts_with("HTTP/1.1 403 "), "{refused}");
    }

    #[tokio::test]
    async fn within_the_allowance_everything_arrives() {
        let port = sender(300_000).await;
        let dir = tempfile::tempdir().unwrap();
        proxy(dir.path(), &format!("127.0.0.1:{port}"), 10_000_000);
        let answer = tunnel(dir.path(), port).await;
        let established = b"HTTP/1.1 200 Connection established\r\n\r\n";
        assert!(answer.starts_with(established));
        assert_eq!(answer.len(), established.len() + 300_000);
    }

    #[test]
    fn authorities_split_into_host_and_port() {
        assert_eq!(
            split_authority("example.org:8080", None),
            Some(("example.org".into(), 8080))
        );
        assert_eq!(
            split_authority("example.org", Some(80)),
            Some(("example.org".into(), 80))
        );
        assert_eq!(split_authority("example.org", None), None);
        assert_eq!(
            split_authority("[::1]:443", None),
            Some(("::1".into(), 443))
        );
        assert_eq!(
            split_authority("user:pw@example.org:81", None),
            Some(("example.org".into(), 81))
        );
        assert_eq!(split_authority(":80", None), None);
        assert_eq!(split_authority("x.org:0", None), None);
    }

    #[tokio::test]
    async fn names_leading_to_the_host_are_refused_unless_listed() {
        let names = Allowlist::parse(&["localhost"]).unwrap();
        let refusal = allowed_addresses(&names, "localhost", 80)
            .await
            .unwrap_err();
        assert!(matches!(refusal, Refusal::Special { .. }), "{refusal}");
        let listed = Allowlist::parse(&["127.0.0.1:80"]).unwrap();
        assert!(allowed_addresses(&listed, "127.0.0.1", 80).await.is_ok());
        let refusal = allowed_addresses(&listed, "127.0.0.1", 81)
            .await
            .unwrap_err();
        assert!(matches!(refusal, Refusal::Special { .. }), "{refusal}");
        let refusal = allowed_addresses(&listed, "169.254.169.254", 80)
            .await
            .unwrap_err();
        assert!(refusal.to_string().contains("metadata"), "{refusal}");
        let refusal = allowed_addresses(&listed, "1.1.1.1", 80).await.unwrap_err();
        assert!(matches!(refusal, Refusal::NotListed { .. }), "{refusal}");
    }
}
