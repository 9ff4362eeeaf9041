//! Ollama's native chat API (`POST /api/chat`), streamed as NDJSON.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::conversation::{Conversation, InvalidToolArguments, Message, RequestOptions, Tool};
use crate::error::ErrorDetail;
use crate::event::{ChatEvent, FinishReason, Usage};
use crate::openai_chat::function_tool;

pub(crate) fn request_body(
    options: &RequestOptions,
    conversation: &Conversation,
    tools: &[Tool],
) -> Result<Value, InvalidToolArguments> {
    let mut messages: Vec<Value> = conversation
        .system
        .iter()
        .map(|system| json!({"role": "system", "content": system}))
        .collect();
    for message in &conversation.messages {
        messages.push(match message {
            Message::User { text, images } if images.is_empty() => {
                json!({"role": "user", "content": text})
            }
            Message::User { text, images } => {
                let images: Vec<&str> = images.iter().map(|image| image.data.as_str()).collect();
                json!({"role": "user", "content": text, "images": images})
            }
            Message::Assistant { text, tool_calls } => {
                let mut message = json!({"role": "assistant", "content": text});
                if !tool_calls.is_empty() {
                    // Ollama takes arguments as an object, not as text.
                    let calls = tool_calls
                        .iter()
                        .map(|call| {
                            Ok(json!({"function": {"name": call.name, "arguments": call.input()?}}))
                        })
                        .collect::<Result<Vec<_>, InvalidToolArguments>>()?;
                    message["tool_calls"] = json!(calls);
                }
                message
            }
            Message::ToolResult { name, content, .. } => {
                json!({"role": "tool", "content": content, "tool_name": name})
            }
        });
    }
    let mut model_options = json!({"num_predict": options.max_output_tokens});
    options.sampling.insert_into(&mut model_options);
    Ok(json!({
        "model": options.model,
        "messages": messages,
        "tools": tools.iter().map(function_tool).collect::<Vec<_>>(),
        "options": model_options,
        "stream": true,
    }))
}

/// Decoding state: how many tool calls the stream has carried, to number them (older
/// servers send no index or id), and so to tell a tool-calling stop from a plain one
/// (`done_reason` is `stop` either way).
#[derive(Debug, Default)]
pub(crate) struct Stream {
    tool_calls: usize,
}

impl Stream {
    pub(crate) fn payload(
        &mut self,
        line: &str,
        out: &mut Vec<ChatEvent>,
    ) -> serde_json::Result<()> {
        let chunk: Chunk = serde_json::from_str(line)?;
        if let Some(error) = chunk.error {
            out.push(ChatEvent::Error(error.into_provider_error(None)));
            return Ok(());
        }
        if let Some(message) = chunk.message {
            if !message.content.is_empty() {
                out.push(ChatEvent::TextDelta(message.content));
            }
            // Calls arrive whole. Older servers send no `function.index` and nothing says
            // a newer one's is unique across chunks, so a running count numbers them.
            for call in message.tool_calls.into_iter().flatten() {
                let index = self.tool_calls;
                self.tool_calls += 1;
                out.push(ChatEvent::ToolCallStart {
                    index,
                    id: call.id.unwrap_or_else(|| format!("call_{index}")),
                    name: call.function.name,
                });
                out.push(ChatEvent::ToolCallArgumentsDelta {
                    index,
                    delta: call.function.arguments.to_string(),
                });
            }
        }
        if chunk.done {
            out.push(ChatEvent::Usage(Usage {
                input_tokens: chunk.prompt_eval_count,
                output_tokens: chunk.eval_count,
            }));
            let reason = match chunk.done_reason.as_deref() {
                None | Some("stop") if self.tool_calls > 0 => FinishReason::ToolCalls,
                None | Some("stop") => FinishReason::Stop,
                Some("length") => FinishReason::Length,
                Some(other) => FinishReason::Other(other.to_owned()),
            };
            out.push(ChatEvent::Finished { reason });
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct Chunk {
    message: Option<ChunkMessage>,
    #[serde(default)]
    done: bool,
    done_reason: Option<String>,
    /// Absent when the whole prompt was cached.
    #[serde(default)]
    prompt_eval_count: u64,
    #[serde(default)]
    eval_count: u64,
    error: Option<ErrorDetail>,
}

#[derive(Deserialize)]
struct ChunkMessage {
    #[serde(default)]
    content: String,
    tool_calls: Option<Vec<WireToolCall>>,
}

#[derive(Deserialize)]
struct WireToolCall {
    /// Sent by servers since late 2025.
    id: Option<String>,
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    arguments: Value,
}
