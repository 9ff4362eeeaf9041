//! A real server for tests: a loopback port, a SQLite file in a temporary data directory
//! (or, when SANDCELL_TEST_POSTGRES_URL names a PostgreSQL server, as in
//! `scripts/with-postgres`, a schema of its own there), real Python sessions (the
//! environment comes from the usual data directory).
// Each test binary uses its own part of this module.
#![allow(dead_code)]

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use sandcell_agent::{Config, ProviderConfig};
use sandcell_llm_replay::{recorded_fixtures, ReplayServer, Script};
use sandcell_pyenv::{EnvInfo, Environment, Home};
use sandcell_server::{Server, ServerConfig, ServerError};
use sandcell_service::{DatabaseLocation, Models, ServiceConfig};
use sandcell_session::{PackageIndex, Runtime, RuntimeOptions};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The Python side of a server: its runtime, and the environment described to models.
#[derive(Clone)]
pub struct Python {
    pub runtime: Runtime,
    pub info: EnvInfo,
}

pub async fn python() -> Python {
    python_with_index(None).await
}

/// The usual Python environment (built if needed).
pub fn environment() -> Environment {
    let home = Home::from_env().expect("a data directory");
    Environment::ensure(&home, &mut |step| eprintln!("setup: {step}"))
        .expect("the Python environment can be set up")
}

/// A Python side whose sessions install packages from `package_index`.
pub async fn python_with_index(package_index: Option<PackageIndex>) -> Python {
    let env = environment();
    // Nothing pre-imported: these tests need no data stack, and start faster without.
    let options = RuntimeOptions {
        template_modules: Vec::new(),
        package_index,
        ..RuntimeOptions::default()
    };
    let runtime = Runtime::start(&env, options)
        .await
        .expect("the template starts");
    Python {
        runtime,
        info: env.info().clone(),
    }
}

/// The default model of [`with_model`] servers.
pub const MODEL: &str = "anthropic:test-model";

/// A model played by the replay server, in Anthropic's wire format, following `steps`.
pub async fn replay(steps: Value) -> ReplayServer {
    let script: Script = serde_json::from_value(steps).expect("a valid script");
    ReplayServer::start(script, recorded_fixtures())
        .await
        .expect("the replay server starts")
}

/// A server whose default model is played by `model`.
pub fn with_model(data: &Path, model: &ReplayServer) -> ServerConfig {
    let mut models = Config::default();
    models.providers.insert(
        "anthropic".into(),
        ProviderConfig {
            base_url: Some(model.base_url()),
            api_key: Some("test-key".into()),
            ..ProviderConfig::default()
        },
    );
    let base = config(data);
    ServerConfig {
        service: ServiceConfig {
            models: Models {
                config: models,
                default: Some(MODEL.into()),
            },
            ..base.service.clone()
        },
        ..base
    }
}

/// A loopback server's configuration with its data in `data_dir`.
pub fn config(data_dir: &Path) -> ServerConfig {
    let mut config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ServerConfig::new(data_dir)
    };
    if let Ok(url) = std::env::var("SANDCELL_TEST_POSTGRES_URL") {
        config.service.database = DatabaseLocation::Postgres(postgres_schema(&url, data_dir));
    }
    config
}

