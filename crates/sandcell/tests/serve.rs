//! `sandcell serve` as a process: API keys, refusing to listen openly without them, and
//! a SIGTERM that interrupts the running execution and exits 0.

mod common;

use common::{assert_build_failed, sandcell, with_unreachable_index};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn create_key_prints_a_key_once_and_keeps_one_per_user() {
    let data = tempfile::tempdir().unwrap();
    let create = |name: &str| {
        sandcell()
            .args(["serve", "--data-dir"])
            .arg(data.path())
            .args(["--create-key", name])
            .output()
            .unwrap()
    };
    let first = create("alice");
    assert!(first.status.success(), "{first:?}");
    let key = String::from_utf8(first.stdout).unwrap();
    assert!(
        key.trim().starts_with("sandcell_") && key.trim().len() > 60,
        "{key}"
    );
    // Only the hash is stored.
    let database = std::fs::read(data.path().join("sandcell.db")).unwrap();
    let needle = key.trim().as_bytes();
    assert!(!database.windows(needle.len()).any(|w| w == needle));

    let again = create("alice");
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already has an API key"));
}

#[test]
fn base_url_without_a_model_is_refused_with_how_to_name_one() {
    let data = tempfile::tempdir().unwrap();
    let output = sandcell()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .args(["--base-url", "http://localhost:8000/v1"])
        .env_remove("SANDCELL_MODEL")
        .env("SANDCELL_CONFIG", data.path().join("no-config.toml"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--model PROVIDER:MODEL"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one sentence: {stderr}");
}

#[test]
fn serve_builds_the_configured_environments_and_stops_on_one_that_fails() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("config.toml");
    std::fs::write(
        &config,
        "[environments.serve-broken]\nrequirements = [\"sandcell-never-published==1.0\"]\n",
    )
    .unwrap();
    let output = with_unreachable_index(
        sandcell()
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            .env("SANDCELL_CONFIG", &config),
    )
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert_build_failed(&output, "serve-broken", "sandcell-never-published");
}

#[test]
fn listening_beyond_loopback_needs_a_key() {
    let data = tempfile::tempdir().unwrap();
    let output = sandcell()
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("sandcell serve --create-key NAME"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one sentence: {stderr}");
}

#[test]
fn sigterm_interrupts_the_running_execution_and_exits_zero() {
    let data = tempfile::tempdir().unwrap();
    let mut server = sandcell()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = listening_address(&mut server);

    let (status, created) = http(addr, "POST", "/api/v1/sessions", "");
    assert_eq!(status, 201, "{created}");
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    let id = created["id"].as_str().unwrap().to_owned();

    // The execution's event stream, read on a thread as it arrives.
    let (started_tx, started) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        let body = r#"{"code": "import time\nprint('started', flush=True)\ntime.sleep(120)"}"#;
        write!(
            stream,
            "POST /api/v1/sessions/{id}/execute HTTP/1.1\r\nHost: test\r\nConnection: close\r\nAccept: text/event-stream\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut seen = String::new();
        let mut buffer = [0u8; 4096];
        loop {
            let n = stream.read(&mut buffer).unwrap();
            if n == 0 {
                return seen;
            }
            seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
            if seen.contains("started") {
                let _ = started_tx.send(());
            }
        }
    });
    started
        .recv_timeout(Duration::from_secs(120))
        .expect("the execution starts");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let events = reader.join().unwrap();
    let end = events
        .split("event: end")
        .nth(1)
        .unwrap_or_else(|| panic!("no end event: {events}"));
    assert!(end.contains(r#""status":"interrupted""#), "{end}");
    let status = wait(&mut server);
    assert_eq!(status.code(), Some(0));
}

/// Reads the server's stderr until it says where it listens; the rest is drained.
fn listening_address(server: &mut Child) -> SocketAddr {
    let stderr = server.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("server: {line}");
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let addr = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let _ = tx.send(addr);
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(300))
        .expect("the server says where it listens");
    addr.parse().unwrap()
}

/// One request, answered with a length (not a stream): status and body.
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer.split(' ').nth(1).unwrap().parse().unwrap();
    let body = answer.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

/// The exit status, within a generous bound (a hang, not a slow machine, fails).
fn wait(child: &mut Child) -> std::process::ExitStatus {
    for _ in 0..1200 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("the server did not exit within two minutes of SIGTERM");
}
