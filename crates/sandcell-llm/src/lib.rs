//! The wire formats of the language-model providers sandcell talks to.
//!
//! For: building the JSON request body of a chat turn for each protocol (OpenAI Chat
//! Completions, OpenAI Responses, Anthropic Messages, Ollama `/api/chat`) from one neutral
//! [`Conversation`], decoding each protocol's streamed response body, fed in chunks of any
//! size, into one event type ([`ChatEvent`]), folding those events into the complete
//! assistant turn ([`Assembler`]), and reading providers' error bodies ([`ProviderError`]).
//!
//! Not for: HTTP, authentication, retries or the agent loop that runs the model's code;
//! those sit on top of this crate and only move bytes in and out of it.

mod anthropic;
mod assemble;
mod conversation;
mod decode;
mod error;
mod event;
mod lines;
mod ollama;
mod openai_chat;
mod openai_responses;
mod protocol;
mod sse;

pub use assemble::{AssembleError, Assembler, AssistantTurn};
pub use conversation::{
    Conversation, ImageBase64, InvalidToolArguments, Message, RequestOptions, Sampling, Tool,
    ToolCall,
};
pub use decode::{DecodeError, Decoder};
pub use error::ProviderError;
pub use event::{ChatEvent, FinishReason, Usage};
pub use protocol::Protocol;
