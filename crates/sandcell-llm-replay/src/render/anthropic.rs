//! Anthropic Messages events, shaped like `anthropic-messages-stream-text-then-tool-use.sse`
//! and `anthropic-messages-stream-tool-use.sse`.

use axum::body::Bytes;
use serde_json::Value;

use super::{sse, typed, Turn, ALPHANUMERIC, TOOL};
use crate::json::{object, Object};

pub(super) fn render(turn: &Turn) -> Vec<Bytes> {
    let event = |kind: &'static str, fields: Object| sse(Some(kind), typed(kind, fields));
    let usage = |output_tokens: u64| {
        object! {
            "input_tokens": turn.input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": output_tokens,
        }
    };
    let mut start_usage = usage(1);
    start_usage.push("service_tier", "standard");
    let mut frames = vec![event(
        "message_start",
        object! {"message": object! {
            "model": turn.model.as_str(),
            "id": turn.id("msg_01", 0, 22, ALPHANUMERIC),
            "type": "message",
            "role": "assistant",
            "content": Vec::<Object>::new(),
            "stop_reason": Value::Null,
            "stop_sequence": Value::Null,
            "usage": start_usage,
        }},
    )];

    // Each block: its start, its deltas, its stop. The text block comes first, if any.
    let mut blocks: Vec<(Object, Vec<Object>)> = Vec::new();
    if !turn.text.is_empty() {
        let deltas = turn
            .text_pieces()
            .map(|text| object! {"type": "text_delta", "text": text})
            .collect();
        blocks.push((object! {"type": "text", "text": ""}, deltas));
    }
    for (index, call) in turn.calls.iter().enumerate() {
        let start = object! {
            "type": "tool_use",
            "id": turn.id("toolu_01", index, 22, ALPHANUMERIC),
            "name": TOOL,
            "input": Object::default(),
        };
        // The service's first fragment of a call's input is always empty.
        let deltas = std::iter::once("")
            .chain(turn.argument_pieces(call))
            .map(|json| object! {"type": "input_json_delta", "partial_json": json})
            .collect();
        blocks.push((start, deltas));
    }
    for (index, (start, deltas)) in blocks.into_iter().enumerate() {
        frames.push(event(
            "content_block_start",
            object! {"index": index, "content_block": start},
        ));
        // The service pings once, right after the first block starts.
        if index == 0 {
            frames.push(event("ping", Object::default()));
        }
        frames.extend(deltas.into_iter().map(|delta| {
            event(
                "content_block_delta",
                object! {"index": index, "delta": delta},
            )
        }));
        frames.push(event("content_block_stop", object! {"index": index}));
    }

    let stop_reason = turn.finish_reason("tool_use", "end_turn");
    frames.push(event(
        "message_delta",
        object! {
            "delta": object! {"stop_reason": stop_reason, "stop_sequence": Value::Null},
            "usage": usage(turn.output_tokens),
        },
    ));
    frames.push(event("message_stop", Object::default()));
    frames
}
