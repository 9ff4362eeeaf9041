//! `/sessions`: creating, listing and deleting sessions, and running code in them.

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::stream::{event_stream, resume_from, StreamEvent};
use crate::state::AppState;
use axum::extract::State;
use axum::http::header::{ACCEPT, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sandcell_service::{
    EnvironmentInfo, ExecutionLog, ExecutionState, LimitsRequest, Page, PageRequest, SessionInfo,
    User, RESTARTED_NOTICE,
};
use sandcell_session::{Completion, Execution};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_session, list_sessions))
        .routes(routes!(get_session, delete_session))
        .routes(routes!(execute))
        .routes(routes!(install_packages))
        .routes(routes!(get_execution))
        .routes(routes!(execution_events))
        .routes(routes!(interrupt))
        .routes(routes!(complete))
        .routes(routes!(restart))
        .routes(routes!(list_environments))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    #[serde(default)]
    pub limits: LimitsRequest,
    /// What the session may reach on the network, within what the server allows: host
    /// names, `*.domain`, IP addresses or CIDRs, each with an optional `:PORT`. Left out:
    /// the server's default (no network unless the operator says otherwise); `[]`: none.
    #[schema(example = json!(["pypi.example.org:443"]))]
    pub allow_net: Option<Vec<String>>,
    /// The configured environment to run in (see `GET /environments`): the base
    /// environment's packages plus its own. Left out or null: the base environment.
    #[schema(example = "geo")]
    pub environment: Option<String>,
}

/// The path of a session's routes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SessionRoute {
    /// The session's id.
    pub id: String,
}

/// The path of an execution's routes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ExecutionRoute {
    /// The session's id.
    pub id: String,
    /// The execution's id (`exec_…`), from its `execution` event or JSON result.
    pub execution_id: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    /// Python code, run as one cell.
    pub code: String,
    /// Time limit of this execution in seconds: more than 0, at most the session's
    /// `limits.timeout_secs` (the default). It applies to this execution only.
    #[schema(exclusive_minimum = 0)]
    pub timeout_secs: Option<f64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExecuteQuery {
    /// `true`: answer with a stream of events (as `Accept: text/event-stream` does);
    /// `false`: with the final result as JSON (the default).
    pub stream: Option<bool>,
}

/// The result of an execution, as JSON.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionResponse {
    /// The execution's id.
    pub id: String,
    #[serde(flatten)]
    pub execution: Execution,
    /// Set when the execution ran in a fresh Python process (`restarted`): says that
    /// variables are gone and files remain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
}

/// An execution as kept after it started: running, or finished with its result.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionStatus {
    pub id: String,
    pub session_id: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub state: ExecutionState,
    /// The result, once finished (null while running, or when the session could not be
    /// driven: then `error` says why).
    pub result: Option<ExecutionResponse>,
    /// Why the execution has no result.
    pub error: Option<ErrorBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Interrupted {
    /// Whether an execution was running (and was sent a KeyboardInterrupt).
    pub interrupted: bool,
}

/// Create a session.
///
/// Makes its working directory and starts its Python process. Limits left out take the
/// server's defaults; each must be within the server's maxima.
#[utoipa::path(
    post,
    path = "/sessions",
    tag = "sessions",
    request_body(content = Option<CreateSession>, description = "Optional; an empty body takes every default"),
    responses(
        (status = 201, description = "The new session", body = SessionInfo),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 422, description = "A limit out of range, a network entry that cannot be read or is outside what the server allows, an environment the server does not configure (the message lists those it does), or an unknown field", body = ErrorBody),
        (status = 429, description = "You already run as many live sessions as one user may, all busy (see Retry-After)", body = ErrorBody),
        (status = 503, description = "The server runs as many live sessions as it may, all busy (see Retry-After), or it is shutting down", body = ErrorBody),
    )
)]
async fn create_session(
    State(state): State<AppState>,
    user: User,
    body: Option<ApiJson<CreateSession>>,
) -> Result<(StatusCode, Json<SessionInfo>), ApiError> {
    let request = body.map(|ApiJson(request)| request).unwrap_or_default();
    let limits = request.limits.resolve(&state.service.config.max_limits)?;
    let network = state
        .service
        .sessions
        .network_for(request.allow_net.as_deref())?;
    let session = state
        .service
        .sessions
        .create(&user, limits, network, request.environment.as_deref())
        .await?;
    Ok((StatusCode::CREATED, Json(session)))
}

