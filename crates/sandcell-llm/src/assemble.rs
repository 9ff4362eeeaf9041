//! Folding a stream of [`ChatEvent`]s into the complete assistant turn.

use std::collections::BTreeMap;

use crate::conversation::{InvalidToolArguments, Message, ToolCall};
use crate::error::ProviderError;
use crate::event::{ChatEvent, FinishReason, Usage};

/// A complete assistant turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssistantTurn {
    pub text: String,
    /// In the order the model made them. Each one's arguments are valid JSON.
    pub tool_calls: Vec<ToolCall>,
    /// `None` when the provider sent no counts.
    pub usage: Option<Usage>,
    pub finish_reason: FinishReason,
}

impl From<AssistantTurn> for Message {
    /// The turn as history for the next request.
    fn from(turn: AssistantTurn) -> Self {
        Message::Assistant {
            text: turn.text,
            tool_calls: turn.tool_calls,
        }
    }
}

/// Why a stream did not make a complete turn.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("the stream added arguments to tool call {0}, which it never started")]
    UnknownToolCall(usize),
    #[error("the stream started tool call {0} twice")]
    DuplicateToolCall(usize),
    #[error("the stream ended before the model finished its turn")]
    Incomplete,
    #[error(transparent)]
    InvalidToolArguments(#[from] InvalidToolArguments),
}

/// Collects the events of one turn; see [`Assembler::finish`].
#[derive(Debug, Default)]
pub struct Assembler {
    text: String,
    /// By the stream's index, which orders the calls.
    tool_calls: BTreeMap<usize, ToolCall>,
    usage: Option<Usage>,
    finish_reason: Option<FinishReason>,
}

impl Assembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one event. A mid-stream provider error ends the turn, and is returned.
    pub fn push(&mut self, event: ChatEvent) -> Result<(), AssembleError> {
        match event {
            ChatEvent::TextDelta(text) => self.text.push_str(&text),
            ChatEvent::ToolCallStart { index, id, name } => {
                let call = ToolCall {
                    id,
                    name,
                    arguments: String::new(),
                };
                if self.tool_calls.insert(index, call).is_some() {
                    return Err(AssembleError::DuplicateToolCall(index));
                }
            }
            ChatEvent::ToolCallArgumentsDelta { index, delta } => self
                .tool_calls
                .get_mut(&index)
                .ok_or(AssembleError::UnknownToolCall(index))?
                .arguments
                .push_str(&delta),
            ChatEvent::Usage(usage) => self.usage = Some(usage),
            ChatEvent::Finished { reason } => self.finish_reason = Some(reason),
            ChatEvent::Error(error) => return Err(error.into()),
        }
        Ok(())
    }

    /// The turn, once the stream has ended. Fails if the model never finished, or wrote
    /// tool call arguments that are not JSON.
    pub fn finish(self) -> Result<AssistantTurn, AssembleError> {
        let finish_reason = self.finish_reason.ok_or(AssembleError::Incomplete)?;
        let tool_calls: Vec<ToolCall> = self.tool_calls.into_values().collect();
        for call in &tool_calls {
            call.input()?;
        }
        Ok(AssistantTurn {
            text: self.text,
            tool_calls,
            usage: self.usage,
            finish_reason,
        })
    }
}
