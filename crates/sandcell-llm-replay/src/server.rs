//! The HTTP server: each `POST` is recorded, takes the next step of the script, and gets
//! that step's answer.

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Display;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::render::{Turn, Wire, PATHS};
use crate::script::{Answer, Reply, Script, Step};

/// A running replay server. It stops accepting connections when dropped.
pub struct ReplayServer {
    address: SocketAddr,
    exchange: Arc<Mutex<Exchange>>,
    /// Never sent: dropping it, with the server, starts the graceful shutdown.
    _shutdown: oneshot::Sender<()>,
}

/// A request the server received, as `GET /_requests` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordedRequest {
    /// The path, without the query.
    pub path: String,
    /// By lower-case name; the values of a repeated header are joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// The body as JSON, or as a string when it is not JSON.
    pub body: Value,
}

impl std::fmt::Debug for ReplayServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayServer")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// Why a server did not start.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: io::Error,
    },
    #[error("step {step} of the script: cannot read the fixture {path}: {source}")]
    Fixture {
        step: usize,
        path: PathBuf,
        source: io::Error,
    },
    #[error("step {step} of the script: {status} is not an HTTP status")]
    Status { step: usize, status: u16 },
    #[error("step {step} of the script: {name}: {value} is not a valid HTTP header")]
    Header {
        step: usize,
        name: String,
        value: String,
    },
}

/// The answer to an exhausted script.
const NO_STEP_LEFT: &str = "the replay script has no step left for this request";

impl ReplayServer {
    /// Starts serving `script` on a free port of 127.0.0.1. Fixture names are file names
    /// in `fixtures`, all read now: a missing one fails here, not in the middle of a test.
    pub async fn start(script: Script, fixtures: impl AsRef<Path>) -> Result<Self, ReplayError> {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        Self::start_on(address, script, fixtures).await
    }

    /// Like [`ReplayServer::start`], listening on `address`.
    pub async fn start_on(
        address: SocketAddr,
        script: Script,
        fixtures: impl AsRef<Path>,
    ) -> Result<Self, ReplayError> {
        let steps = prepare(script, fixtures.as_ref()).await?;
        let listen_error = |source| ReplayError::Listen { address, source };
        let listener = TcpListener::bind(address).await.map_err(listen_error)?;
        let address = listener.local_addr().map_err(listen_error)?;
        let exchange = Arc::new(Mutex::new(Exchange {
            steps,
            requests: Vec::new(),
        }));
        let router = Router::new()
            .route("/_requests", get(list_requests))
            .fallback(answer)
            // Requests carrying images are larger than axum's default limit.
            .layer(DefaultBodyLimit::disable())
            .with_state(Arc::clone(&exchange));
        let (shutdown, stop) = oneshot::channel::<()>();
        let serve = axum::serve(listener, router).with_graceful_shutdown(async {
            // Only ever an error: the sender was dropped.
            let _ = stop.await;
        });
        // Serving never fails: accept errors are retried inside.
        tokio::spawn(async move { serve.await });
        Ok(ReplayServer {
            address,
            exchange,
            _shutdown: shutdown,
        })
    }

    /// `http://ADDRESS:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Every `POST` received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.exchange).requests.clone()
    }
}

/// The steps left and the requests received, under one lock so that the nth request
/// takes the nth step.
struct Exchange {
    steps: VecDeque<Prepared>,
    requests: Vec<RecordedRequest>,
}

fn lock(exchange: &Mutex<Exchange>) -> MutexGuard<'_, Exchange> {
    // Nothing holding the lock can panic half-way through a change.
    exchange.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A step checked, its fixture read, ready to answer with.
struct Prepared {
    content: Content,
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    delay: Duration,
    chunk_delay: Duration,
    cut_after_bytes: Option<usize>,
    expect_path: Option<String>,
}

/// A body known in advance, or one generated for the protocol of the path hit.
enum Content {
    Fixed {
        content_type: &'static str,
        frames: Vec<Bytes>,
    },
    Reply(Reply),
    Malformed,
}

async fn prepare(script: Script, fixtures: &Path) -> Result<VecDeque<Prepared>, ReplayError> {
    let mut steps = VecDeque::with_capacity(script.steps.len());
    for (index, step) in script.steps.into_iter().enumerate() {
        steps.push_back(prepare_step(index + 1, step, fixtures).await?);
    }
    Ok(steps)
}

/// Checks step number `number` (counting from 1) and reads its fixture.
async fn prepare_step(number: usize, step: Step, fixtures: &Path) -> Result<Prepared, ReplayError> {
    let content = match step.answer {
        Answer::Reply(reply) => Content::Reply(reply),
        Answer::Malformed => Content::Malformed,
        Answer::Fixture(name) => {
            let path = fixtures.join(&name);
            let body = tokio::fs::read(&path)
                .await
                .map_err(|source| ReplayError::Fixture {
                    step: number,
                    path: path.clone(),
                    source,
                })?;
            let content_type = content_type_of(&path);
            Content::Fixed {
                content_type,
                frames: frames_of(Bytes::from(body), content_type),
            }
        }
        Answer::Body(Value::String(text)) => Content::Fixed {
            content_type: "text/plain; charset=utf-8",
            frames: vec![Bytes::from(text)],
        },
        Answer::Body(value) => Content::Fixed {
            content_type: "application/json",
            frames: vec![Bytes::from(value.to_string())],
        },
    };
    let status = StatusCode::from_u16(step.status).map_err(|_| ReplayError::Status {
        step: number,
        status: step.status,
    })?;
    let headers = step
        .headers
        .into_iter()
        .map(
            |(name, value)| match (HeaderName::try_from(&name), HeaderValue::try_from(&value)) {
                (Ok(name), Ok(value)) => Ok((name, value)),
                _ => Err(ReplayError::Header {
                    step: number,
                    name,
                    value,
                }),
            },
        )
        .collect::<Result<_, _>>()?;
    Ok(Prepared {
        content,
        status,
        headers,
        delay: Duration::from_millis(step.delay_ms),
        chunk_delay: Duration::from_millis(step.chunk_delay_ms),
        cut_after_bytes: step.cut_after_bytes,
        expect_path: step.expect_path,
    })
}