/// List the configured environments a session may name.
///
/// Each is the base environment plus packages of its own; the base environment itself
/// is not listed (a session that names none runs in it).
#[utoipa::path(
    get,
    path = "/environments",
    tag = "sessions",
    responses(
        (status = 200, description = "The configured environments, by name", body = Vec<EnvironmentInfo>),
        (status = 401, description = "No valid API key", body = ErrorBody),
    )
)]
async fn list_environments(
    State(state): State<AppState>,
    _user: User,
) -> Json<Vec<EnvironmentInfo>> {
    Json(state.service.sessions.environments())
}

/// List your sessions, oldest first.
#[utoipa::path(
    get,
    path = "/sessions",
    tag = "sessions",
    params(PageRequest),
    responses(
        (status = 200, description = "A page of the sessions", body = Page<SessionInfo>),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 400, description = "A query string that is not valid (a limit that is not a number)", body = ErrorBody),
        (status = 422, description = "A limit out of range, or an unknown cursor", body = ErrorBody),
    )
)]
async fn list_sessions(
    State(state): State<AppState>,
    user: User,
    ApiQuery(page): ApiQuery<PageRequest>,
) -> Result<Json<Page<SessionInfo>>, ApiError> {
    Ok(Json(state.service.sessions.list(&user, &page).await?))
}

/// Get a session.
#[utoipa::path(
    get,
    path = "/sessions/{id}",
    tag = "sessions",
    params(SessionRoute),
    responses(
        (status = 200, description = "The session", body = SessionInfo),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
    )
)]
async fn get_session(
    State(state): State<AppState>,
    user: User,
    ApiPath(SessionRoute { id }): ApiPath<SessionRoute>,
) -> Result<Json<SessionInfo>, ApiError> {
    Ok(Json(state.service.sessions.get(&user, &id)?))
}

