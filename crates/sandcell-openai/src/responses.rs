//! `/v1/responses` with the `code_interpreter` tool: each response is one turn of
//! sandcell's interpreter loop in a container (the core's `Responses`), its records shown
//! as OpenAI's output items.

use crate::error::OpenAiError;
use crate::extract::{Caller, Json, Path};
use crate::list::Deleted;
use crate::DoorState;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use sandcell_service::{
    ContainerChoice, LimitsRequest, NewContainer, NewResponse, ResponseEvent, ResponseRecord,
    ResponseStatus, ServiceError,
};
use sandcell_service::{ContainerFile, User};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub(crate) mod items;
mod stream;

pub(crate) fn routes() -> Router<DoorState> {
    Router::new()
        .route("/responses", post(create))
        .route("/responses/{response_id}", get(retrieve).delete(delete))
        .route("/responses/{response_id}/input_items", get(input_items))
}

/// What `include` may ask for.
const INCLUDE_OUTPUTS: &str = "code_interpreter_call.outputs";

/// The body of `POST /v1/responses`. Fields of OpenAI's that change nothing here
/// (`temperature`, `max_output_tokens`, …) are accepted and shown back.
#[derive(Debug, Deserialize)]
struct CreateResponse {
    model: Option<String>,
    input: Input,
    instructions: Option<String>,
    #[serde(default)]
    tools: Vec<Value>,
    #[serde(default)]
    include: Vec<String>,
    previous_response_id: Option<String>,
    #[serde(default)]
    stream: bool,
    /// Whether to keep the response (default true).
    store: Option<bool>,
    max_output_tokens: Option<u64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    metadata: Option<BTreeMap<String, String>>,
}

/// A string, or a list of messages.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Input {
    Text(String),
    Messages(Vec<InputMessage>),
}