fn content_type_of(fixture: &Path) -> &'static str {
    match fixture.extension().and_then(|extension| extension.to_str()) {
        Some("sse") => "text/event-stream",
        Some("ndjson") => "application/x-ndjson",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// A recorded body cut where the service would have sent a chunk: after each event of an
/// SSE stream, after each line otherwise. Together, the frames are the body byte for byte.
fn frames_of(body: Bytes, content_type: &str) -> Vec<Bytes> {
    let end: &[u8] = if content_type == "text/event-stream" {
        b"\n\n"
    } else {
        b"\n"
    };
    let mut frames = Vec::new();
    let mut start = 0;
    while start < body.len() {
        let frame_end = body[start..]
            .windows(end.len())
            .position(|window| window == end)
            .map_or(body.len(), |position| start + position + end.len());
        frames.push(body.slice(start..frame_end));
        start = frame_end;
    }
    frames
}

async fn list_requests(State(exchange): State<Arc<Mutex<Exchange>>>) -> Json<Vec<RecordedRequest>> {
    Json(lock(&exchange).requests.clone())
}

/// Every request but `GET /_requests`.
async fn answer(
    State(exchange): State<Arc<Mutex<Exchange>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    if method != Method::POST {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "the replay server answers POST requests and GET /_requests, not {method} {path}"
            ),
        );
    }
    let request = RecordedRequest {
        path: path.to_owned(),
        headers: recorded_headers(&headers),
        body: serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned())),
    };
    let (seed, step) = {
        let mut exchange = lock(&exchange);
        exchange.requests.push(request.clone());
        (exchange.requests.len() as u64, exchange.steps.pop_front())
    };
    let Some(step) = step else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, NO_STEP_LEFT);
    };
    if let Some(expected) = step
        .expect_path
        .as_deref()
        .filter(|expected| *expected != path)
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!("the replay script expected a request to {expected}, not to {path}"),
        );
    }
    let (content_type, frames) = match (&step.content, Wire::at(path)) {
        (
            Content::Fixed {
                content_type,
                frames,
            },
            _,
        ) => (*content_type, frames.clone()),
        (Content::Reply(reply), Some(wire)) => (
            wire.content_type(),
            wire.render(&Turn::new(reply, &request.body, body.len(), seed)),
        ),
        (Content::Malformed, Some(wire)) => (wire.content_type(), vec![wire.malformed()]),
        (Content::Reply(_) | Content::Malformed, None) => {
            return error(
                StatusCode::NOT_FOUND,
                format!("the replay server generates streams for {PATHS}, not for {path}"),
            );
        }
    };
    if !step.delay.is_zero() {
        tokio::time::sleep(step.delay).await;
    }
    let mut response = Response::new(stream(frames, step.chunk_delay, step.cut_after_bytes));
    *response.status_mut() = step.status;
    let response_headers = response.headers_mut();
    response_headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    for (name, value) in step.headers {
        response_headers.insert(name, value);
    }
    response
}

fn recorded_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut recorded: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        recorded
            .entry(name.as_str().to_owned())
            .and_modify(|values| {
                values.push_str(", ");
                values.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    recorded
}

/// How long a cut stream waits, its last bytes sent, before dropping the connection.
const FLUSH_BEFORE_CUT: Duration = Duration::from_millis(50);

/// One chunk of a response body, or the place where the connection is dropped.
enum Chunk {
    Bytes(Bytes),
    Cut,
}

/// A chunked body of `frames`, with `chunk_delay` between them, cut off after
/// `cut_after_bytes` if set.
fn stream(frames: Vec<Bytes>, chunk_delay: Duration, cut_after_bytes: Option<usize>) -> Body {
    let chunks: Vec<Chunk> = match cut_after_bytes {
        None => frames.into_iter().map(Chunk::Bytes).collect(),
        Some(limit) => {
            let mut left = limit;
            let mut chunks = Vec::new();
            for frame in frames {
                if left == 0 {
                    break;
                }
                let sent = frame.slice(..frame.len().min(left));
                left -= sent.len();
                chunks.push(Chunk::Bytes(sent));
            }
            chunks.push(Chunk::Cut);
            chunks
        }
    };
    let chunks = futures_util::stream::iter(chunks.into_iter().enumerate()).then(
        move |(index, chunk)| async move {
            if index > 0 && !chunk_delay.is_zero() {
                tokio::time::sleep(chunk_delay).await;
            }
            match chunk {
                Chunk::Bytes(bytes) => Ok(bytes),
                Chunk::Cut => {
                    // Not ready for a moment first: hyper flushes what it has buffered
                    // while the body is not ready, while an error drops the connection at
                    // once, buffered bytes and all.
                    tokio::time::sleep(FLUSH_BEFORE_CUT).await;
                    Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the replay script cuts the stream here",
                    ))
                }
            }
        },
    );
    Body::from_stream(chunks)
}

/// An error in the OpenAI shape, which every client here reads.
fn error(status: StatusCode, message: impl Display) -> Response {
    let body = json!({"error": {"message": message.to_string()}});
    (status, Json(body)).into_response()
}
