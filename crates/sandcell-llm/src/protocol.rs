//! The protocols sandcell speaks, and building their request bodies.

use serde_json::Value;
use std::fmt;

use crate::conversation::{Conversation, InvalidToolArguments, RequestOptions, Tool};
use crate::{anthropic, ollama, openai_chat, openai_responses};

/// A provider wire protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OpenAI Chat Completions, `POST /v1/chat/completions` (also spoken by many
    /// OpenAI-compatible servers).
    OpenAiChat,
    /// OpenAI Responses, `POST /v1/responses`.
    OpenAiResponses,
    /// Anthropic Messages, `POST /v1/messages`.
    Anthropic,
    /// Ollama's native chat API, `POST /api/chat`.
    Ollama,
}

impl Protocol {
    /// The streaming request body for the next assistant turn of `conversation`, with
    /// `tools` offered.
    ///
    /// Fails only when a previous tool call's arguments are not JSON and the protocol
    /// carries them as an object (Anthropic, Ollama) rather than as text.
    pub fn request_body(
        self,
        options: &RequestOptions,
        conversation: &Conversation,
        tools: &[Tool],
    ) -> Result<Value, InvalidToolArguments> {
        match self {
            Protocol::OpenAiChat => Ok(openai_chat::request_body(options, conversation, tools)),
            Protocol::OpenAiResponses => {
                Ok(openai_responses::request_body(options, conversation, tools))
            }
            Protocol::Anthropic => anthropic::request_body(options, conversation, tools),
            Protocol::Ollama => ollama::request_body(options, conversation, tools),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::OpenAiChat => "OpenAI Chat Completions",
            Protocol::OpenAiResponses => "OpenAI Responses",
            Protocol::Anthropic => "Anthropic Messages",
            Protocol::Ollama => "Ollama chat",
        })
    }
}
