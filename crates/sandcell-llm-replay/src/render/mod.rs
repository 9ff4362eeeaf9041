//! Generated streams: one [`Turn`], cut into pieces once, rendered by each protocol's
//! module in its own wire format.
//!
//! What the protocols share lives here: the pieces, the token counts, the identifiers,
//! and the two framings (SSE, NDJSON). Each module only knows its protocol's shapes,
//! copied from the recorded responses of the real services.

mod anthropic;
mod ollama;
mod openai_chat;
mod openai_responses;

use axum::body::Bytes;
use serde_json::{json, Value};
use std::fmt::Display;

use crate::json::{object, Object};
use crate::script::Reply;

/// The provider protocols, by the path each is served at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire {
    OpenAiChat,
    OpenAiResponses,
    Anthropic,
    Ollama,
}

/// The paths a reply can be rendered for, for error messages.
pub(crate) const PATHS: &str = "/v1/chat/completions, /v1/responses, /v1/messages and /api/chat";

/// The name of the one tool every generated call is made to.
const TOOL: &str = "python";

/// The `created` time of every generated response (2026-01-01T00:00:00Z): fixed, so that
/// a script always renders the same bytes.
const CREATED: u64 = 1_767_225_600;

impl Wire {
    pub(crate) fn at(path: &str) -> Option<Wire> {
        match path {
            "/v1/chat/completions" => Some(Wire::OpenAiChat),
            "/v1/responses" => Some(Wire::OpenAiResponses),
            "/v1/messages" => Some(Wire::Anthropic),
            "/api/chat" => Some(Wire::Ollama),
            _ => None,
        }
    }

    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Wire::Ollama => "application/x-ndjson",
            _ => "text/event-stream",
        }
    }

    /// The body of `turn`, one frame (SSE event or NDJSON line) per chunk.
    pub(crate) fn render(self, turn: &Turn) -> Vec<Bytes> {
        match self {
            Wire::OpenAiChat => openai_chat::render(turn),
            Wire::OpenAiResponses => openai_responses::render(turn),
            Wire::Anthropic => anthropic::render(turn),
            Wire::Ollama => ollama::render(turn),
        }
    }

    /// A body in this protocol's framing whose one message is not JSON.
    pub(crate) fn malformed(self) -> Bytes {
        const NOT_JSON: &str = r#"{"type": this is not JSON"#;
        match self {
            Wire::Ollama => ndjson(NOT_JSON),
            _ => sse(None, NOT_JSON),
        }
    }
}

/// One generated assistant turn and what the request said that shapes it.
#[derive(Debug)]
pub(crate) struct Turn<'a> {
    text: &'a str,
    calls: Vec<Call<'a>>,
    chunk_size: usize,
    /// The model the request named, echoed back as the services do.
    model: String,
    /// OpenAI Chat sends usage only when `stream_options.include_usage` asks for it.
    include_usage: bool,
    input_tokens: u64,
    output_tokens: u64,
    /// Makes this turn's identifiers differ from other turns' (the request's number).
    seed: u64,
}

#[derive(Debug)]
struct Call<'a> {
    code: &'a str,
    /// `{"code": …}` as JSON text.
    arguments: String,
}

impl<'a> Turn<'a> {
    /// The turn `reply` describes, answering a request whose body is `request` (`Null` or
    /// a string when it is not JSON) and `request_length` bytes long, the `seed`th request
    /// served.
    pub(crate) fn new(reply: &'a Reply, request: &Value, request_length: usize, seed: u64) -> Self {
        let calls: Vec<Call> = reply
            .tool_calls
            .iter()
            .map(|call| Call {
                code: &call.code,
                arguments: json!({"code": call.code}).to_string(),
            })
            .collect();
        // Any plausible counts do; these grow with what was read and written.
        let written = reply.text.chars().count()
            + calls.iter().map(|call| call.arguments.len()).sum::<usize>();
        Turn {
            text: &reply.text,
            calls,
            chunk_size: reply.chunk_size.get(),
            model: request["model"].as_str().unwrap_or("replay").to_owned(),
            include_usage: request["stream_options"]["include_usage"] == true,
            input_tokens: request_length as u64 / 4 + 1,
            output_tokens: written as u64 / 4 + 1,
            seed,
        }
    }

