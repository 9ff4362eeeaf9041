//! Ollama `/api/chat` lines, shaped like `ollama-chat-stream-tool-calls.ndjson`.
//!
//! Ollama sends tool calls whole, all in one line, and ends a turn that calls tools with
//! `done_reason: "stop"` like any other: the real server does, so this does too.

use axum::body::Bytes;
use serde_json::json;

use super::{ndjson, Turn, LOWER_ALPHANUMERIC, TOOL};
use crate::json::{object, Object};

/// The `created_at` of every line: fixed, like every generated time.
const CREATED_AT: &str = "2026-01-01T00:00:00.000000Z";

pub(super) fn render(turn: &Turn) -> Vec<Bytes> {
    // Every line: the model, the time, the message, then how far the turn is.
    let line = |message: Object, progress: Object| {
        let mut line = object! {
            "model": turn.model.as_str(),
            "created_at": CREATED_AT,
            "message": message,
        };
        line.0.extend(progress.0);
        ndjson(line)
    };
    let message = |content: &str| object! {"role": "assistant", "content": content};

    let mut frames: Vec<Bytes> = turn
        .text_pieces()
        .map(|text| line(message(text), object! {"done": false}))
        .collect();
    if !turn.calls.is_empty() {
        let calls: Vec<Object> = turn
            .calls
            .iter()
            .enumerate()
            .map(|(index, call)| {
                object! {
                    "id": turn.id("call_", index, 8, LOWER_ALPHANUMERIC),
                    "function": object! {
                        "index": index,
                        "name": TOOL,
                        "arguments": json!({"code": call.code}),
                    },
                }
            })
            .collect();
        let mut calls_message = message("");
        calls_message.push("tool_calls", calls);
        frames.push(line(calls_message, object! {"done": false}));
    }
    frames.push(line(
        message(""),
        object! {
            "done_reason": "stop",
            "done": true,
            "total_duration": 1_000_000,
            "load_duration": 100_000,
            "prompt_eval_count": turn.input_tokens,
            "prompt_eval_duration": 200_000,
            "eval_count": turn.output_tokens,
            "eval_duration": 700_000,
        },
    ));
    frames
}
