//! The interpreter loop: a language model writes Python, a sandcell session runs it, and
//! what came back (text, errors, images, files) goes back to the model until it answers.
//!
//! For: choosing a model from `provider:model` and the config file ([`ModelChoice`]),
//! talking to it over HTTP with retries ([`ModelClient`]), the system prompt that tells
//! the model where it is ([`prompt`]), turning an execution into the tool result the model
//! reads ([`tool_result`]), the loop itself ([`Agent`]) with its events ([`AgentEvent`]),
//! and the record of a conversation: JSON Lines ([`Transcript`]) and Jupyter notebooks
//! ([`notebook`]).
//!
//! Not for: the providers' wire formats (`sandcell-llm`), running Python
//! (`sandcell-session`), or drawing anything on a terminal or a web page.

mod agent;
mod client;
mod code_stream;
mod config;
mod error;
mod event;
pub mod notebook;
pub mod prompt;
pub mod tool_result;
mod transcript;

pub use agent::{Agent, AgentOptions, TurnEnd};
pub use client::{ClientEvent, ModelClient, RetryPolicy};
pub use config::{Config, ModelChoice, Provider, ProviderConfig, CONFIG_HINT};
pub use error::{AgentError, ModelError};
pub use event::{AgentEvent, TokenUsage};
pub use sandcell_llm::{ImageBase64, Sampling};
pub use transcript::{Record, RecordSink, RecordedCall, Transcript};
