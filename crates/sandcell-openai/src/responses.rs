//! `/v1/responses` with the `code_interpreter` tool: each response is one turn of
//! sandcell's interpreter loop in a container (the core's `Responses`), its records shown
//! as OpenAI's output items.

use crate::error::OpenAiError;
use crate::extract::{Caller, Json, Path};
use crate::list::Deleted;
use crate::upload::{inline_image, keep_as_file, InlineImage};
use crate::DoorState;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use sandcell_agent::Sampling;
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

/// The body of `POST /v1/responses`. `temperature`, `top_p` and `max_output_tokens` go
/// to the model; OpenAI's other fields are not read.
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
    InputText {
        text: String,
    },
    InputFile {
        file_id: Option<String>,
    },
    /// An uploaded file, or a `data:` URL (an http(s) URL is refused).
    InputImage {
        file_id: Option<String>,
        image_url: Option<String>,
    },
    OutputText {
        text: String,
    },
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
    let InputParts {
        text,
        mut file_ids,
        images,
    } = input_parts(&body.input)?;
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
    let (sampling, max_output_tokens) = sampling(
        body.temperature,
        body.top_p,
        body.max_output_tokens,
        "max_output_tokens",
    )?;
    // Inline images go to the model, and land in /mnt/data like attached files, for the
    // code.
    let mut model_images = Vec::with_capacity(images.len());
    for (n, image) in images.into_iter().enumerate() {
        let name = format!("image_{}.{}", n + 1, image.extension);
        model_images.push(image.for_model);
        file_ids.push(keep_as_file(&state, &user, &name, image.bytes).await?);
    }
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
                images: model_images,
                store: kept.store,
                sampling,
                max_output_tokens,
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

/// The sampling settings and output token limit a request asks for, in OpenAI's ranges
/// (the limit named `limit_name` in the request).
pub(crate) fn sampling(
    temperature: Option<f64>,
    top_p: Option<f64>,
    max_tokens: Option<u64>,
    limit_name: &str,
) -> Result<(Sampling, Option<u32>), OpenAiError> {
    if let Some(temperature) = temperature.filter(|t| !(0.0..=2.0).contains(t)) {
        return Err(OpenAiError::bad_request(format!(
            "temperature must be between 0 and 2, not {temperature}."
        ))
        .param("temperature"));
    }
    if let Some(top_p) = top_p.filter(|p| !(0.0..=1.0).contains(p)) {
        return Err(OpenAiError::bad_request(format!(
            "top_p must be between 0 and 1, not {top_p}."
        ))
        .param("top_p"));
    }
    let max_tokens = match max_tokens {
        Some(0) => {
            return Err(
                OpenAiError::bad_request(format!("{limit_name} must be at least 1."))
                    .param(limit_name),
            )
        }
        // More than any model writes: no limit of the request's own.
        Some(asked) => Some(u32::try_from(asked).unwrap_or(u32::MAX)),
        None => None,
    };
    Ok((Sampling { temperature, top_p }, max_tokens))
}

/// The container a response's body names by id for its `code_interpreter` tool, read as
/// [`container_choice`] reads it; `None` when it asks for a new one, or is not valid. For
/// a node that sends the request to the node running that container before anything here
/// reads it.
pub fn container_named(body: &Value) -> Option<String> {
    match container_choice(body.get("tools")?.as_array()?).ok()? {
        ContainerChoice::Existing(id) => Some(id),
        ContainerChoice::New(_) => None,
    }
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

/// What the input says and attaches.
#[derive(Default)]
struct InputParts {
    /// Every input text, in order.
    text: String,
    /// The user's Files attached by id.
    file_ids: Vec<String>,
    images: Vec<InlineImage>,
}

/// The person's words and what they attached.
fn input_parts(input: &Input) -> Result<InputParts, OpenAiError> {
    let messages = match input {
        Input::Text(text) => {
            return Ok(InputParts {
                text: text.clone(),
                ..InputParts::default()
            })
        }
        Input::Messages(messages) => messages,
    };
    let mut texts = Vec::new();
    let mut files = Vec::new();
    let mut images = Vec::new();
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
                        | Part::InputImage {
                            file_id: Some(id), ..
                        } => files.push(id.clone()),
                        Part::InputImage {
                            file_id: None,
                            image_url: Some(url),
                        } => images.push(inline_image(url, "input")?),
                        Part::InputFile { file_id: None }
                        | Part::InputImage {
                            file_id: None,
                            image_url: None,
                        } => {
                            return Err(OpenAiError::bad_request(
                                "A file in the input must name an uploaded file by file_id, an image by file_id or a data: URL in image_url.",
                            )
                            .param("input"))
                        }
                    }
                }
            }
        }
    }
    Ok(InputParts {
        text: texts.join("\n\n"),
        file_ids: files,
        images,
    })
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