/// The URL of a schema on the PostgreSQL server at `url` that belongs to `data_dir`:
/// created by the first server of that directory, found again by a restarted one.
fn postgres_schema(url: &str, data_dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    data_dir.hash(&mut hasher);
    let schema = format!("test_{:016x}", hasher.finish());
    let created = std::process::Command::new("psql")
        .args([url, "-q", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg(format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .status()
        .expect("psql runs (it comes with PostgreSQL)");
    assert!(created.success(), "psql could not create schema {schema}");
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-csearch_path%3D{schema}")
}

pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl TestServer {
    pub async fn start(config: ServerConfig, python: Python) -> Self {
        let server = Server::bind(config).await.expect("the server binds");
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(python.runtime, python.info, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// A client without a key.
    pub fn api(&self) -> Api {
        Api {
            base: format!("http://{}", self.addr),
            client: reqwest::Client::new(),
            key: None,
        }
    }

    /// A client that sends `key`.
    pub fn api_as(&self, key: &str) -> Api {
        Api {
            key: Some(key.to_owned()),
            ..self.api()
        }
    }

    /// Stops the server the way a signal does, and checks that it stopped cleanly.
    pub async fn stop(mut self) {
        self.begin_stop();
        self.task
            .await
            .expect("the server task ends")
            .expect("the server stops cleanly");
    }

    pub fn begin_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub async fn wait(self) -> Result<(), ServerError> {
        self.task.await.expect("the server task ends")
    }
}

#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
    pub key: Option<String>,
}

impl Api {
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.client.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path).send().await.unwrap()
    }

    /// `POST path` with `body` as JSON.
    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.request(Method::POST, path)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// A new session (asserting 201).
    pub async fn create_session(&self) -> String {
        let response = self
            .request(Method::POST, "/api/v1/sessions")
            .send()
            .await
            .unwrap();
        let (status, body) = json(response).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// Runs code and returns the JSON result, the default answer (asserting 200).
    pub async fn execute(&self, session: &str, code: &str) -> Value {
        let response = self
            .request(Method::POST, &format!("/api/v1/sessions/{session}/execute"))
            .json(&serde_json::json!({ "code": code }))
            .send()
            .await
            .unwrap();
        let (status, body) = json(response).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Starts code with the answer as an event stream, as asked with `Accept`; its first
    /// event (`execution`, with the execution's id) is read already.
    pub async fn execute_stream(&self, session: &str, code: &str) -> EventStream {
        let response = self
            .request(Method::POST, &format!("/api/v1/sessions/{session}/execute"))
            .header("accept", "text/event-stream")
            .json(&serde_json::json!({ "code": code }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        let mut stream = EventStream::new(response);
        let first = stream.next().await.expect("an execution event");
        assert_eq!(first.name, "execution", "{first:?}");
        stream.execution_id = first.data["id"].as_str().map(str::to_owned);
        assert!(stream.execution_id.is_some(), "{first:?}");
        stream
    }

    pub async fn session_state(&self, session: &str) -> String {
        let (status, body) = json(self.get(&format!("/api/v1/sessions/{session}")).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["state"].as_str().unwrap().to_owned()
    }
}

/// The status and JSON body of a response.
pub async fn json(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("not JSON ({e}), status {status}: {text:?}"));
    (status, body)
}

/// Asserts the response is the JSON error `code` with a sentence.
pub async fn assert_error(response: Response, status: StatusCode, code: &str) -> String {
    let (got, body) = json(response).await;
    assert_eq!(got, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.ends_with('.'), "a sentence: {message}");
    message
}

/// One Server-Sent Event.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: String,
    pub data: Value,
    /// The `id:` field, when the event has one.
    pub id: Option<String>,
}

/// Reads Server-Sent Events as they arrive.
pub struct EventStream {
    response: Response,
    buffer: String,
    /// The id of the execution whose events these are (from its `execution` event).
    pub execution_id: Option<String>,
}

impl EventStream {
    pub fn new(response: Response) -> Self {
        Self {
            response,
            buffer: String::new(),
            execution_id: None,
        }
    }

    /// The next event, or None at the end of the stream.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse_event(&block) {
                    return Some(event);
                }
                continue;
            }
            let chunk = self.response.chunk().await.expect("the stream reads")?;
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// Every remaining event.
    pub async fn rest(mut self) -> Vec<Event> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}

/// One block of the SSE format: `event:` and `data:` lines (comments, such as keep-alives,
/// start with `:` and make no event).
fn parse_event(block: &str) -> Option<Event> {
    let mut name = None;
    let mut id = None;
    let mut data = Vec::new();
    for line in block.lines() {
        if let Some(value) = line.strip_prefix("id:") {
            id = Some(value.trim_start().to_owned());
        } else if let Some(value) = line.strip_prefix("event:") {
            name = Some(value.trim_start().to_owned());
        } else if let Some(value) = line.strip_prefix("data:") {
            data.push(value.strip_prefix(' ').unwrap_or(value));
        }
    }
    let name = name?;
    let data = serde_json::from_str(&data.join("\n"))
        .unwrap_or_else(|e| panic!("event {name} has no JSON data ({e}): {block:?}"));
    Some(Event { name, data, id })
}

/// Sends a request exactly as written (no client normalises its path) and returns the
/// status and body.
pub async fn raw_request(addr: SocketAddr, method: &str, target: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request =
        format!("{method} {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Polls `check` until it is true; panics after a generous bound (a hang, not a slow machine).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..1200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within two minutes");
}
