//! `/models` and `/conversations`: chats with a model whose code runs in a session.

use super::error::{ApiError, ErrorBody};
use super::extract::{binary, ApiJson, ApiPath, ApiQuery, JsonOrParts};
use super::files::{self, attachment, unlimited};
use super::stream::{log_stream, resume_from, sse_event_schema};
use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sandcell_service::ModelsInfo;
use sandcell_service::User;
use sandcell_service::{
    ConversationDetail, ConversationInfo, Page, PageRequest, TurnEvent, TurnOutcome,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::convert::Infallible;
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, ObjectBuilder, OneOfBuilder, Ref, Schema, Type,
};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(models))
        .routes(unlimited(routes!(create_conversation, list_conversations)))
        .routes(routes!(get_conversation, delete_conversation))
        .routes(routes!(send_message))
        .routes(routes!(turn_events))
        .routes(routes!(cancel_turn))
        .routes(routes!(export_notebook))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConversation {
    /// `provider:model`; default: the server's model.
    pub model: Option<String>,
    /// A session of yours for its code to run in (a notebook's: the model sees its
    /// variables and files); default: a new session. Refused (409) while code runs in it
    /// or when it already holds a conversation.
    pub session_id: Option<String>,
    /// The configured environment of the new session (see `GET /environments`); default:
    /// the base one. Refused (422) for a name the server does not configure, and with
    /// `session_id` (that session already has its environment).
    pub environment: Option<String>,
}

/// A new conversation with files: the multipart form of [`CreateConversation`].
pub struct ConversationParts;

impl PartialSchema for ConversationParts {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .description(Some(
                "Optional text parts `model` and `environment` (as in the JSON body), and parts named `file`, each with a filename that is its path in the new session's /mnt/data.",
            ))
            .property("model", ObjectBuilder::new().schema_type(Type::String))
            .property("environment", ObjectBuilder::new().schema_type(Type::String))
            .property("file", ArrayBuilder::new().items(binary()))
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .into()
    }
}

impl ToSchema for ConversationParts {}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageRequest {
    /// What the person says.
    pub text: String,
    /// Talk to this `provider:model` from this message on.
    pub model: Option<String>,
}

/// The path of a conversation's routes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ConversationRoute {
    /// The conversation's id.
    pub id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Cancelled {
    /// Whether a turn was under way (it stops; what was said so far is kept).
    pub cancelled: bool,
}

/// The models conversations can talk to.
#[utoipa::path(
    get,
    path = "/models",
    tag = "conversations",
    responses(
        (status = 200, description = "The default model and how to configure one", body = ModelsInfo),
        (status = 401, description = "No valid API key", body = ErrorBody),
    )
)]
async fn models(State(state): State<AppState>, _user: User) -> Json<ModelsInfo> {
    Json(state.service.conversations.models().info())
}

/// Start a conversation.
///
/// Makes a new session for its code, with the server's default limits, in the base
/// environment or the configured one named by `environment`, or takes one of yours
/// (`session_id`, JSON only). Its files come with the request (multipart: `model` and
/// `environment` fields and `file` parts), or are uploaded to the session (`session_id`) later; the
/// model sees what is there at each message. While a turn runs, the session runs nothing
/// else (a notebook's cell is refused, 409), and the other way round.
#[utoipa::path(
    post,
    path = "/conversations",
    tag = "conversations",
    request_body(
        description = "Optional; an empty body takes the server's model",
        content(
            (Option<CreateConversation> = "application/json"),
            (ConversationParts = "multipart/form-data"),
        )
    ),
    responses(
        (status = 201, description = "The new conversation", body = ConversationInfo),
        (status = 400, description = "Malformed JSON or multipart body, or a file path that is absolute or has `..`", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such session (`session_id`)", body = ErrorBody),
        (status = 409, description = "The session (`session_id`) is running code, or already holds a conversation", body = ErrorBody),
        (status = 413, description = "The body is larger than the server accepts", body = ErrorBody),
        (status = 415, description = "The body is neither JSON nor multipart", body = ErrorBody),
        (status = 422, description = "No model configured, a model the server cannot reach, an unknown field, an environment the server does not configure, or an environment given with `session_id`", body = ErrorBody),
        (status = 429, description = "Starting a Python process would exceed your live-session quota (see Retry-After)", body = ErrorBody),
        (status = 503, description = "Too many live sessions, all busy (see Retry-After), or the server is shutting down", body = ErrorBody),
    )
)]
async fn create_conversation(
    State(state): State<AppState>,
    user: User,
    body: JsonOrParts<CreateConversation>,
) -> Result<(StatusCode, Json<ConversationInfo>), ApiError> {
    let (request, upload) = match body {
        JsonOrParts::Json(request) => (request.unwrap_or_default(), None),
        JsonOrParts::Parts(mut parts) => {
            // Every file is received before anything is made.
            let upload = files::receive(&state, &mut parts, &["model", "environment"]).await?;
            let field = |wanted: &str| {
                upload
                    .fields
                    .iter()
                    .find_map(|(name, value)| (name == wanted).then(|| value.clone()))
            };
            let request = CreateConversation {
                model: field("model"),
                session_id: None,
                environment: field("environment"),
            };
            (request, Some(upload))
        }
    };
    let conversation = state
        .service
        .conversations
        .create(
            &user,
            request.model.as_deref(),
            request.session_id.as_deref(),
            request.environment.as_deref(),
        )
        .await?;
    if let Some(upload) = upload {
        let workdir = state
            .service
            .sessions
            .workdir(&user, &conversation.session_id)
            .await?;
        if let Err(error) = upload.place(workdir).await {
            if let Err(cleanup) = state
                .service
                .conversations
                .delete(&user, &conversation.id)
                .await
            {
                tracing::warn!("a conversation whose files failed stays: {cleanup}");
            }
            return Err(error);
        }
    }
    Ok((StatusCode::CREATED, Json(conversation)))
}

