//! Turning a streamed response body, in chunks of any size, into [`ChatEvent`]s.

use crate::event::ChatEvent;
use crate::lines::LineSplitter;
use crate::protocol::Protocol;
use crate::sse::SseParser;
use crate::{anthropic, ollama, openai_chat, openai_responses};

/// The streamed body did not follow its protocol.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the response stream is not valid UTF-8: {0}")]
    Utf8(#[from] std::str::Utf8Error),
    #[error("the {protocol} stream sent a message it does not document ({source}): {payload}")]
    Payload {
        protocol: Protocol,
        payload: String,
        source: serde_json::Error,
    },
}

/// An incremental decoder of one response stream.
///
/// Feed it the body's bytes as they arrive with [`Decoder::feed`], then call
/// [`Decoder::finish`] once the body has ended.
#[derive(Debug)]
pub struct Decoder {
    protocol: Protocol,
    framing: Framing,
    stream: Stream,
}

/// How the body is cut into messages.
#[derive(Debug)]
enum Framing {
    Sse(SseParser),
    Ndjson(LineSplitter),
}

/// What a protocol remembers between messages.
#[derive(Debug)]
enum Stream {
    OpenAiChat(openai_chat::Stream),
    OpenAiResponses(openai_responses::Stream),
    Anthropic(anthropic::Stream),
    Ollama(ollama::Stream),
}

impl Decoder {
    pub fn new(protocol: Protocol) -> Self {
        let (framing, stream) = match protocol {
            Protocol::OpenAiChat => (
                Framing::Sse(SseParser::default()),
                Stream::OpenAiChat(openai_chat::Stream),
            ),
            Protocol::OpenAiResponses => (
                Framing::Sse(SseParser::default()),
                Stream::OpenAiResponses(openai_responses::Stream::default()),
            ),
            Protocol::Anthropic => (
                Framing::Sse(SseParser::default()),
                Stream::Anthropic(anthropic::Stream::default()),
            ),
            Protocol::Ollama => (
                Framing::Ndjson(LineSplitter::default()),
                Stream::Ollama(ollama::Stream::default()),
            ),
        };
        Decoder {
            protocol,
            framing,
            stream,
        }
    }

    /// Decodes the next bytes of the body; they may end anywhere, even inside a character.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<ChatEvent>, DecodeError> {
        let mut events = Vec::new();
        let (protocol, stream) = (self.protocol, &mut self.stream);
        let on_message = |message: &str| stream.message(protocol, message, &mut events);
        match &mut self.framing {
            Framing::Sse(parser) => parser.push(bytes, on_message),
            Framing::Ndjson(lines) => lines.push(bytes, on_message),
        }?;
        Ok(events)
    }

    /// Decodes what the body's end completes: an NDJSON line without its final newline.
    /// (An SSE event without its blank line is incomplete and dropped.)
    pub fn finish(&mut self) -> Result<Vec<ChatEvent>, DecodeError> {
        let mut events = Vec::new();
        if let Framing::Ndjson(lines) = &mut self.framing {
            let (protocol, stream) = (self.protocol, &mut self.stream);
            lines.finish(|message| stream.message(protocol, message, &mut events))?;
        }
        Ok(events)
    }
}

impl Stream {
    fn message(
        &mut self,
        protocol: Protocol,
        message: &str,
        out: &mut Vec<ChatEvent>,
    ) -> Result<(), DecodeError> {
        // Blank NDJSON lines and empty SSE data carry nothing.
        if message.trim().is_empty() {
            return Ok(());
        }
        match self {
            Stream::OpenAiChat(stream) => stream.payload(message, out),
            Stream::OpenAiResponses(stream) => stream.payload(message, out),
            Stream::Anthropic(stream) => stream.payload(message, out),
            Stream::Ollama(stream) => stream.payload(message, out),
        }
        .map_err(|source| DecodeError::Payload {
            protocol,
            payload: message.to_owned(),
            source,
        })
    }
}
