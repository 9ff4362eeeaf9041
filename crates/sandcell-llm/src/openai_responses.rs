//! OpenAI Responses (`POST /v1/responses`), streamed as SSE with typed events.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::conversation::{Conversation, Message, RequestOptions, Tool};
use crate::error::ProviderError;
use crate::event::{ChatEvent, FinishReason, Usage};

pub(crate) fn request_body(
    options: &RequestOptions,
    conversation: &Conversation,
    tools: &[Tool],
) -> Value {
    let mut input = Vec::new();
    for message in &conversation.messages {
        match message {
            Message::User { text, images } => {
                let images = images
                    .iter()
                    .map(|image| json!({"type": "input_image", "image_url": image.data_url()}));
                let content: Vec<Value> =
                    std::iter::once(json!({"type": "input_text", "text": text}))
                        .chain(images)
                        .collect();
                input.push(json!({"role": "user", "content": content}));
            }
            // An assistant turn is a list of items: its text, then one item per call.
            Message::Assistant { text, tool_calls } => {
                if !text.is_empty() {
                    input.push(json!({"role": "assistant", "content": text}));
                }
                input.extend(tool_calls.iter().map(|call| {
                    json!({
                        "type": "function_call",
                        "call_id": call.id,
                        "name": call.name,
                        "arguments": call.arguments,
                    })
                }));
            }
            Message::ToolResult {
                call_id, content, ..
            } => input.push(json!({
                "type": "function_call_output",
                "call_id": call_id,
                "output": content,
            })),
        }
    }
    let tools: Vec<Value> = tools
        .iter()
        .map(|tool| {
            json!({
                "type": "function",
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.parameters,
            })
        })
        .collect();
    let mut body = json!({
        "model": options.model,
        "input": input,
        "tools": tools,
        "max_output_tokens": options.max_output_tokens,
        "stream": true,
    });
    options.sampling.insert_into(&mut body);
    if let Some(system) = &conversation.system {
        body["instructions"] = json!(system);
    }
    body
}

/// Decoding state: whether a function call was seen, because `response.completed` says
/// only "completed" whether the model answered or wants its tools run.
#[derive(Debug, Default)]
pub(crate) struct Stream {
    called_tools: bool,
}

impl Stream {
    pub(crate) fn payload(
        &mut self,
        data: &str,
        out: &mut Vec<ChatEvent>,
    ) -> serde_json::Result<()> {
        match serde_json::from_str(data)? {
            Event::TextDelta { delta } => out.push(ChatEvent::TextDelta(delta)),
            Event::ItemAdded {
                output_index,
                item: Item::FunctionCall { call_id, name },
            } => {
                self.called_tools = true;
                // The output index tells items apart; argument deltas name it too.
                out.push(ChatEvent::ToolCallStart {
                    index: output_index,
                    id: call_id,
                    name,
                });
            }
            Event::ArgumentsDelta {
                output_index,
                delta,
            } => out.push(ChatEvent::ToolCallArgumentsDelta {
                index: output_index,
                delta,
            }),
            Event::Completed { response } | Event::Incomplete { response } => {
                if let Some(usage) = response.usage {
                    out.push(ChatEvent::Usage(Usage {
                        input_tokens: usage.input_tokens,
                        output_tokens: usage.output_tokens,
                    }));
                }
                let reason = match response.incomplete_details {
                    Some(details) if details.reason == "max_output_tokens" => FinishReason::Length,
                    Some(details) => FinishReason::Other(details.reason),
                    None if self.called_tools => FinishReason::ToolCalls,
                    None => FinishReason::Stop,
                };
                out.push(ChatEvent::Finished { reason });
            }
            Event::Failed { response } => {
                let error = response.error.unwrap_or(StreamError {
                    code: None,
                    message: "the response failed without saying why".to_owned(),
                });
                out.push(ChatEvent::Error(error.into()));
            }
            Event::Error(error) => out.push(ChatEvent::Error(error.into())),
            // Reasoning items, content parts, `.done` summaries of what the deltas already
            // said, lifecycle events.
            Event::ItemAdded { .. } | Event::Ignored => {}
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(tag = "type")]
enum Event {
    #[serde(rename = "response.output_text.delta")]
    TextDelta { delta: String },
    #[serde(rename = "response.output_item.added")]
    ItemAdded { output_index: usize, item: Item },
    #[serde(rename = "response.function_call_arguments.delta")]
    ArgumentsDelta { output_index: usize, delta: String },
    #[serde(rename = "response.completed")]
    Completed { response: Response },
    #[serde(rename = "response.incomplete")]
    Incomplete { response: Response },
    #[serde(rename = "response.failed")]
    Failed { response: Response },
    #[serde(rename = "error")]
    Error(StreamError),
    #[serde(other)]
    Ignored,
}

#[derive(Deserialize)]
#[serde(tag = "type")]
enum Item {
    #[serde(rename = "function_call")]
    FunctionCall { call_id: String, name: String },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct Response {
    usage: Option<ResponseUsage>,
    incomplete_details: Option<IncompleteDetails>,
    error: Option<StreamError>,
}

#[derive(Deserialize)]
struct ResponseUsage {
    input_tokens: u64,
    output_tokens: u64,
}

#[derive(Deserialize)]
struct IncompleteDetails {
    reason: String,
}

/// The error of an `error` event or a failed response: a `code`, not a `type`.
#[derive(Deserialize)]
struct StreamError {
    code: Option<String>,
    message: String,
}

impl From<StreamError> for ProviderError {
    fn from(error: StreamError) -> Self {
        ProviderError {
            status: None,
            kind: error.code,
            message: error.message,
        }
    }
}