/// List your conversations, the most recently used first.
#[utoipa::path(
    get,
    path = "/conversations",
    tag = "conversations",
    params(PageRequest),
    responses(
        (status = 200, description = "A page of the conversations", body = Page<ConversationInfo>),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 400, description = "A query string that is not valid (a limit that is not a number)", body = ErrorBody),
        (status = 422, description = "A limit out of range, or an unknown cursor", body = ErrorBody),
    )
)]
async fn list_conversations(
    State(state): State<AppState>,
    user: User,
    ApiQuery(page): ApiQuery<PageRequest>,
) -> Result<Json<Page<ConversationInfo>>, ApiError> {
    Ok(Json(state.service.conversations.list(&user, &page).await?))
}

/// Get a conversation with its messages, tool calls and their outputs.
#[utoipa::path(
    get,
    path = "/conversations/{id}",
    tag = "conversations",
    params(ConversationRoute),
    responses(
        (status = 200, description = "The conversation", body = ConversationDetail),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such conversation", body = ErrorBody),
    )
)]
async fn get_conversation(
    State(state): State<AppState>,
    user: User,
    ApiPath(ConversationRoute { id }): ApiPath<ConversationRoute>,
) -> Result<Json<ConversationDetail>, ApiError> {
    Ok(Json(state.service.conversations.get(&user, &id).await?))
}

/// Delete a conversation, with its session and the session's files.
#[utoipa::path(
    delete,
    path = "/conversations/{id}",
    tag = "conversations",
    params(ConversationRoute),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such conversation", body = ErrorBody),
    )
)]
async fn delete_conversation(
    State(state): State<AppState>,
    user: User,
    ApiPath(ConversationRoute { id }): ApiPath<ConversationRoute>,
) -> Result<StatusCode, ApiError> {
    state.service.conversations.delete(&user, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One event of a turn's stream, as the document describes it: named by its `type`, its
/// data that event as JSON; `end` (a [`TurnOutcome`]) last.
struct TurnStream;

/// The names of the events before `end` (`AgentEvent`'s, in snake case).
const TURN_EVENTS: [&str; 11] = [
    "text_delta",
    "code_delta",
    "code",
    "stdout",
    "stderr",
    "result",
    "error",
    "execution",
    "retrying",
    "usage",
    "final",
];

impl PartialSchema for TurnStream {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(sse_event_schema(
                &TURN_EVENTS,
                ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .property("type", ObjectBuilder::new().schema_type(Type::String))
                    .required("type")
                    .into(),
            ))
            .item(sse_event_schema(
                &["end"],
                Ref::from_schema_name(TurnOutcome::name()).into(),
            ))
            .into()
    }
}

impl ToSchema for TurnStream {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((TurnOutcome::name().into_owned(), TurnOutcome::schema()));
    }
}