/// Delete a session.
///
/// Interrupts a running execution and waits for it, stops the Python process, and deletes
/// the session's files and metadata. A conversation's session is refused (409): delete
/// the conversation, which deletes its session.
#[utoipa::path(
    delete,
    path = "/sessions/{id}",
    tag = "sessions",
    params(SessionRoute),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 409, description = "The session belongs to a conversation", body = ErrorBody),
    )
)]
async fn delete_session(
    State(state): State<AppState>,
    user: User,
    ApiPath(SessionRoute { id }): ApiPath<SessionRoute>,
) -> Result<StatusCode, ApiError> {
    state.service.sessions.delete(&user, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Run code.
///
/// By default the answer is the result as JSON, once the execution ends (`ExecutionResponse`,
/// with the execution's `id`). With `Accept: text/event-stream` (or `?stream=true`) it is a
/// stream of Server-Sent Events, in order: `execution` (`{"id"}`), `notice` (when the
/// Python process was started afresh for this execution: `{"code": "session_restarted",
/// "message"}`), then as the code runs `stdout` and `stderr` (`{"text"}`), `result` (a
/// MIME bundle: MIME type → data, binary data in base64) and `error` (`{"ename",
/// "evalue", "traceback"}`); then `files` (the files created or changed: `[{"path",
/// "size", "mime"}]`) and `end` (the whole `Execution`). If the session cannot be driven
/// the stream ends with `failure` (an error body) instead. One execution runs at a time in
/// a session; it goes on to its end even if the client disconnects, and its result and
/// events stay readable under its id for a while (`Location` names it).
#[utoipa::path(
    post,
    path = "/sessions/{id}/execute",
    tag = "sessions",
    params(SessionRoute, ExecuteQuery),
    request_body(content = ExecuteRequest),
    responses(
        (status = 200, description = "The result of the execution, or its events",
            content(
                (ExecutionResponse = "application/json"),
                (StreamEvent = "text/event-stream"),
            )),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 409, description = "The session is running another execution", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 422, description = "No code, a timeout out of range, or an unknown field", body = ErrorBody),
        (status = 429, description = "Starting this session's Python process would exceed your live-session quota (see Retry-After)", body = ErrorBody),
        (status = 500, description = "The Python session could not be started or driven", body = ErrorBody),
        (status = 503, description = "Too many live sessions to start this one's Python process (see Retry-After), or the server is shutting down", body = ErrorBody),
    )
)]
async fn execute(
    State(state): State<AppState>,
    user: User,
    ApiPath(SessionRoute { id }): ApiPath<SessionRoute>,
    ApiQuery(query): ApiQuery<ExecuteQuery>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<ExecuteRequest>,
) -> Result<Response, ApiError> {
    let log = state
        .service
        .sessions
        .execute(&user, &id, request.code, request.timeout_secs)
        .await?;
    let location = execution_location(&id, &log);
    let stream = query.stream.unwrap_or_else(|| wants_event_stream(&headers));
    let mut response = if stream {
        event_stream(log, 0).into_response()
    } else {
        let execution = log.result().await?;
        Json(response_of(&log, execution)).into_response()
    };
    if let Some(location) = location {
        response.headers_mut().insert(LOCATION, location);
    }
    Ok(response)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallPackages {
    /// Requirements: a package name with optional extras and version specifiers, without
    /// spaces (`pandas`, `requests[socks]`, `numpy>=1.26,<2`); at most 64. Options, URLs
    /// and paths are refused.
    #[schema(example = json!(["requests", "numpy>=1.26,<2"]))]
    pub packages: Vec<String>,
}

/// Install packages into the session.
///
/// Runs pip in the session, as `%pip install` does, with the server's package index
/// (`--pip-index`): the packages go into the session's own layer in
/// `/mnt/data/.packages` (counted in its disk quota, importable at once, gone with the
/// session). The answer is the execution's result, like `execute`'s: pip's output, status
/// `error` when it failed. Without a package index the answer is 409.
#[utoipa::path(
    post,
    path = "/sessions/{id}/packages",
    tag = "sessions",
    params(SessionRoute),
    request_body(content = InstallPackages),
    responses(
        (status = 200, description = "The result of the installation", body = ExecutionResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 409, description = "The session is running another execution, or the server has no package index", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 422, description = "No packages, too many, one that is not a name with extras and version specifiers, or an unknown field", body = ErrorBody),
        (status = 429, description = "Starting this session's Python process would exceed your live-session quota (see Retry-After)", body = ErrorBody),
        (status = 500, description = "The Python session could not be started or driven", body = ErrorBody),
        (status = 503, description = "Too many live sessions to start this one's Python process (see Retry-After), or the server is shutting down", body = ErrorBody),
    )
)]
async fn install_packages(
    State(state): State<AppState>,
    user: User,
    ApiPath(SessionRoute { id }): ApiPath<SessionRoute>,
    ApiJson(request): ApiJson<InstallPackages>,
) -> Result<Response, ApiError> {
    let log = state
        .service
        .sessions
        .install_packages(&user, &id, &request.packages)
        .await?;
    let execution = log.result().await?;
    let mut response = Json(response_of(&log, execution)).into_response();
    if let Some(location) = execution_location(&id, &log) {
        response.headers_mut().insert(LOCATION, location);
    }
    Ok(response)
}

/// Where an execution's status is read (`Location`).
fn execution_location(session_id: &str, log: &ExecutionLog) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{}/sessions/{session_id}/executions/{}",
        super::API_PREFIX,
        log.id
    ))
    .ok()
}

/// Get an execution: running, or finished with its result.
///
/// Executions are kept for a while after they end (10 minutes unless the server is
/// configured otherwise, and a session's last 16), so a client that lost its connection
/// can read what it missed.
#[utoipa::path(
    get,
    path = "/sessions/{id}/executions/{execution_id}",
    tag = "sessions",
    params(ExecutionRoute),
    responses(
        (status = 200, description = "The execution", body = ExecutionStatus),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such session or execution (or no longer kept)", body = ErrorBody),
    )
)]
async fn get_execution(
    State(state): State<AppState>,
    user: User,
    ApiPath(ExecutionRoute { id, execution_id }): ApiPath<ExecutionRoute>,
) -> Result<Json<ExecutionStatus>, ApiError> {
    let log = state
        .service
        .sessions
        .execution(&user, &id, &execution_id)?;
    let execution_state = log.state();
    let (result, error) = match execution_state {
        ExecutionState::Running => (None, None),
        ExecutionState::Finished => match log.result().await {
            Ok(execution) => (Some(response_of(&log, execution)), None),
            Err(error) => (None, Some(ApiError::from(error).body())),
        },
    };
    Ok(Json(ExecutionStatus {
        id: log.id.clone(),
        session_id: log.session_id.clone(),
        started_at: log.started_at.clone(),
        state: execution_state,
        result,
        error,
    }))
}

