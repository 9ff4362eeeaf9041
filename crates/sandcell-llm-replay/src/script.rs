//! The script: what each request gets back, in order.

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

/// The steps a server answers with, one per `POST`, in order.
///
/// In JSON, a list of steps:
///
/// ```json
/// [
///   {"reply": {"text": "Let me compute that.", "tool_calls": [{"code": "print(6 * 7)"}]}},
///   {"reply": {"text": "It is 42."}, "expect_path": "/v1/messages"},
///   {"status": 429, "headers": {"retry-after": "1"}, "fixture": "anthropic-error-429-rate-limit.json"},
///   {"reply": {"text": "Cut short"}, "cut_after_bytes": 300},
///   {"malformed": true},
///   {"status": 500, "body": {"error": {"message": "boom"}}}
/// ]
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Script {
    pub steps: Vec<Step>,
}

/// One answer to one request.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "StepJson")]
pub struct Step {
    pub answer: Answer,
    /// The HTTP status; 200 unless the script says otherwise.
    pub status: u16,
    /// Response headers; they replace the content type the answer implies.
    pub headers: BTreeMap<String, String>,
    /// How long to wait before answering at all.
    pub delay_ms: u64,
    /// How long to wait between two chunks of the body.
    pub chunk_delay_ms: u64,
    /// Send at most this many bytes of the body, then drop the connection.
    pub cut_after_bytes: Option<usize>,
    /// The request must have hit this path; any other gets a 400 naming it.
    pub expect_path: Option<String>,
}

/// What the body of an answer is.
#[derive(Debug, Clone)]
pub enum Answer {
    /// A streamed turn generated in the wire format of the path that was hit.
    Reply(Reply),
    /// A recorded body, by file name in the fixture directory, sent byte for byte.
    Fixture(String),
    /// An inline body: a string is sent as text, any other value as JSON.
    Body(Value),
    /// A stream, in the framing of the path that was hit, carrying invalid JSON.
    Malformed,
}

/// A generated assistant turn: its text, then its calls to the `python` tool.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub tool_calls: Vec<PythonCall>,
    /// The length, in characters, of each text delta and each piece of a call's
    /// arguments (8 unless set): small, so that arguments really arrive in many pieces.
    /// Ollama sends calls whole, so there it cuts only the text.
    #[serde(default = "default_chunk_size")]
    pub chunk_size: NonZeroUsize,
}

/// A call to the `python` tool, whose arguments are `{"code": code}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PythonCall {
    pub code: String,
}

/// A script that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("cannot read the script {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the script {path} is not a valid list of steps: {source}")]
    Invalid {
        path: PathBuf,
        source: serde_json::Error,
    },
}

impl Script {
    pub fn new(steps: Vec<Step>) -> Self {
        Script { steps }
    }

    /// Reads a script from a JSON file.
    pub fn from_file(path: &Path) -> Result<Self, ScriptError> {
        let text = std::fs::read(path).map_err(|source| ScriptError::Read {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_slice(&text).map_err(|source| ScriptError::Invalid {
            path: path.to_owned(),
            source,
        })
    }
}

impl Step {
    /// A step answering with `answer`, status 200, no delay, no fault.
    pub fn new(answer: Answer) -> Self {
        Step {
            answer,
            status: 200,
            headers: BTreeMap::new(),
            delay_ms: 0,
            chunk_delay_ms: 0,
            cut_after_bytes: None,
            expect_path: None,
        }
    }
}

fn default_chunk_size() -> NonZeroUsize {
    // Eight characters.
    NonZeroUsize::MIN.saturating_add(7)
}

/// A step as written in JSON: the answer is whichever one of its keys is present.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepJson {
    reply: Option<Reply>,
    fixture: Option<String>,
    body: Option<Value>,
    #[serde(default)]
    malformed: bool,
    #[serde(default = "ok")]
    status: u16,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    delay_ms: u64,
    #[serde(default)]
    chunk_delay_ms: u64,
    cut_after_bytes: Option<usize>,
    expect_path: Option<String>,
}

fn ok() -> u16 {
    200
}

impl TryFrom<StepJson> for Step {
    type Error = &'static str;

    fn try_from(json: StepJson) -> Result<Self, Self::Error> {
        let answers = [
            json.reply.map(Answer::Reply),
            json.fixture.map(Answer::Fixture),
            json.body.map(Answer::Body),
            json.malformed.then_some(Answer::Malformed),
        ];
        let mut answers = answers.into_iter().flatten();
        let (Some(answer), None) = (answers.next(), answers.next()) else {
            return Err("a step needs exactly one of reply, fixture, body or malformed");
        };
        Ok(Step {
            answer,
            status: json.status,
            headers: json.headers,
            delay_ms: json.delay_ms,
            chunk_delay_ms: json.chunk_delay_ms,
            cut_after_bytes: json.cut_after_bytes,
            expect_path: json.expect_path,
        })
    }
}
