//! The one event type every protocol's stream is decoded into.

use crate::error::ProviderError;

/// One step of a streamed assistant turn, whatever protocol it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatEvent {
    /// A piece of the assistant's text.
    TextDelta(String),
    /// A tool call begins. `index` tells the calls of one turn apart; later
    /// [`ChatEvent::ToolCallArgumentsDelta`]s refer to it.
    ToolCallStart {
        index: usize,
        id: String,
        name: String,
    },
    /// A piece of the JSON arguments of the tool call with this `index`.
    ToolCallArgumentsDelta { index: usize, delta: String },
    /// Token counts for the whole turn so far; a later `Usage` replaces an earlier one.
    Usage(Usage),
    /// The model stopped generating. Usage may still follow (OpenAI sends it last).
    Finished { reason: FinishReason },
    /// The provider reported an error in the middle of the stream.
    Error(ProviderError),
}

/// Tokens read and written by one turn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Every prompt token, cached or not.
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    /// A natural end of the answer (or a stop sequence).
    Stop,
    /// The model wants its tool calls run.
    ToolCalls,
    /// The output token limit was reached.
    Length,
    /// Anything else, as the provider named it (e.g. `content_filter`, `refusal`).
    Other(String),
}