/// Follow an execution's events (re-attach).
///
/// The same Server-Sent Events as `execute` streams, from the start, or after the event
/// whose `id` a reconnecting client sends as `Last-Event-ID`; then live until the end.
#[utoipa::path(
    get,
    path = "/sessions/{id}/executions/{execution_id}/events",
    tag = "sessions",
    params(ExecutionRoute),
    responses(
        (status = 200, description = "The execution's events", content((StreamEvent = "text/event-stream"))),
        (status = 400, description = "A Last-Event-ID that is not a number", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such session or execution (or no longer kept)", body = ErrorBody),
    )
)]
async fn execution_events(
    State(state): State<AppState>,
    user: User,
    ApiPath(ExecutionRoute { id, execution_id }): ApiPath<ExecutionRoute>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let log = state
        .service
        .sessions
        .execution(&user, &id, &execution_id)?;
    let from = resume_from(&headers)?;
    Ok(event_stream(log, from).into_response())
}

fn response_of(log: &ExecutionLog, execution: Execution) -> ExecutionResponse {
    let notice = execution.restarted.then(|| RESTARTED_NOTICE.to_owned());
    ExecutionResponse {
        id: log.id.clone(),
        execution,
        notice,
    }
}

/// Interrupt the running execution.
///
/// Sends it a KeyboardInterrupt: the execution ends with status `interrupted` and the
/// session's variables are kept.
#[utoipa::path(
    post,
    path = "/sessions/{id}/interrupt",
    tag = "sessions",
    params(SessionRoute),
    responses(
        (status = 200, description = "Whether an execution was running", body = Interrupted),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
    )
)]
async fn interrupt(
    State(state): State<AppState>,
    user: User,
    ApiPath(SessionRoute { id }): ApiPath<SessionRoute>,
) -> Result<Json<Interrupted>, ApiError> {
    let interrupted = state.service.sessions.interrupt(&user, &id)?;
    Ok(Json(Interrupted { interrupted }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    /// The code of the cell being edited.
    pub code: String,
    /// The cursor: Unicode code points of `code` before it (as Jupyter counts).
    pub cursor_pos: usize,
}

/// Complete code at a cursor.
///
/// What IPython's completer offers there in the session's live kernel (names, attributes
/// of live objects, dictionary keys, paths), in the shape of Jupyter's `complete_reply`:
/// the matches, and the range of code (`cursor_start` to `cursor_end`, in code points)
/// each replaces. The kernel answers between executions: while the session runs a cell or
/// a conversation's turn the answer is 409 `session_busy`.
#[utoipa::path(
    post,
    path = "/sessions/{id}/complete",
    tag = "sessions",
    params(SessionRoute),
    request_body = CompleteRequest,
    responses(
        (status = 200, description = "The completions", body = Completion),
        (status = 400, description = "Malformed JSON, or no body", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 409, description = "The session is running something", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 422, description = "The cursor is past the end of the code", body = ErrorBody),
    )
)]
async fn complete(
    State(state): State<AppState>,
    user: User,
    ApiPath(SessionRoute { id }): ApiPath<SessionRoute>,
    ApiJson(request): ApiJson<CompleteRequest>,
) -> Result<Json<Completion>, ApiError> {
    let completion = state
        .service
        .sessions
        .complete(&user, &id, &request.code, request.cursor_pos)
        .await?;
    Ok(Json(completion))
}

/// Restart the Python process.
///
/// Variables are gone; files in /mnt/data remain.
#[utoipa::path(
    post,
    path = "/sessions/{id}/restart",
    tag = "sessions",
    params(SessionRoute),
    responses(
        (status = 200, description = "The session, with a fresh Python process", body = SessionInfo),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 409, description = "The session is running an execution", body = ErrorBody),
        (status = 500, description = "The Python session could not restart", body = ErrorBody),
        (status = 429, description = "Starting a Python process would exceed your live-session quota (see Retry-After)", body = ErrorBody),
        (status = 503, description = "Too many live sessions, all busy (see Retry-After), or the server is shutting down", body = ErrorBody),
    )
)]
async fn restart(
    State(state): State<AppState>,
    user: User,
    ApiPath(SessionRoute { id }): ApiPath<SessionRoute>,
) -> Result<Json<SessionInfo>, ApiError> {
    Ok(Json(state.service.sessions.restart(&user, &id).await?))
}

/// Whether the client asked for an event stream by name (`*/*` and no `Accept` get JSON).
fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("text/event-stream"))
}
