//! Anthropic Messages (`POST /v1/messages`), streamed as SSE with typed events.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::conversation::{Conversation, InvalidToolArguments, Message, RequestOptions, Tool};
use crate::error::ErrorDetail;
use crate::event::{ChatEvent, FinishReason, Usage};

pub(crate) fn request_body(
    options: &RequestOptions,
    conversation: &Conversation,
    tools: &[Tool],
) -> Result<Value, InvalidToolArguments> {
    let mut messages: Vec<Value> = Vec::new();
    for message in &conversation.messages {
        let (role, blocks) = match message {
            Message::User { text, images } => {
                let images = images.iter().map(|image| {
                    json!({
                        "type": "image",
                        "source": {"type": "base64", "media_type": image.media_type, "data": image.data},
                    })
                });
                let blocks = std::iter::once(json!({"type": "text", "text": text}))
                    .chain(images)
                    .collect();
                ("user", blocks)
            }
            Message::Assistant { text, tool_calls } => {
                let mut blocks = Vec::new();
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                for call in tool_calls {
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": call.id,
                        "name": call.name,
                        "input": call.input()?,
                    }));
                }
                ("assistant", blocks)
            }
            Message::ToolResult {
                call_id, content, ..
            } => (
                "user",
                vec![json!({"type": "tool_result", "tool_use_id": call_id, "content": content})],
            ),
        };
        // Roles must alternate: the results of parallel calls (and any words that follow
        // them) go into one user message.
        match messages.last_mut() {
            Some(last) if last["role"] == role => {
                if let Some(content) = last["content"].as_array_mut() {
                    content.extend(blocks);
                }
            }
            _ => messages.push(json!({"role": role, "content": blocks})),
        }
    }
    let tools: Vec<Value> = tools
        .iter()
        .map(|tool| {
            json!({
                "name": tool.name,
                "description": tool.description,
                "input_schema": tool.parameters,
            })
        })
        .collect();
    let mut body = json!({
        "model": options.model,
        "max_tokens": options.max_output_tokens,
        "messages": messages,
        "tools": tools,
        "stream": true,
    });
    options.sampling.insert_into(&mut body);
    if let Some(system) = &conversation.system {
        body["system"] = json!(system);
    }
    Ok(body)
}

/// Decoding state: the input token count, which `message_start` gives and the final
/// `message_delta` (older API versions) may not repeat.
#[derive(Debug, Default)]
pub(crate) struct Stream {
    input_tokens: u64,
}

impl Stream {
    pub(crate) fn payload(
        &mut self,
        data: &str,
        out: &mut Vec<ChatEvent>,
    ) -> serde_json::Result<()> {
        match serde_json::from_str(data)? {
            Event::MessageStart { message } => {
                self.input_tokens = message.usage.input_tokens();
            }
            Event::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                Block::Text { text } if !text.is_empty() => out.push(ChatEvent::TextDelta(text)),
                Block::ToolUse { id, name } => {
                    out.push(ChatEvent::ToolCallStart { index, id, name })
                }
                Block::Text { .. } | Block::Other => {}
            },
            Event::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { text } => out.push(ChatEvent::TextDelta(text)),
                // The first fragment is `""`, which adds nothing.
                BlockDelta::InputJsonDelta { partial_json } if !partial_json.is_empty() => out
                    .push(ChatEvent::ToolCallArgumentsDelta {
                        index,
                        delta: partial_json,
                    }),
                BlockDelta::InputJsonDelta { .. } | BlockDelta::Other => {}
            },
            Event::MessageDelta { delta, usage } => {
                if usage.input_tokens.is_some() {
                    self.input_tokens = usage.input_tokens();
                }
                // The counts here are cumulative for the whole message.
                out.push(ChatEvent::Usage(Usage {
                    input_tokens: self.input_tokens,
                    output_tokens: usage.output_tokens,
                }));
                if let Some(reason) = delta.stop_reason {
                    out.push(ChatEvent::Finished {
                        reason: finish_reason(reason),
                    });
                }
            }
            Event::Error { error } => out.push(ChatEvent::Error(error.into_provider_error(None))),
            // `ping`, `content_block_stop`, `message_stop`.
            Event::Ignored => {}
        }
        Ok(())
    }
}

fn finish_reason(reason: String) -> FinishReason {
    match reason.as_str() {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "tool_use" => FinishReason::ToolCalls,
        "max_tokens" => FinishReason::Length,
        _ => FinishReason::Other(reason),
    }
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockStart {
        index: usize,
        content_block: Block,
    },
    ContentBlockDelta {
        index: usize,
        delta: BlockDelta,
    },
    MessageDelta {
        delta: MessageDelta,
        usage: MessageUsage,
    },
    Error {
        error: ErrorDetail,
    },
    #[serde(other)]
    Ignored,
}

#[derive(Deserialize)]
struct StartMessage {
    usage: MessageUsage,
}

#[derive(Deserialize)]
struct MessageUsage {
    input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    output_tokens: u64,
}

impl MessageUsage {
    /// Anthropic counts cached prompt tokens apart; [`Usage`] counts every prompt token.
    fn input_tokens(&self) -> u64 {
        [
            self.input_tokens,
            self.cache_creation_input_tokens,
            self.cache_read_input_tokens,
        ]
        .into_iter()
        .flatten()
        .sum()
    }
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
    },
    /// Thinking and server-tool blocks: not part of the answer sandcell acts on.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct MessageDelta {
    stop_reason: Option<String>,
}
