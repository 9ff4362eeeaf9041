//! OpenAI Responses events, shaped like `openai-responses-stream-text-then-function-call.sse`.

use axum::body::Bytes;
use serde_json::{json, Value};

use super::{sse, typed, Turn, ALPHANUMERIC, CREATED, HEX, TOOL};
use crate::json::{object, Object};

pub(super) fn render(turn: &Turn) -> Vec<Bytes> {
    let response_id = turn.id("resp_", 0, 50, HEX);
    let mut events = Events::default();
    let in_progress = response(turn, &response_id, "in_progress", Vec::new());
    events.push(
        "response.created",
        object! {"response": in_progress.clone()},
    );
    events.push("response.in_progress", object! {"response": in_progress});

    // The items of the finished response, in output order: the message, then the calls.
    let mut output = Vec::new();
    if !turn.text.is_empty() {
        let output_index = output.len();
        let item_id = turn.id("msg_", 0, 50, HEX);
        let item = |status: &str, content: Vec<Object>| {
            object! {
                "id": item_id.as_str(),
                "type": "message",
                "status": status,
                "content": content,
                "role": "assistant",
            }
        };
        events.push(
            "response.output_item.added",
            object! {"item": item("in_progress", Vec::new()), "output_index": output_index},
        );
        events.push(
            "response.content_part.added",
            object! {
                "content_index": 0,
                "item_id": item_id.as_str(),
                "output_index": output_index,
                "part": output_text(""),
            },
        );
        for delta in turn.text_pieces() {
            events.push(
                "response.output_text.delta",
                object! {
                    "content_index": 0,
                    "delta": delta,
                    "item_id": item_id.as_str(),
                    "logprobs": json!([]),
                    "output_index": output_index,
                },
            );
        }
        events.push(
            "response.output_text.done",
            object! {
                "content_index": 0,
                "item_id": item_id.as_str(),
                "logprobs": json!([]),
                "output_index": output_index,
                "text": turn.text,
            },
        );
        events.push(
            "response.content_part.done",
            object! {
                "content_index": 0,
                "item_id": item_id.as_str(),
                "output_index": output_index,
                "part": output_text(turn.text),
            },
        );
        let done = item("completed", vec![output_text(turn.text)]);
        events.push(
            "response.output_item.done",
            object! {"item": done.clone(), "output_index": output_index},
        );
        output.push(done);
    }
    for (index, call) in turn.calls.iter().enumerate() {
        let output_index = output.len();
        let item_id = turn.id("fc_", index, 50, HEX);
        let call_id = turn.id("call_", index, 24, ALPHANUMERIC);
        let item = |status: &str, arguments: &str| {
            object! {
                "id": item_id.as_str(),
                "type": "function_call",
                "status": status,
                "arguments": arguments,
                "call_id": call_id.as_str(),
                "name": TOOL,
            }
        };
        events.push(
            "response.output_item.added",
            object! {"item": item("in_progress", ""), "output_index": output_index},
        );
        for delta in turn.argument_pieces(call) {
            events.push(
                "response.function_call_arguments.delta",
                object! {"delta": delta, "item_id": item_id.as_str(), "output_index": output_index},
            );
        }
        events.push(
            "response.function_call_arguments.done",
            object! {
                "arguments": call.arguments.as_str(),
                "item_id": item_id.as_str(),
                "output_index": output_index,
            },
        );
        let done = item("completed", &call.arguments);
        events.push(
            "response.output_item.done",
            object! {"item": done.clone(), "output_index": output_index},
        );
        output.push(done);
    }
    events.push(
        "response.completed",
        object! {"response": response(turn, &response_id, "completed", output)},
    );
    events.frames
}

/// The frames so far, and the `sequence_number` of the next event.
#[derive(Default)]
struct Events {
    frames: Vec<Bytes>,
    sequence_number: u64,
}

impl Events {
    /// Adds the event `kind` with `fields`, which must be in alphabetical order, as the
    /// service sends them after `type`; its `sequence_number` goes in its place among them.
    fn push(&mut self, kind: &'static str, mut fields: Object) {
        let position = fields
            .0
            .iter()
            .position(|(key, _)| *key > "sequence_number")
            .unwrap_or(fields.0.len());
        fields
            .0
            .insert(position, ("sequence_number", self.sequence_number.into()));
        self.sequence_number += 1;
        self.frames.push(sse(Some(kind), typed(kind, fields)));
    }
}

fn output_text(text: &str) -> Object {
    object! {"type": "output_text", "annotations": json!([]), "logprobs": json!([]), "text": text}
}

/// The response object of `response.created`, `.in_progress` and `.completed`; usage and
/// the completion time only once completed.
fn response(turn: &Turn, id: &str, status: &str, output: Vec<Object>) -> Object {
    let completed = status == "completed";
    let usage = completed.then(|| {
        object! {
            "input_tokens": turn.input_tokens,
            "input_tokens_details": object! {"cached_tokens": 0},
            "output_tokens": turn.output_tokens,
            "output_tokens_details": object! {"reasoning_tokens": 0},
            "total_tokens": turn.input_tokens + turn.output_tokens,
        }
    });
    object! {
        "id": id,
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "background": false,
        "completed_at": completed.then_some(CREATED + 1),
        "error": Value::Null,
        "incomplete_details": Value::Null,
        "instructions": Value::Null,
        "max_output_tokens": Value::Null,
        "model": turn.model.as_str(),
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": Value::Null,
        "service_tier": "default",
        "store": true,
        "temperature": 1.0,
        "text": object! {"format": object! {"type": "text"}},
        "tool_choice": "auto",
        "tools": json!([]),
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": Value::Null,
        "metadata": Object::default(),
    }
}