#[derive(Debug, Deserialize)]
struct InputMessage {
    role: String,
    content: Content,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Part {
    InputText { text: String },
    InputFile { file_id: Option<String> },
    InputImage { file_id: Option<String> },
    OutputText { text: String },
}

/// The `code_interpreter` tool as a request gives it.
#[derive(Debug, Deserialize)]
struct CodeInterpreter {
    container: ContainerParam,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ContainerParam {
    Id(String),
    Auto(AutoContainer),
}

#[derive(Debug, Deserialize)]
struct AutoContainer {
    #[serde(default)]
    file_ids: Vec<String>,
    memory_limit: Option<String>,
}

/// What the door keeps with a response, to show it again.
#[derive(Debug, Serialize, Deserialize)]
struct Kept {
    instructions: Option<String>,
    tools: Vec<Value>,
    include_outputs: bool,
    max_output_tokens: Option<u64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    metadata: BTreeMap<String, String>,
    store: bool,
}

async fn create(
    State(state): State<DoorState>,
    Caller(user): Caller,
    Json(body): Json<CreateResponse>,
) -> Result<axum::response::Response, OpenAiError> {
    let container = container_choice(&body.tools)?;
    let (text, file_ids) = input_text(&body.input)?;
    if let Some(unknown) = body.include.iter().find(|item| *item != INCLUDE_OUTPUTS) {
        return Err(OpenAiError::bad_request(format!(
            "include may hold only {INCLUDE_OUTPUTS}, not {unknown:?}."
        ))
        .param("include"));
    }
    let kept = Kept {
        instructions: body.instructions.clone(),
        tools: body.tools.clone(),
        include_outputs: !body.include.is_empty(),
        max_output_tokens: body.max_output_tokens,
        temperature: body.temperature,
        top_p: body.top_p,
        metadata: body.metadata.unwrap_or_default(),
        store: body.store.unwrap_or(true),
    };
    let input = match &body.instructions {
        Some(instructions) if !instructions.trim().is_empty() => {
            format!("{instructions}\n\n{text}")
        }
        _ => text,
    };
    let container = with_files(&state, &user, container, &file_ids).await?;
    let (started, mut events) = state
        .service
        .responses
        .create(
            &user,
            NewResponse {
                model: body.model,
                input,
                container,
                previous_response_id: body.previous_response_id,
                store: kept.store,
                door: serde_json::to_value(&kept)
                    .map_err(|e| OpenAiError::internal("The request cannot be kept", &e))?,
            },
        )
        .await?;
    if body.stream {
        return Ok(stream::response_stream(
            started,
            events,
            kept.include_outputs,
        ));
    }
    while let Some(event) = events.recv().await {
        if let ResponseEvent::Done(done) = event {
            return Ok(axum::Json(response_object(&done)).into_response());
        }
    }
    Err(OpenAiError::internal(
        "The response ended without a result",
        &"its task stopped",
    ))
}

async fn retrieve(
    State(state): State<DoorState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, OpenAiError> {
    let response = state.service.responses.get(&user, &id).await?;
    Ok(axum::Json(response_object(&response)))
}

async fn delete(
    State(state): State<DoorState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Deleted>, OpenAiError> {
    state.service.responses.delete(&user, &id).await?;
    Ok(axum::Json(Deleted {
        id,
        object: "response",
        deleted: true,
    }))
}

async fn input_items(
    State(state): State<DoorState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, OpenAiError> {
    let response = state.service.responses.get(&user, &id).await?;
    let item_id = format!("msg_{}_input", suffix(&response.id));
    Ok(axum::Json(json!({
        "object": "list",
        "data": [{
            "id": item_id,
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_text", "text": response.input}],
        }],
        "first_id": item_id,
        "last_id": item_id,
        "has_more": false,
    })))
}

/// The container the `code_interpreter` tool names; any other tool is refused.
fn container_choice(tools: &[Value]) -> Result<ContainerChoice, OpenAiError> {
    let mut choice = None;
    for tool in tools {
        let kind = tool.get("type").and_then(Value::as_str).unwrap_or_default();
        if kind != "code_interpreter" {
            return Err(OpenAiError::bad_request(format!(
                "This server runs only the code_interpreter tool, not {kind:?}."
            ))
            .param("tools"));
        }
        let tool: CodeInterpreter = serde_json::from_value(tool.clone()).map_err(|e| {
            OpenAiError::bad_request(format!("The code_interpreter tool is not valid: {e}."))
                .param("tools")
        })?;
        choice = Some(match tool.container {
            ContainerParam::Id(id) => ContainerChoice::Existing(id),
            ContainerParam::Auto(auto) => ContainerChoice::New(NewContainer {
                name: "auto".into(),
                file_ids: auto.file_ids,
                expires_after_minutes: None,
                limits: LimitsRequest {
                    memory_mib: crate::containers::memory_mib(auto.memory_limit.as_deref())?,
                    ..LimitsRequest::default()
                },
                allow_net: None,
            }),
        });
    }
    choice.ok_or_else(|| {
        OpenAiError::bad_request(
            "The request needs the code_interpreter tool: add {\"type\": \"code_interpreter\", \"container\": {\"type\": \"auto\"}} to tools.",
        )
        .param("tools")
    })
}

/// The person's words (every input text, in order) and the files they attached.
fn input_text(input: &Input) -> Result<(String, Vec<String>), OpenAiError> {
    let messages = match input {
        Input::Text(text) => return Ok((text.clone(), Vec::new())),
        Input::Messages(messages) => messages,
    };
    let mut texts = Vec::new();
    let mut files = Vec::new();
    for message in messages {
        if message.role != "user" && message.role != "system" && message.role != "developer" {
            continue;
        }
        match &message.content {
            Content::Text(text) => texts.push(text.clone()),
            Content::Parts(parts) => {
                for part in parts {
                    match part {
                        Part::InputText { text } | Part::OutputText { text } => {
                            texts.push(text.clone())
                        }
                        Part::InputFile { file_id: Some(id) }
                        | Part::InputImage { file_id: Some(id) } => files.push(id.clone()),
                        Part::InputFile { file_id: None } | Part::InputImage { file_id: None } => {
                            return Err(OpenAiError::bad_request(
                                "A file or image in the input must name an uploaded file by file_id.",
                            )
                            .param("input"))
                        }
                    }
                }
            }
        }
    }
    Ok((texts.join("\n\n"), files))
}

/// The container choice with the input's files added: to a new container's files, or
/// copied into the existing one now.
pub(crate) async fn with_files(
    state: &DoorState,
    user: &User,
    choice: ContainerChoice,
    file_ids: &[String],
) -> Result<ContainerChoice, ServiceError> {
    match choice {
        ContainerChoice::New(mut new) => {
            new.file_ids.extend(file_ids.iter().cloned());
            Ok(ContainerChoice::New(new))
        }
        ContainerChoice::Existing(id) => {
            for file_id in file_ids {
                state
                    .service
                    .containers
                    .copy_file(user, &id, file_id)
                    .await?;
            }
            Ok(ContainerChoice::Existing(id))
        }
    }
}

/// The id's random part, which the ids of its items share.
fn suffix(response_id: &str) -> &str {
    response_id.strip_prefix("resp_").unwrap_or(response_id)
}

/// OpenAI's response object.
pub(crate) fn response_object(response: &ResponseRecord) -> Value {
    let kept: Kept = serde_json::from_value(response.door.clone()).unwrap_or(Kept {
        instructions: None,
        tools: Vec::new(),
        include_outputs: false,
        max_output_tokens: None,
        temperature: None,
        top_p: None,
        metadata: BTreeMap::new(),
        store: true,
    });
    let output = items::output_items(response, kept.include_outputs);
    let status = match response.status {
        ResponseStatus::InProgress => "in_progress",
        ResponseStatus::Completed => "completed",
        ResponseStatus::Incomplete => "incomplete",
        ResponseStatus::Failed => "failed",
    };
    let error = match (response.status, &response.error) {
        (ResponseStatus::Failed, Some(message)) => {
            json!({"code": "server_error", "message": message})
        }
        _ => Value::Null,
    };
    let incomplete = match response.status {
        ResponseStatus::Incomplete => json!({"reason": "max_output_tokens"}),
        _ => Value::Null,
    };
    let usage = &response.usage;
    json!({
        "id": response.id,
        "object": "response",
        "created_at": response.created_at,
        "status": status,
        "error": error,
        "incomplete_details": incomplete,
        "instructions": kept.instructions,
        "max_output_tokens": kept.max_output_tokens,
        "model": response.model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": response.previous_response_id,
        "store": kept.store,
        "temperature": kept.temperature.unwrap_or(1.0),
        "top_p": kept.top_p.unwrap_or(1.0),
        "tool_choice": "auto",
        "tools": kept.tools,
        "metadata": kept.metadata,
        "usage": {
            "input_tokens": usage.input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": usage.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.input_tokens + usage.output_tokens,
        },
    })
}

/// A file's name, for a citation.
pub(crate) fn file_name(file: &ContainerFile) -> &str {
    file.path.rsplit('/').next().unwrap_or(&file.path)
}
