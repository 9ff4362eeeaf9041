//! Test helpers shared with the server's tests: HTTP servers on the host's loopback,
//! playing the outside world or a package index serving wheels built on the spot.
// Each test binary uses its own part of this module.
#![allow(dead_code)]

use sandcell_pyenv::Environment;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An HTTP server on the host's loopback: `/redirect` answers 302 to the cloud metadata
/// address, a path of `files` its bytes, anything else 200 with `body`. Counts the
/// requests it answers.
pub struct HostServer {
    pub port: u16,
    pub hits: Arc<AtomicUsize>,
}

pub async fn host_server(body: &'static str) -> HostServer {
    host_server_with(body, HashMap::new()).await
}

pub async fn host_server_with(body: &'static str, files: HashMap<String, Vec<u8>>) -> HostServer {
    let files = Arc::new(files);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counted = counted.clone();
            let files = files.clone();
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
                let path = String::from_utf8_lossy(&head)
                    .split(' ')
                    .nth(1)
                    .unwrap_or_default()
                    .to_string();
                let answer = if path == "/redirect" {
                    "HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest/meta-data/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".as_bytes().to_vec()
                } else {
                    let content = files.get(&path).map_or(body.as_bytes(), Vec::as_slice);
                    let mut answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        content.len()
                    )
                    .into_bytes();
                    answer.extend_from_slice(content);
                    answer
                };
                let _ = stream.write_all(&answer).await;
            });
        }
    });
    HostServer { port, hits }
}

/// A wheel of one pure-Python package `NAME` (with `payload` bytes of random data beside
/// its `__init__.py`), built with the environment's Python: a zip with the package,
/// METADATA, WHEEL and RECORD. Returns its file name and bytes.
pub fn wheel(
    env: &Environment,
    dir: &std::path::Path,
    name: &str,
    payload: usize,
) -> (String, Vec<u8>) {
    let file = format!("{name}-1.0-py3-none-any.whl");
    let path = dir.join(&file);
    let script = r#"
import os, sys, zipfile
name, payload, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
info = f"{name}-1.0.dist-info"
files = {
    f"{name}/__init__.py": b"GREETING = 'installed at run time'\n",
    f"{name}/payload.bin": os.urandom(payload),
    f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: 1.0\n".encode(),
    f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = "".join(f"{n},,\n" for n in files) + f"{info}/RECORD,,\n"
with zipfile.ZipFile(path, "w") as wheel:
    for n, data in files.items():
        wheel.writestr(n, data)
    wheel.writestr(f"{info}/RECORD", record)
"#;
    let status = std::process::Command::new(&env.info().python)
        .args(["-c", script, name, &payload.to_string()])
        .arg(&path)
        .status()
        .expect("the environment's Python runs");
    assert!(status.success());
    (file, std::fs::read(&path).unwrap())
}

/// A package index on the host's loopback serving `wheels` (file name, bytes), each as
/// the one file of its project (PEP 503's simple format).
pub async fn package_index(wheels: Vec<(String, Vec<u8>)>) -> HostServer {
    let mut files = HashMap::new();
    for (file, bytes) in wheels {
        let project = file.split('-').next().unwrap_or_default().replace('_', "-");
        let page = format!("<html><body><a href=\"/files/{file}\">{file}</a></body></html>");
        files.insert(format!("/simple/{project}/"), page.into_bytes());
        files.insert(format!("/files/{file}"), bytes);
    }
    host_server_with("not found", files).await
}
