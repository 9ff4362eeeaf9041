//! What a turn reports while it runs: the one event stream every front end (terminal,
//! `--json`, the server) renders.

use sandcell_session::{Execution, ExecutionError, MimeBundle};
use serde::{Deserialize, Serialize};

/// One step of a turn, in order. Serialized with a `type` tag (`text_delta`, `code`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentEvent {
    /// A piece of the model's text.
    TextDelta {
        text: String,
    },
    /// A piece of the code of a `python` call, as the model writes it.
    CodeDelta {
        call_id: String,
        text: String,
    },
    /// The code of a call, complete; it runs next.
    Code {
        call_id: String,
        code: String,
    },
    /// Output of the running code, as it comes.
    Stdout {
        call_id: String,
        text: String,
    },
    Stderr {
        call_id: String,
        text: String,
    },
    /// A rich result (MIME bundle) of the running code.
    Result {
        call_id: String,
        data: MimeBundle,
    },
    /// The running code raised.
    Error {
        call_id: String,
        error: ExecutionError,
    },
    /// The code finished. `images` are the files (paths under `/mnt/data`) its images
    /// were saved as, in the order of its results.
    Execution {
        call_id: String,
        execution: Execution,
        images: Vec<String>,
    },
    /// The model's request failed in a way worth retrying; the next attempt follows.
    Retrying {
        attempt: u32,
        delay_ms: u64,
        reason: String,
    },
    /// Tokens used by the last model request, and by the whole conversation so far.
    Usage {
        request: TokenUsage,
        conversation: TokenUsage,
    },
    /// The model answered without calling the tool: the turn is over.
    Final {
        text: String,
    },
}

/// Token counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl From<sandcell_llm::Usage> for TokenUsage {
    fn from(usage: sandcell_llm::Usage) -> Self {
        TokenUsage {
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
        }
    }
}

impl std::ops::AddAssign for TokenUsage {
    fn add_assign(&mut self, other: TokenUsage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
    }
}
