//! Forwarding between nodes that share one database: a request for a session that
//! another live node runs (or for a conversation, notebook or container whose code runs
//! in one) is sent on to that node, and its answer, streams included, comes back as it
//! is written. Which node runs a session is the core's to say ([`Service::route`]); this
//! layer only carries the request.
//!
//! A response of `/v1` (`POST /v1/responses`) names its container in its body, not its
//! path: its body (bounded as every request's) is read here to route it by that
//! container.
//!
//! A forwarded request is marked, and a marked request is handled where it arrives,
//! never forwarded again: two nodes that disagree for a moment about a session cannot
//! bounce a request between them. The mark carries no authority (a client that sends it
//! only gets its request handled on the node it reached, which refuses to run a session
//! another live node runs). Answers to routed requests name the node that handled them
//! in `Sandcell-Node`.

use super::error::{ApiError, ErrorCode};
use super::mcp::MCP_PATH;
use super::API_PREFIX;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sandcell_openai::{OpenAiError, OPENAI_PREFIX};
use sandcell_service::{InSession, Route, Routed, ServiceError, HEARTBEAT_EVERY};
use std::time::Duration;

/// Marks a request one node forwarded to another.
const FORWARDED: HeaderName = HeaderName::from_static("sandcell-forwarded");
/// Names, in an answer, the node that handled the request.
const NODE: HeaderName = HeaderName::from_static("sandcell-node");
/// How long a node that does not answer is given to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// What a client whose session's node cannot be reached is told to wait.
const RETRY_UNREACHABLE: Duration = Duration::from_secs(2);

/// Headers of one connection, not of the request or answer they travel with (RFC 9110,
/// 7.6.1).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The client that carries requests to other nodes.
pub(crate) fn client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        // Nodes reach each other directly, whatever proxy the environment names.
        .no_proxy()
        .tcp_nodelay(true)
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
}

/// What a request's path routes it by, if anything.
fn routed_by(path: &str) -> Option<Routed<'_>> {
    let (door, rest) = [API_PREFIX, OPENAI_PREFIX]
        .into_iter()
        .find_map(|door| Some((door, path.strip_prefix(door)?.strip_prefix('/')?)))?;
    let mut parts = rest.splitn(3, '/');
    let (collection, id) = (parts.next()?, parts.next().filter(|id| !id.is_empty())?);
    match (door, collection) {
        (API_PREFIX, "sessions") => Some(Routed::Session(id)),
        (API_PREFIX, "conversations") => Some(Routed::In(InSession::Conversation, id)),
        (API_PREFIX, "notebooks") => Some(Routed::In(InSession::Notebook, id)),
        (OPENAI_PREFIX, "containers") => Some(Routed::In(InSession::Container, id)),
        _ => None,
    }
}

/// The layer: handles a routed request here or forwards it to the node that runs its
/// session; passes any other request on.
pub(super) async fn forward(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let by_body = (request.method() == Method::POST)
        .then(|| BodyRoute::of(&path))
        .flatten();
    let (request, named) = match by_body {
        Some(kind) => match named_in_body(request, kind, state.config.max_request_bytes).await {
            Ok(read) => read,
            Err(refused) => return refused,
        },
        None => (request, None),
    };
    let target = match (by_body, &named) {
        (Some(BodyRoute::Response), Some(id)) => Routed::In(InSession::Container, id),
        (Some(BodyRoute::Mcp), Some(id)) => Routed::Session(id),
        _ => match routed_by(&path) {
            Some(target) => target,
            None => return next.run(request).await,
        },
    };
    let route = if request.headers().contains_key(FORWARDED) {
        Ok(Route::Here)
    } else {
        state.service.route(target).await
    };
    match route {
        Ok(Route::Here) => {
            let mut response = next.run(request).await;
            let url = &state.service.sessions.node().url;
            if let Ok(value) = HeaderValue::from_str(url) {
                if !url.is_empty() {
                    response.headers_mut().insert(NODE, value);
                }
            }
            response
        }
        Ok(Route::Node(url)) => {
            tokio::select! {
                sent = send(&state.client, &url, request) => match sent {
                    Ok(response) => response,
                    Err(error) => refusal(&path, unreachable(&url, &error.to_string(), &state)),
                },
                () = owner_gone(&state, target, &url) => {
                    refusal(&path, unreachable(&url, "it stopped answering", &state))
                }
            }
        }
        Err(error) => refusal(&path, error),
    }
}

/// Where responses are created.
const RESPONSES: &str = "/v1/responses";

/// Requests that name what they route by in their body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyRoute {
    /// `POST /v1/responses`: the container its `code_interpreter` tool names by id.
    Response,
    /// `POST /mcp`: the session a tool call names (`session_id`) or a resource read's URI
    /// is of (`sandcell://sessions/ID/…`); the MCP session is taken up on that node.
    Mcp,
}

impl BodyRoute {
    fn of(path: &str) -> Option<Self> {
        match path {
            RESPONSES => Some(Self::Response),
            MCP_PATH => Some(Self::Mcp),
            _ => None,
        }
    }

    /// The id `body` names, if any, read by the door the request is for.
    fn named(self, body: &serde_json::Value) -> Option<String> {
        match self {
            Self::Response => sandcell_openai::container_named(body),
            Self::Mcp => sandcell_mcp::session_named(body),
        }
    }
}

/// The request as it was (its body read into memory), and the id its body names for
/// `kind`, if any. A body that is not JSON is left for the door to refuse.
async fn named_in_body(
    request: Request,
    kind: BodyRoute,
    limit: usize,
) -> Result<(Request, Option<String>), Response> {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        let message = format!(
            "The request's body is larger than this server takes ({} MiB) or was cut off; send less.",
            limit / (1024 * 1024)
        );
        match kind {
            BodyRoute::Response => OpenAiError::too_large(message).into_response(),
            BodyRoute::Mcp => ApiError::new(ErrorCode::PayloadTooLarge, message).into_response(),
        }
    })?;
    let named = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|body| kind.named(&body));
    Ok((Request::from_parts(parts, Body::from(bytes)), named))
}

