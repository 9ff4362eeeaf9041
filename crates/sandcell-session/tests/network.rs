//! Network policy of real sessions: a real sandbox whose network namespace has no route
//! out, the host's proxy, and HTTP servers on the host's loopback playing the outside.

use sandcell_pyenv::{Environment, Home};
use sandcell_session::{
    Allowlist, ExecOptions, Execution, NetPolicy, Runtime, RuntimeOptions, Session, SessionConfig,
    SessionError, Status,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

async fn runtime(sandbox: bool) -> Runtime {
    let home = Home::from_env().expect("a data directory");
    let env = Environment::ensure(&home, &mut |step| eprintln!("setup: {step}"))
        .expect("the Python environment can be set up");
    let options = RuntimeOptions {
        sandbox,
        ..RuntimeOptions::default()
    };
    let runtime = Runtime::start(&env, options)
        .await
        .expect("the template starts");
    for warning in runtime.warnings() {
        eprintln!("warning: {warning}");
    }
    runtime
}

async fn session(runtime: &Runtime, network: NetPolicy) -> Result<Session, SessionError> {
    runtime
        .create_session(SessionConfig {
            workdir: None,
            limits: Default::default(),
            network,
        })
        .await
}

async fn run(session: &mut Session, code: &str) -> Execution {
    let execution = session
        .execute(code, &ExecOptions::default(), &mut |_| {})
        .await
        .expect("the session can be driven");
    assert_eq!(
        execution.status,
        Status::Ok,
        "{code}\nstdout: {}\nstderr: {}\nerror: {:?}",
        execution.stdout,
        execution.stderr,
        execution.error
    );
    execution
}

/// An HTTP server on the host's loopback: `/redirect` answers 302 to the cloud metadata
/// address, anything else 200 with `body`. Counts the requests it answers.
struct HostServer {
    port: u16,
    hits: Arc<AtomicUsize>,
}

async fn host_server(body: &'static str) -> HostServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let answer = if head.starts_with(b"GET /redirect ") {
                    "HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest/meta-data/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
                } else {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    HostServer { port, hits }
}

/// `fetch(url)` in the session: (status, body) of an HTTP answer, or ("error", why).
const FETCH: &str = r#"
import os, socket, urllib.request, urllib.error
def fetch(url):
    try:
        with urllib.request.urlopen(url, timeout=20) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except Exception as e:
        return "error", repr(e)
"#;

fn printed(execution: &Execution) -> &str {
    execution.stdout.trim()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_allowlisted_session_reaches_only_what_is_listed() {
    let runtime = runtime(true).await;
    let allowed = host_server("hello from the host").await;
    let other = host_server("you should not see this").await;
    let allowlist = Allowlist::parse(&[
        format!("127.0.0.1:{}", allowed.port),
        format!("localhost:{}", other.port),
    ])
    .unwrap();
    let mut session = session(&runtime, NetPolicy::Allowlist(allowlist.clone()))
        .await
        .expect("a session with an allowlist starts");
    assert_eq!(session.network_policy(), &NetPolicy::Allowlist(allowlist));
    run(&mut session, FETCH).await;

    let ok = run(
        &mut session,
        &format!("print(fetch('http://127.0.0.1:{}/data'))", allowed.port),
    )
    .await;
    assert_eq!(printed(&ok), "(200, 'hello from the host')");

    // Another loopback port: a real server, refused by the policy, never reached.
    let other_port = run(
        &mut session,
        &format!("print(fetch('http://127.0.0.1:{}/'))", other.port),
    )
    .await;
    assert!(
        printed(&other_port).starts_with("(403, "),
        "{}",
        printed(&other_port)
    );
    // A name on the list that resolves to loopback.
    let by_name = run(
        &mut session,
        &format!("print(fetch('http://localhost:{}/'))", other.port),
    )
    .await;
    assert!(
        printed(&by_name).starts_with("(403, ") && printed(&by_name).contains("loopback"),
        "{}",
        printed(&by_name)
    );
    // The metadata address, asked for directly and through a redirect of the allowed host.
    let metadata = run(
        &mut session,
        "print(fetch('http://169.254.169.254/latest/meta-data/'))",
    )
    .await;
    assert!(
        printed(&metadata).starts_with("(403, ") && printed(&metadata).contains("metadata"),
        "{}",
        printed(&metadata)
    );
    let redirected = run(
        &mut session,
        &format!("print(fetch('http://127.0.0.1:{}/redirect'))", allowed.port),
    )
    .await;
    assert!(
        printed(&redirected).starts_with("(403, ") && printed(&redirected).contains("metadata"),
        "{}",
        printed(&redirected)
    );
    assert_eq!(other.hits.load(Ordering::SeqCst), 0);
    assert_eq!(allowed.hits.load(Ordering::SeqCst), 2);

    // CONNECT (what HTTPS clients send): a tunnel to the allowed port, a 403 elsewhere.
    let tunnel = run(
        &mut session,
        &format!(
            r#"
def connect(port):
    with socket.create_connection(("127.0.0.1", {proxy}), timeout=20) as s:
        s.sendall(f"CONNECT 127.0.0.1:{{port}} HTTP/1.1\r\nHost: 127.0.0.1:{{port}}\r\n\r\n".encode())
        answer = s.recv(4096)
        if not answer.startswith(b"HTTP/1.1 200"):
            return answer.split(b"\r\n")[0].decode()
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        return data.split(b"\r\n\r\n", 1)[1].decode()
print(connect({allowed}), "|", connect({other}))
"#,
            proxy = sandcell_session::PROXY_PORT,
            allowed = allowed.port,
            other = other.port,
        ),
    )
    .await;
    assert_eq!(
        printed(&tunnel),
        "hello from the host | HTTP/1.1 403 Forbidden"
    );
    assert_eq!(other.hits.load(Ordering::SeqCst), 0);
    assert!(session.network_bytes() > 0);

    // Around the proxy: the session's own loopback has nothing on the host's ports, and
    // there is no route out for TCP or UDP.
    let direct = run(
        &mut session,
        &format!(
            r#"
def attempt(f):
    try:
        f()
        return "reached"
    except OSError as e:
        return type(e).__name__
def tcp(host, port):
    socket.create_connection((host, port), timeout=5).close()
def udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.sendto(b"x", ("1.1.1.1", 53))
    u.settimeout(2)
    u.recv(10)
print(attempt(lambda: tcp("127.0.0.1", {allowed})), attempt(lambda: tcp("1.1.1.1", 80)), attempt(udp))
"#,
            allowed = allowed.port
        ),
    )
    .await;
    assert_eq!(
        printed(&direct),
        "ConnectionRefusedError OSError OSError",
        "{}",
        printed(&direct)
    );
    assert_eq!(allowed.hits.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_policy_a_session_has_no_network() {
    let runtime = runtime(true).await;
    let server = host_server("you should not see this").await;
    let mut session = session(&runtime, NetPolicy::None).await.unwrap();
    assert_eq!(session.network_policy(), &NetPolicy::None);
    run(&mut session, FETCH).await;
    let fetched = run(
        &mut session,
        &format!(
            "print(sorted(k for k in os.environ if 'proxy' in k.lower()), fetch('http://127.0.0.1:{}/')[0], fetch('http://1.1.1.1/')[0])",
            server.port
        ),
    )
    .await;
    assert_eq!(printed(&fetched), "[] error error");
    assert_eq!(server.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_allowlist_needs_the_sandbox() {
    let runtime = runtime(false).await;
    let allowlist = Allowlist::parse(&["127.0.0.1:9"]).unwrap();
    let refused = session(&runtime, NetPolicy::Allowlist(allowlist)).await;
    assert!(
        matches!(refused, Err(SessionError::NetworkNeedsSandbox)),
        "{:?}",
        refused.err()
    );
}
