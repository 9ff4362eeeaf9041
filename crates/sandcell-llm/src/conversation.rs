//! The neutral conversation every request body is built from.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// What the model has seen so far: a system prompt and the messages after it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conversation {
    pub system: Option<String>,
    pub messages: Vec<Message>,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// The person's words, with images for vision models.
    User {
        text: String,
        images: Vec<ImageBase64>,
    },
    /// A previous assistant turn: its text (may be empty) and the tool calls it made.
    Assistant {
        text: String,
        tool_calls: Vec<ToolCall>,
    },
    /// The result of running the tool call `call_id`. `name` is the tool's name, which
    /// Ollama wants instead of an id.
    ToolResult {
        call_id: String,
        name: String,
        content: String,
    },
}

/// An image, base64 encoded, with its media type: `image/png` (as Jupyter and the
/// session protocol carry plots), `image/jpeg`, `image/gif` or `image/webp` (what every
/// provider takes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageBase64 {
    pub media_type: String,
    pub data: String,
}

impl ImageBase64 {
    /// The media types every protocol takes.
    pub const MEDIA_TYPES: [&'static str; 4] =
        ["image/png", "image/jpeg", "image/gif", "image/webp"];

    pub fn png(data: impl Into<String>) -> Self {
        ImageBase64 {
            media_type: "image/png".to_owned(),
            data: data.into(),
        }
    }

    /// The `data:` URL the OpenAI protocols take images as.
    pub(crate) fn data_url(&self) -> String {
        format!("data:{};base64,{}", self.media_type, self.data)
    }
}

/// A tool call the model made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments exactly as the model wrote them: a JSON object, as text.
    pub arguments: String,
}

/// The model wrote tool call arguments that are not a JSON value.
#[derive(Debug, thiserror::Error)]
#[error("the model wrote arguments for tool call {id} ({name}) that are not valid JSON ({source}): {arguments}")]
pub struct InvalidToolArguments {
    pub id: String,
    pub name: String,
    pub arguments: String,
    pub source: serde_json::Error,
}

impl ToolCall {
    /// The arguments parsed. No arguments at all (Anthropic streams only `""` for a tool
    /// without parameters) mean an empty object.
    pub fn input(&self) -> Result<Value, InvalidToolArguments> {
        if self.arguments.trim().is_empty() {
            return Ok(json!({}));
        }
        serde_json::from_str(&self.arguments).map_err(|source| InvalidToolArguments {
            id: self.id.clone(),
            name: self.name.clone(),
            arguments: self.arguments.clone(),
            source,
        })
    }
}

/// A function the model may call, with a JSON Schema for its arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: String,
    pub parameters: Value,
}

impl Tool {
    /// sandcell's one tool: run Python code in the session.
    pub fn python() -> Self {
        Tool {
            name: "python".to_owned(),
            description: "Run Python code in a stateful IPython session and return its output. \
                          Variables persist between calls; files live in /mnt/data."
                .to_owned(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "code": { "type": "string", "description": "The Python code to run." }
                },
                "required": ["code"],
                "additionalProperties": false
            }),
        }
    }
}

/// What a request needs besides the conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestOptions {
    pub model: String,
    /// The output token limit; Anthropic requires one, so every protocol gets it.
    pub max_output_tokens: u32,
    pub sampling: Sampling,
}

/// How the model picks its words; the provider's default for each left out (and then
/// not sent at all, since some models refuse settings they do not take).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sampling {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
}

impl Sampling {
    /// Sets each setting given as `object[name]`, under the names every protocol uses.
    pub(crate) fn insert_into(&self, object: &mut Value) {
        if let Some(temperature) = self.temperature {
            object["temperature"] = json!(temperature);
        }
        if let Some(top_p) = self.top_p {
            object["top_p"] = json!(top_p);
        }
    }
}
