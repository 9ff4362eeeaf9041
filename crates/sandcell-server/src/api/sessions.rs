//! `/sessions`: creating, listing and deleting sessions, and running code in them.

use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::stream::{event_stream, StreamEvent};
use crate::error::{ApiError, ErrorBody};
use crate::limits::LimitsRequest;
use crate::sessions::{SessionInfo, RESTARTED_NOTICE};
use crate::state::AppState;
use crate::store::User;
use axum::extract::State;
use axum::http::header::ACCEPT;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sandcell_session::Execution;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_session, list_sessions))
        .routes(routes!(get_session, delete_session))
        .routes(routes!(execute))
        .routes(routes!(interrupt))
        .routes(routes!(restart))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    #[serde(default)]
    pub limits: LimitsRequest,
}

/// The path of a session's routes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SessionRoute {
    /// The session's id.
    pub id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionInfo>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    /// Python code, run as one cell.
    pub code: String,
    /// Time limit of this execution in seconds: more than 0, at most the session's
    /// `timeout_secs` (the default).
    #[schema(exclusive_minimum = 0)]
    pub timeout: Option<f64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExecuteQuery {
    /// `false`: answer with the final result as JSON instead of an event stream (as
    /// `Accept: application/json` does).
    pub stream: Option<bool>,
}

/// The result of an execution, as JSON.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionResponse {
    #[serde(flatten)]
    pub execution: Execution,
    /// Set when the execution ran in a fresh Python process (`restarted`): says that
    /// variables are gone and files remain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
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
        (status = 422, description = "A limit out of range, or an unknown field", body = ErrorBody),
        (status = 503, description = "Too many live sessions, or the server is shutting down", body = ErrorBody),
    )
)]
async fn create_session(
    State(state): State<AppState>,
    user: User,
    body: Option<ApiJson<CreateSession>>,
) -> Result<(StatusCode, Json<SessionInfo>), ApiError> {
    let request = body.map(|ApiJson(request)| request).unwrap_or_default();
    let limits = request.limits.resolve(&state.config.max_limits)?;
    let session = state.sessions.create(&user, limits).await?;
    Ok((StatusCode::CREATED, Json(session)))
}

/// List your sessions, oldest first.
#[utoipa::path(
    get,
    path = "/sessions",
    tag = "sessions",
    responses(
        (status = 200, description = "The sessions", body = SessionList),
        (status = 401, description = "No valid API key", body = ErrorBody),
    )
)]
async fn list_sessions(State(state): State<AppState>, user: User) -> Json<SessionList> {
    Json(SessionList {
        sessions: state.sessions.list(&user),
    })
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
    Ok(Json(state.sessions.get(&user, &id)?))
}

/// Delete a session.
///
/// Interrupts a running execution and waits for it, stops the Python process, and deletes
/// the session's files and metadata.
#[utoipa::path(
    delete,
    path = "/sessions/{id}",
    tag = "sessions",
    params(SessionRoute),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
    )
)]
async fn delete_session(
    State(state): State<AppState>,
    user: User,
    ApiPath(SessionRoute { id }): ApiPath<SessionRoute>,
) -> Result<StatusCode, ApiError> {
    state.sessions.delete(&user, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Run code.
///
/// By default the answer is a stream of Server-Sent Events, in order: `notice` (when the
/// Python process was started afresh for this execution: `{"code": "session_restarted",
/// "message"}`), then as the code runs `stdout` and `stderr` (`{"text"}`), `result` (a
/// MIME bundle: MIME type → data, binary data in base64) and `error` (`{"ename",
/// "evalue", "traceback"}`); then `files` (the files created or changed: `[{"path",
/// "size", "mime"}]`) and `end` (the whole `Execution`). If the session cannot be driven
/// the stream ends with `failure` (an error body) instead. With `Accept:
/// application/json` or `?stream=false` the answer is the `Execution` alone. One
/// execution runs at a time in a session; it goes on to its end even if the client
/// disconnects.
#[utoipa::path(
    post,
    path = "/sessions/{id}/execute",
    tag = "sessions",
    params(SessionRoute, ExecuteQuery),
    request_body(content = ExecuteRequest),
    responses(
        (status = 200, description = "The events of the execution, or its result",
            content(
                (StreamEvent = "text/event-stream"),
                (ExecutionResponse = "application/json"),
            )),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 409, description = "The session is running another execution", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 422, description = "No code, a timeout out of range, or an unknown field", body = ErrorBody),
        (status = 500, description = "The Python session could not be started or driven", body = ErrorBody),
        (status = 503, description = "Too many live sessions to start this one's Python process, or the server is shutting down", body = ErrorBody),
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
    let limit = state.sessions.get(&user, &id)?.limits;
    let timeout = match request.timeout {
        None => limit.timeout(),
        Some(secs) if secs > 0.0 && secs <= limit.timeout_secs => {
            Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
        }
        Some(secs) => {
            return Err(ApiError::invalid(format!(
                "timeout must be more than 0 and at most the session's limit of {} s, not {secs}.",
                limit.timeout_secs
            )))
        }
    };
    let running = state
        .sessions
        .checkout(&user, &id)
        .await?
        .spawn(request.code, timeout);
    let stream = query.stream.unwrap_or_else(|| !prefers_json(&headers));
    if stream {
        return Ok(event_stream(running).into_response());
    }
    let execution = running
        .done
        .await
        .map_err(|e| ApiError::internal("The execution stopped", &e))??;
    let notice = execution.restarted.then(|| RESTARTED_NOTICE.to_owned());
    Ok(Json(ExecutionResponse { execution, notice }).into_response())
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
    let interrupted = state.sessions.interrupt(&user, &id)?;
    Ok(Json(Interrupted { interrupted }))
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
        (status = 503, description = "Too many live sessions, or the server is shutting down", body = ErrorBody),
    )
)]
async fn restart(
    State(state): State<AppState>,
    user: User,
    ApiPath(SessionRoute { id }): ApiPath<SessionRoute>,
) -> Result<Json<SessionInfo>, ApiError> {
    Ok(Json(state.sessions.restart(&user, &id).await?))
}

/// Whether the client asked for JSON rather than an event stream.
fn prefers_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("application/json") && !value.contains("text/event-stream"))
}
