//! OpenAI Chat Completions (`POST /v1/chat/completions`), streamed as SSE.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::conversation::{Conversation, Message, RequestOptions, Tool};
use crate::error::ErrorDetail;
use crate::event::{ChatEvent, FinishReason, Usage};

pub(crate) fn request_body(
    options: &RequestOptions,
    conversation: &Conversation,
    tools: &[Tool],
) -> Value {
    let system = conversation
        .system
        .iter()
        .map(|system| json!({"role": "system", "content": system}));
    let messages = conversation.messages.iter().map(|message| match message {
        Message::User { text, images } if images.is_empty() => {
            json!({"role": "user", "content": text})
        }
        Message::User { text, images } => {
            let images = images
                .iter()
                .map(|image| json!({"type": "image_url", "image_url": {"url": image.data_url()}}));
            let parts: Vec<Value> = std::iter::once(json!({"type": "text", "text": text}))
                .chain(images)
                .collect();
            json!({"role": "user", "content": parts})
        }
        Message::Assistant { text, tool_calls } => {
            // `null`, not `""`, is what the API itself returns for a turn of only tool calls.
            let content = (!text.is_empty()).then_some(text);
            let mut message = json!({"role": "assistant", "content": content});
            if !tool_calls.is_empty() {
                message["tool_calls"] = tool_calls
                    .iter()
                    .map(|call| {
                        json!({
                            "id": call.id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": call.arguments},
                        })
                    })
                    .collect();
            }
            message
        }
        Message::ToolResult {
            call_id, content, ..
        } => json!({"role": "tool", "tool_call_id": call_id, "content": content}),
    });
    let mut body = json!({
        "model": options.model,
        "messages": system.chain(messages).collect::<Vec<_>>(),
        "tools": tools.iter().map(function_tool).collect::<Vec<_>>(),
        "max_completion_tokens": options.max_output_tokens,
        "stream": true,
        // Without it the stream carries no token counts at all.
        "stream_options": {"include_usage": true},
    });
    options.sampling.insert_into(&mut body);
    body
}

/// A tool in the Chat Completions shape, which Ollama's `/api/chat` copied.
pub(crate) fn function_tool(tool: &Tool) -> Value {
    json!({
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        },
    })
}

/// Decoding state. Chat chunks are self-contained, so there is none.
#[derive(Debug, Default)]
pub(crate) struct Stream;

impl Stream {
    pub(crate) fn payload(
        &mut self,
        data: &str,
        out: &mut Vec<ChatEvent>,
    ) -> serde_json::Result<()> {
        if data == "[DONE]" {
            return Ok(());
        }
        let chunk: Chunk = serde_json::from_str(data)?;
        if let Some(error) = chunk.error {
            out.push(ChatEvent::Error(error.into_provider_error(None)));
        }
        // sandcell never asks for more than one choice (`n` is left at 1).
        for choice in chunk.choices.into_iter().flatten() {
            if let Some(text) = choice.delta.content.filter(|text| !text.is_empty()) {
                out.push(ChatEvent::TextDelta(text));
            }
            for call in choice.delta.tool_calls.into_iter().flatten() {
                let function = call.function.unwrap_or_default();
                // The first fragment of a call carries its id and name; later ones only
                // the index and more arguments.
                if let (Some(id), Some(name)) = (call.id, function.name) {
                    out.push(ChatEvent::ToolCallStart {
                        index: call.index,
                        id,
                        name,
                    });
                }
                if let Some(delta) = function.arguments.filter(|delta| !delta.is_empty()) {
                    out.push(ChatEvent::ToolCallArgumentsDelta {
                        index: call.index,
                        delta,
                    });
                }
            }
            if let Some(reason) = choice.finish_reason {
                out.push(ChatEvent::Finished {
                    reason: finish_reason(reason),
                });
            }
        }
        // Every chunk of the newer format carries `"usage": null`; only the last, with
        // `"choices": []`, has numbers.
        if let Some(usage) = chunk.usage {
            out.push(ChatEvent::Usage(Usage {
                input_tokens: usage.prompt_tokens,
                output_tokens: usage.completion_tokens,
            }));
        }
        Ok(())
    }
}

fn finish_reason(reason: String) -> FinishReason {
    match reason.as_str() {
        "stop" => FinishReason::Stop,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "length" => FinishReason::Length,
        _ => FinishReason::Other(reason),
    }
}

#[derive(Deserialize)]
struct Chunk {
    choices: Option<Vec<Choice>>,
    usage: Option<ChunkUsage>,
    error: Option<ErrorDetail>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Delta,
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct Delta {
    content: Option<String>,
    tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Deserialize)]
struct ToolCallDelta {
    index: usize,
    id: Option<String>,
    function: Option<FunctionDelta>,
}

#[derive(Deserialize, Default)]
struct FunctionDelta {
    name: Option<String>,
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct ChunkUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
}