    /// The text, in deltas.
    fn text_pieces(&self) -> impl Iterator<Item = &'a str> {
        pieces(self.text, self.chunk_size)
    }

    /// The arguments of `call`, in deltas.
    fn argument_pieces<'c>(&self, call: &'c Call) -> impl Iterator<Item = &'c str> {
        pieces(&call.arguments, self.chunk_size)
    }

    /// The protocol's word for why the turn ended: `tool_calls` if it called tools.
    fn finish_reason<'r>(&self, tool_calls: &'r str, stop: &'r str) -> &'r str {
        if self.calls.is_empty() {
            stop
        } else {
            tool_calls
        }
    }

    /// An identifier: `prefix` then `length` characters of `alphabet`, the same for the
    /// same turn, prefix and index, and (practically) unique otherwise.
    fn id(&self, prefix: &str, index: usize, length: usize, alphabet: &[u8]) -> String {
        let mut state = prefix
            .bytes()
            .fold(self.seed ^ ((index as u64) << 32), |state, byte| {
                splitmix64(state ^ u64::from(byte))
            });
        let mut id = String::from(prefix);
        for _ in 0..length {
            state = splitmix64(state);
            id.push(char::from(
                alphabet[(state % alphabet.len() as u64) as usize],
            ));
        }
        id
    }
}

/// Letters and digits, as in `chatcmpl-…`, `call_…`, `toolu_01…`.
const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// Lower-case hexadecimal, as in `resp_…`, `msg_…`, `fc_…` of the Responses API.
const HEX: &[u8] = b"0123456789abcdef";
/// Lower-case letters and digits, as in Ollama's `call_…`.
const LOWER_ALPHANUMERIC: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

fn splitmix64(state: u64) -> u64 {
    let mut z = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `text` in pieces of `size` characters (the last may be shorter).
fn pieces(text: &str, size: usize) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest
            .char_indices()
            .nth(size)
            .map_or(rest.len(), |(end, _)| end);
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
}

/// An object whose first key is `"type": kind`, then `fields`: the shape of every
/// Anthropic and Responses event.
fn typed(kind: &'static str, fields: Object) -> Object {
    let mut object = object! {"type": kind};
    object.0.extend(fields.0);
    object
}

/// One server-sent event: an optional `event:` line, then its data.
fn sse(event: Option<&str>, data: impl Display) -> Bytes {
    let frame = match event {
        Some(event) => format!("event: {event}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    };
    Bytes::from(frame)
}

/// One NDJSON line.
fn ndjson(line: impl Display) -> Bytes {
    Bytes::from(format!("{line}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cut_characters_not_bytes() {
        let cut: Vec<&str> = pieces("aé€😀bc", 2).collect();
        assert_eq!(cut, ["aé", "€😀", "bc"]);
        assert_eq!(pieces("", 3).count(), 0);
    }

    #[test]
    fn ids_depend_on_turn_prefix_and_index_only() {
        let reply: Reply = serde_json::from_str(r#"{"text": "hi"}"#).unwrap();
        let turn = Turn::new(&reply, &Value::Null, 2, 1);
        let id = turn.id("call_", 0, 24, ALPHANUMERIC);
        assert_eq!(id.len(), "call_".len() + 24);
        assert!(id.starts_with("call_"));
        assert_eq!(id, turn.id("call_", 0, 24, ALPHANUMERIC));
        assert_ne!(id, turn.id("call_", 1, 24, ALPHANUMERIC));
        assert_ne!(
            id,
            Turn::new(&reply, &Value::Null, 2, 2).id("call_", 0, 24, ALPHANUMERIC)
        );
    }
}
