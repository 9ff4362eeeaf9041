//! `/v1/chat/completions`, for clients that speak nothing else: the model named runs
//! sandcell's interpreter loop (a response of the core's `Responses`) and the answer is
//! Markdown any client renders: the model's words, its code in fenced blocks, what the
//! code printed, its plots as images.
//!
//! A chat client sends the whole history with every request. The container (and the
//! history the model reads) of a request whose earlier messages are those of a chat
//! answered before is that chat's, found by a hash of those messages; or the one named
//! in the `sandcell` extension field; else a new one.

use crate::error::OpenAiError;
use crate::extract::{Caller, Json};
use crate::responses::{items::outputs, sampling, with_files};
use crate::upload::{decode, inline_image, keep_as_file};
use crate::DoorState;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures_util::stream::{self, StreamExt};
use sandcell_agent::{AgentEvent, ImageBase64};
use sandcell_service::{
    ContainerChoice, ContainerStatus, NewContainer, NewResponse, ResponseEvent, ResponseEvents,
    ResponseRecord, ResponseStatus, ServiceError, User,
};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::convert::Infallible;

pub(crate) fn routes() -> Router<DoorState> {
    Router::new().route("/chat/completions", post(create))
}

#[derive(Debug, Deserialize)]
struct CreateChat {
    model: Option<String>,
    messages: Vec<ChatMessage>,
    #[serde(default)]
    stream: bool,
    temperature: Option<f64>,
    top_p: Option<f64>,
    /// The tokens the model may write in the whole answer (`max_tokens` is its older
    /// name, read when this is absent).
    max_completion_tokens: Option<u64>,
    max_tokens: Option<u64>,
    /// sandcell's own: the container to run the code in.
    sandcell: Option<Extension>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Extension {
    container_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Option<ChatContent>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ChatContent {
    Text(String),
    Parts(Vec<ChatPart>),
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ChatPart {
    Text { text: String },
    File { file: FilePart },
    ImageUrl { image_url: ImageUrl },
}

#[derive(Debug, Deserialize)]
struct FilePart {
    file_id: Option<String>,
    /// A `data:` URL or plain base64.
    file_data: Option<String>,
    filename: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ImageUrl {
    url: String,
}

impl ChatMessage {
    fn text(&self) -> String {
        match &self.content {
            None => String::new(),
            Some(ChatContent::Text(text)) => text.clone(),
            Some(ChatContent::Parts(parts)) => parts
                .iter()
                .filter_map(|part| match part {
                    ChatPart::Text { text } => Some(text.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

async fn create(
    State(state): State<DoorState>,
    Caller(user): Caller,
    Json(body): Json<CreateChat>,
) -> Result<Response, OpenAiError> {
    let Some((last, earlier)) = body.messages.split_last() else {
        return Err(
            OpenAiError::bad_request("messages is empty; send at least one.").param("messages"),
        );
    };
    if last.role != "user" {
        return Err(OpenAiError::bad_request(format!(
            "The last message must be the user's, not the {}'s.",
            last.role
        ))
        .param("messages"));
    }
    let text = last.text();
    let limit_name = match body.max_completion_tokens {
        Some(_) => "max_completion_tokens",
        None => "max_tokens",
    };
    let (sampling, max_output_tokens) = sampling(
        body.temperature,
        body.top_p,
        body.max_completion_tokens.or(body.max_tokens),
        limit_name,
    )?;
    let responses = &state.service.responses;
    let previous = responses.thread(&user, &history_key(earlier)).await?;
    let new_container = || {
        ContainerChoice::New(NewContainer {
            name: "chat".into(),
            ..NewContainer::default()
        })
    };
    let container = match (&previous, body.sandcell.and_then(|e| e.container_id)) {
        (Some(previous), _) => {
            let containers = &state.service.containers;
            match containers.retrieve(&user, &previous.container_id).await {
                Ok(container) if container.status == ContainerStatus::Running => {
                    ContainerChoice::Existing(container.id)
                }
                // The chat's container expired or was deleted: the chat goes on (its
                // history kept) in a new one.
                Ok(_) | Err(ServiceError::NotFound(_)) => new_container(),
                Err(error) => return Err(error.into()),
            }
        }
        (None, Some(id)) => ContainerChoice::Existing(id),
        (None, None) => new_container(),
    };
    let (file_ids, images) = attached_files(&state, &user, last).await?;
    let container = with_files(&state, &user, container, &file_ids).await?;
    // A new chat whose client sends earlier turns the model has not seen: they are told.
    let input = match (&previous, earlier.is_empty()) {
        (None, false) => format!("{}\n\n{text}", transcript(earlier)),
        _ => text,
    };
    let (started, events) = responses
        .create(
            &user,
            NewResponse {
                model: body.model,
                input,
                container,
                previous_response_id: previous.map(|response| response.id),
                images,
                // The next request of the chat goes on from it.
                store: true,
                sampling,
                max_output_tokens,
                door: Value::Null,
            },
        )
        .await?;
    let thread = Thread {
        state: state.clone(),
        user,
        messages: body
            .messages
            .iter()
            .map(|message| (message.role.clone(), message.text()))
            .collect(),
    };
    if body.stream {
        return Ok(stream_chat(started, events, thread));
    }
    let (answer, done) = collect(events).await?;
    thread.remember(&done, &answer).await;
    Ok(axum::Json(completion(&done, &answer)).into_response())
}

/// Where a chat is remembered once answered.
struct Thread {
    state: DoorState,
    user: User,
    messages: Vec<(String, String)>,
}

impl Thread {
    /// Remembers the chat as it now stands (the messages and the answer), so the next
    /// request, which repeats them, goes on in the same container.
    async fn remember(mut self, done: &ResponseRecord, answer: &str) {
        self.messages.push(("assistant".into(), answer.to_owned()));
        let key = key_of(&self.messages);
        if let Err(error) = self
            .state
            .service
            .responses
            .remember_thread(&self.user, &key, &done.id)
            .await
        {
            tracing::warn!("a chat cannot be remembered: {error}");
        }
    }
}

/// The files attached to the message, as the user's Files (those sent inline are kept
/// as Files first), and its images for the model.
async fn attached_files(
    state: &DoorState,
    user: &User,
    message: &ChatMessage,
) -> Result<(Vec<String>, Vec<ImageBase64>), OpenAiError> {
    let Some(ChatContent::Parts(parts)) = &message.content else {
        return Ok((Vec::new(), Vec::new()));
    };
    let mut ids = Vec::new();
    let mut images = Vec::new();
    for (n, part) in parts.iter().enumerate() {
        let (data, name) = match part {
            ChatPart::Text { .. } => continue,
            ChatPart::File {
                file: FilePart {
                    file_id: Some(id), ..
                },
            } => {
                ids.push(id.clone());
                continue;
            }
            ChatPart::File {
                file:
                    FilePart {
                        file_data: Some(data),
                        filename,
                        ..
                    },
            } => (
                data.as_str(),
                filename
                    .clone()
                    .unwrap_or_else(|| format!("file_{}", n + 1)),
            ),
            ChatPart::ImageUrl { image_url } => {
                let image = inline_image(&image_url.url, "messages")?;
                let name = format!("image_{}.{}", n + 1, image.extension);
                images.push(image.for_model);
                ids.push(keep_as_file(state, user, &name, image.bytes).await?);
                continue;
            }
            ChatPart::File { .. } => {
                return Err(
                    OpenAiError::bad_request("A file part needs file_id or file_data.")
                        .param("messages"),
                )
            }
        };
        let bytes = decode(data, "messages")?;
        ids.push(keep_as_file(state, user, &name, bytes).await?);
    }
    Ok((ids, images))
}

/// The key of a chat's history.
fn history_key(messages: &[ChatMessage]) -> String {
    let pairs: Vec<(String, String)> = messages
        .iter()
        .map(|message| (message.role.clone(), message.text()))
        .collect();
    key_of(&pairs)
}

fn key_of(messages: &[(String, String)]) -> String {
    let json = serde_json::to_vec(messages).unwrap_or_default();
    Sha256::digest(json)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Earlier turns of a chat the model has not seen, as text it reads before the message.
fn transcript(messages: &[ChatMessage]) -> String {
    let turns: Vec<String> = messages
        .iter()
        .map(|message| format!("{}: {}", message.role, message.text()))
        .collect();
    format!("The conversation so far:\n\n{}", turns.join("\n\n"))
}

/// Turns a response's events into Markdown, piece by piece.
#[derive(Default)]
struct Markdown {
    /// The call whose code block is open.
    open_code: Option<String>,
    /// Whether the last piece ended a block (so words after it start a paragraph).
    after_block: bool,
}

impl Markdown {
    fn piece(&mut self, event: &AgentEvent) -> String {
        match event {
            AgentEvent::TextDelta { text } => {
                let gap = if std::mem::take(&mut self.after_block) {
                    "\n"
                } else {
                    ""
                };
                format!("{gap}{text}")
            }
            AgentEvent::CodeDelta { call_id, text } => {
                if self.open_code.as_deref() == Some(call_id.as_str()) {
                    text.clone()
                } else {
                    self.open_code = Some(call_id.clone());
                    format!("\n\n```python\n{text}")
                }
            }
            AgentEvent::Code { call_id, code } => {
                let opening = if self.open_code.as_deref() == Some(call_id.as_str()) {
                    String::new()
                } else {
                    format!("\n\n```python\n{code}")
                };
                self.open_code = None;
                self.after_block = true;
                format!("{opening}\n```\n")
            }
            AgentEvent::Execution { execution, .. } => {
                self.after_block = true;
                outputs(execution)
                    .iter()
                    .map(|output| match output["type"].as_str() {
                        Some("logs") => format!(
                            "\n```\n{}\n```\n",
                            output["logs"].as_str().unwrap_or_default().trim_end()
                        ),
                        _ => format!(
                            "\n![plot]({})\n",
                            output["url"].as_str().unwrap_or_default()
                        ),
                    })
                    .collect()
            }
            _ => String::new(),
        }
    }
}

/// The whole answer, once the response is done.
async fn collect(mut events: ResponseEvents) -> Result<(String, ResponseRecord), OpenAiError> {
    let mut markdown = Markdown::default();
    let mut answer = String::new();
    while let Some(event) = events.recv().await {
        match event {
            ResponseEvent::Agent(event) => answer.push_str(&markdown.piece(&event)),
            ResponseEvent::Done(done) => {
                if done.status == ResponseStatus::Failed {
                    return Err(OpenAiError::internal(
                        "The model's turn failed",
                        &done.error.unwrap_or_default(),
                    ));
                }
                return Ok((answer, done));
            }
        }
    }
    Err(OpenAiError::internal(
        "The answer ended without a result",
        &"its task stopped",
    ))
}

fn chat_id(response: &ResponseRecord) -> String {
    format!("chatcmpl-{}", response.id.trim_start_matches("resp_"))
}

fn finish_reason(response: &ResponseRecord) -> &'static str {
    match response.status {
        ResponseStatus::Incomplete => "length",
        _ => "stop",
    }
}

fn usage(response: &ResponseRecord) -> Value {
    let usage = &response.usage;
    json!({
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    })
}

/// OpenAI's chat completion object.
fn completion(response: &ResponseRecord, answer: &str) -> Value {
    json!({
        "id": chat_id(response),
        "object": "chat.completion",
        "created": response.created_at,
        "model": response.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": answer, "refusal": null, "annotations": []},
            "finish_reason": finish_reason(response),
            "logprobs": null,
        }],
        "usage": usage(response),
    })
}

fn chunk(response: &ResponseRecord, delta: Value, finish_reason: Option<&str>) -> Value {
    json!({
        "id": chat_id(response),
        "object": "chat.completion.chunk",
        "created": response.created_at,
        "model": response.model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": null}],
    })
}

/// The answer as chunks: the role, each piece of Markdown, the finish; then `[DONE]`.
fn stream_chat(started: ResponseRecord, events: ResponseEvents, thread: Thread) -> Response {
    let first = chunk(&started, json!({"role": "assistant", "content": ""}), None);
    struct Progress {
        events: ResponseEvents,
        markdown: Markdown,
        answer: String,
        started: ResponseRecord,
        thread: Option<Thread>,
    }
    let progress = Progress {
        events,
        markdown: Markdown::default(),
        answer: String::new(),
        started,
        thread: Some(thread),
    };
    let rest = stream::unfold(progress, |mut progress| async move {
        loop {
            match progress.events.recv().await? {
                ResponseEvent::Agent(event) => {
                    let piece = progress.markdown.piece(&event);
                    if piece.is_empty() {
                        continue;
                    }
                    progress.answer.push_str(&piece);
                    let data = chunk(&progress.started, json!({"content": piece}), None);
                    return Some((Event::default().data(data.to_string()), progress));
                }
                ResponseEvent::Done(done) => {
                    if let Some(thread) = progress.thread.take() {
                        thread.remember(&done, &progress.answer).await;
                    }
                    let mut data = chunk(&done, json!({}), Some(finish_reason(&done)));
                    data["usage"] = usage(&done);
                    if done.status == ResponseStatus::Failed {
                        data["choices"][0]["delta"] = json!({"content": format!(
                            "\n\n{}", done.error.clone().unwrap_or_default())});
                    }
                    return Some((Event::default().data(data.to_string()), progress));
                }
            }
        }
    });
    let events = stream::iter([Event::default().data(first.to_string())])
        .chain(rest)
        .chain(stream::iter([Event::default().data("[DONE]")]))
        .map(Ok::<_, Infallible>);
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}
