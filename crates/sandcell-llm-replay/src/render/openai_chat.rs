//! OpenAI Chat Completions chunks, shaped like `openai-chat-stream-*-2026.sse`.

use axum::body::Bytes;
use serde_json::Value;

use super::{sse, Turn, ALPHANUMERIC, CREATED, TOOL};
use crate::json::{object, Object};

pub(super) fn render(turn: &Turn) -> Vec<Bytes> {
    let id = turn.id("chatcmpl-", 0, 29, ALPHANUMERIC);
    let chunk = |choices: Vec<Object>, usage: Option<Object>| {
        let mut chunk = object! {
            "id": id.as_str(),
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": turn.model.as_str(),
            "service_tier": "default",
            "system_fingerprint": "fp_replay",
            "choices": choices,
        };
        // Asked for usage, every chunk carries the key, `null` until the last.
        if turn.include_usage {
            chunk.push("usage", usage);
        }
        sse(None, chunk)
    };
    let choice = |delta: Object, finish_reason: Option<&str>| {
        chunk(
            vec![object! {
                "index": 0,
                "delta": delta,
                "logprobs": Value::Null,
                "finish_reason": finish_reason,
            }],
            None,
        )
    };
    let delta = |delta: Object| choice(delta, None);

    // The first chunk names the role; its content is `""` before text, `null` before calls.
    let content = (!turn.text.is_empty()).then_some("");
    let mut frames = vec![delta(
        object! {"role": "assistant", "content": content, "refusal": Value::Null},
    )];
    frames.extend(
        turn.text_pieces()
            .map(|text| delta(object! {"content": text})),
    );
    for (index, call) in turn.calls.iter().enumerate() {
        let call_id = turn.id("call_", index, 24, ALPHANUMERIC);
        frames.push(delta(object! {"tool_calls": vec![object! {
            "index": index,
            "id": call_id,
            "type": "function",
            "function": object! {"name": TOOL, "arguments": ""},
        }]}));
        frames.extend(turn.argument_pieces(call).map(|arguments| {
            delta(object! {"tool_calls": vec![object! {
                "index": index,
                "function": object! {"arguments": arguments},
            }]})
        }));
    }
    let finish_reason = turn.finish_reason("tool_calls", "stop");
    frames.push(choice(Object::default(), Some(finish_reason)));
    if turn.include_usage {
        frames.push(chunk(
            Vec::new(),
            Some(object! {
                "prompt_tokens": turn.input_tokens,
                "completion_tokens": turn.output_tokens,
                "total_tokens": turn.input_tokens + turn.output_tokens,
                "prompt_tokens_details": object! {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": object! {
                    "reasoning_tokens": 0,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            }),
        ));
    }
    frames.push(sse(None, "[DONE]"));
    frames
}