/// Send a message; the model answers, running code as it needs.
///
/// The answer is a stream of Server-Sent Events, each named by its `type` and carrying
/// the event as JSON: `text_delta` {text}, `code_delta` {call_id, text} (code as the
/// model writes it), `code` {call_id, code} (about to run), `stdout` / `stderr`
/// {call_id, text}, `result` {call_id, data (a MIME bundle)}, `error` {call_id, error},
/// `execution` {call_id, execution (the execution result), images (where its images
/// were saved)}, `retrying` {attempt, delay_ms, reason}, `usage` {request,
/// conversation}, `final` {text}; and last `end` {outcome (`answered`, `step_limit`,
/// `cancelled`, `error`), message, usage}. The turn goes on to its end even if the
/// client disconnects; everything is recorded as it happens. Each event carries its
/// number as its SSE `id`: `GET …/events` follows the same turn from another client, or
/// re-attaches after a lost connection.
#[utoipa::path(
    post,
    path = "/conversations/{id}/messages",
    tag = "conversations",
    params(ConversationRoute),
    request_body(content = MessageRequest),
    responses(
        (status = 200, description = "The turn's events", content((TurnStream = "text/event-stream"))),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such conversation", body = ErrorBody),
        (status = 409, description = "The conversation or its session is busy", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 422, description = "An empty message, no model, or a model the server cannot reach", body = ErrorBody),
        (status = 500, description = "The session's Python process could not start", body = ErrorBody),
        (status = 429, description = "Starting a Python process would exceed your live-session quota (see Retry-After)", body = ErrorBody),
        (status = 503, description = "Too many live sessions, all busy (see Retry-After), or the server is shutting down", body = ErrorBody),
    )
)]
async fn send_message(
    State(state): State<AppState>,
    user: User,
    ApiPath(ConversationRoute { id }): ApiPath<ConversationRoute>,
    ApiJson(request): ApiJson<MessageRequest>,
) -> Result<Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let log = state
        .service
        .conversations
        .send(&user, &id, request.text, request.model.as_deref())
        .await?;
    Ok(log_stream(log, 0, None, |event| vec![to_sse(&event)]))
}

/// Follow the turn under way (from another tab, or after a reload).
///
/// The same Server-Sent Events as `POST …/messages` streams, from the turn's start, or
/// after the event whose `id` a reconnecting client sends as `Last-Event-ID`; then live
/// until its `end`. The conversation's `turn` says whether one is under way and which
/// records came before it; 404 when none is (read the conversation instead).
#[utoipa::path(
    get,
    path = "/conversations/{id}/events",
    tag = "conversations",
    params(ConversationRoute),
    responses(
        (status = 200, description = "The turn's events", content((TurnStream = "text/event-stream"))),
        (status = 400, description = "A Last-Event-ID that is not a number", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such conversation", body = ErrorBody),
        (status = 409, description = "No turn is under way (what was said is in the conversation)", body = ErrorBody),
    )
)]
async fn turn_events(
    State(state): State<AppState>,
    user: User,
    ApiPath(ConversationRoute { id }): ApiPath<ConversationRoute>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let from = resume_from(&headers)?;
    let log = state.service.conversations.turn(&user, &id).await?;
    Ok(log_stream(log, from, None, |event| vec![to_sse(&event)]).into_response())
}

fn to_sse(event: &TurnEvent) -> Event {
    let (name, data) = match event {
        TurnEvent::Agent(event) => {
            let data = serde_json::to_value(event).unwrap_or(Value::Null);
            let name = data
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("message")
                .to_owned();
            (name, data)
        }
        TurnEvent::End(outcome) => (
            "end".to_owned(),
            serde_json::to_value(outcome).unwrap_or(Value::Null),
        ),
    };
    Event::default().event(name).data(data.to_string())
}

/// Cancel the turn under way.
///
/// Stops the model's request or interrupts the running code; the conversation so far,
/// the session's variables and its files are kept.
#[utoipa::path(
    post,
    path = "/conversations/{id}/cancel",
    tag = "conversations",
    params(ConversationRoute),
    responses(
        (status = 200, description = "Whether a turn was under way", body = Cancelled),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such conversation", body = ErrorBody),
    )
)]
async fn cancel_turn(
    State(state): State<AppState>,
    user: User,
    ApiPath(ConversationRoute { id }): ApiPath<ConversationRoute>,
) -> Result<Json<Cancelled>, ApiError> {
    let cancelled = state.service.conversations.cancel(&user, &id).await?;
    Ok(Json(Cancelled { cancelled }))
}

/// Export a conversation as a Jupyter notebook.
///
/// The person's messages and the model's replies become Markdown cells, its code cells
/// with their outputs (nbformat 4.5).
#[utoipa::path(
    get,
    path = "/conversations/{id}/notebook",
    tag = "conversations",
    params(ConversationRoute),
    responses(
        (status = 200, description = "The notebook", content_type = "application/x-ipynb+json", body = Object),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such conversation", body = ErrorBody),
    )
)]
async fn export_notebook(
    State(state): State<AppState>,
    user: User,
    ApiPath(ConversationRoute { id }): ApiPath<ConversationRoute>,
) -> Result<Response, ApiError> {
    let (title, notebook) = state.service.conversations.notebook(&user, &id).await?;
    Ok(ipynb_response(&title, "conversation", notebook))
}

/// A notebook as a download named after its title (`fallback` when it has none).
pub(super) fn ipynb_response(title: &str, fallback: &str, notebook: Value) -> Response {
    // A file name that every system takes.
    let name: String = title
        .chars()
        .map(|c| match c {
            '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|' => '_',
            c if c.is_control() => '_',
            c => c,
        })
        .collect();
    let name = if name.is_empty() { fallback } else { &name };
    let mut response = Json(notebook).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ipynb+json"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        attachment(&format!("{name}.ipynb")),
    );
    response
}