/// Sends `request` to the node at `base` and streams its answer back.
async fn send(
    client: &reqwest::Client,
    base: &str,
    request: Request,
) -> Result<Response, reqwest::Error> {
    let (parts, body) = request.into_parts();
    let target = format!(
        "{}{}",
        base.trim_end_matches('/'),
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    // `Host` stays the one the client used: the node checks it as the client's (`/mcp`
    // accepts only the server's own names).
    let mut headers = end_to_end(&parts.headers);
    headers.insert(FORWARDED, HeaderValue::from_static("1"));
    let answer = client
        .request(parts.method, target)
        .headers(headers)
        .body(reqwest::Body::wrap_stream(body.into_data_stream()))
        .send()
        .await?;
    let mut response = Response::builder().status(answer.status());
    if let Some(headers) = response.headers_mut() {
        *headers = end_to_end(answer.headers());
    }
    Ok(response
        .body(Body::from_stream(answer.bytes_stream()))
        .unwrap_or_else(|error| {
            ApiError::new(
                ErrorCode::Internal,
                format!("The forwarded answer cannot be passed on: {error}."),
            )
            .into_response()
        }))
}

/// `headers` without those of one connection.
fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let mut kept = headers.clone();
    for name in HOP_BY_HOP {
        kept.remove(name);
    }
    kept
}

/// Returns once the database no longer names the node at `url` as the one that runs
/// `target`'s session (it missed its heartbeats, or let the session go): a node that
/// accepted a request and then stopped (paused, cut off) must not hold its client forever.
async fn owner_gone(state: &AppState, target: Routed<'_>, url: &str) {
    loop {
        tokio::time::sleep(HEARTBEAT_EVERY).await;
        match state.service.route(target).await {
            Ok(Route::Node(owner)) if owner == url => {}
            _ => return,
        }
    }
}

/// The node at `url` runs the session but cannot be reached.
fn unreachable(url: &str, error: &str, state: &AppState) -> ServiceError {
    let timeout = state.service.sessions.node().timeout.as_secs();
    tracing::warn!("cannot forward a request to {url}: {error}");
    ServiceError::Unavailable {
        message: format!(
            "The node running this session ({url}) cannot be reached; once it has missed its heartbeats for {timeout} s another node takes the session over (variables are lost, files are kept). Try again shortly."
        ),
        retry_after: RETRY_UNREACHABLE,
    }
}

/// An error in the shape of the door the path belongs to.
fn refusal(path: &str, error: ServiceError) -> Response {
    if path.starts_with(OPENAI_PREFIX) {
        OpenAiError::from(error).into_response()
    } else {
        ApiError::from(error).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_routed_by_the_session_they_name() {
        assert_eq!(
            routed_by("/api/v1/sessions/abc/execute"),
            Some(Routed::Session("abc"))
        );
        assert_eq!(
            routed_by("/api/v1/sessions/abc"),
            Some(Routed::Session("abc"))
        );
        assert_eq!(routed_by("/api/v1/sessions"), None);
        assert_eq!(routed_by("/api/v1/sessions/"), None);
        assert_eq!(
            routed_by("/api/v1/conversations/c1/messages"),
            Some(Routed::In(InSession::Conversation, "c1"))
        );
        assert_eq!(
            routed_by("/api/v1/notebooks/n1"),
            Some(Routed::In(InSession::Notebook, "n1"))
        );
        assert_eq!(
            routed_by("/v1/containers/cntr_1/files"),
            Some(Routed::In(InSession::Container, "cntr_1"))
        );
        assert_eq!(routed_by("/v1/containers"), None);
        assert_eq!(routed_by("/v1/files/file_1"), None);
        assert_eq!(routed_by("/api/v1/containers/x"), None);
        assert_eq!(routed_by("/healthz"), None);
    }

    #[tokio::test]
    async fn a_response_is_routed_by_the_container_its_tool_names() {
        let body = |json: serde_json::Value| {
            Request::post(RESPONSES)
                .body(Body::from(json.to_string()))
                .unwrap()
        };
        let named = body(serde_json::json!({
            "model": "m", "input": "hi",
            "tools": [{"type": "code_interpreter", "container": "cntr_1"}]
        }));
        let (request, container) = named_in_body(named, BodyRoute::Response, 1 << 20)
            .await
            .unwrap();
        assert_eq!(container.as_deref(), Some("cntr_1"));
        let kept = axum::body::to_bytes(request.into_body(), 1 << 20)
            .await
            .unwrap();
        assert!(kept.starts_with(b"{"), "the body is passed on whole");
        let auto = body(serde_json::json!({
            "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]
        }));
        let (_, none) = named_in_body(auto, BodyRoute::Response, 1 << 20)
            .await
            .unwrap();
        assert_eq!(none, None);
        let too_large = body(serde_json::json!({"input": "x".repeat(100)}));
        let refused = named_in_body(too_large, BodyRoute::Response, 10)
            .await
            .unwrap_err();
        assert_eq!(refused.status(), axum::http::StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn connection_headers_are_not_forwarded() {
        let mut headers = HeaderMap::new();
        headers.insert("connection", HeaderValue::from_static("keep-alive"));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        headers.insert("authorization", HeaderValue::from_static("Bearer k"));
        let kept = end_to_end(&headers);
        assert_eq!(kept.len(), 1);
        assert!(kept.contains_key("authorization"));
    }
}
