//! The replay server over real HTTP, its streams read back with sandcell-llm's decoders.

use axum::body::Bytes;
use futures_util::StreamExt;
use sandcell_llm::{
    AssembleError, Assembler, AssistantTurn, ChatEvent, DecodeError, Decoder, FinishReason,
    Protocol, ProviderError,
};
use sandcell_llm_replay::{ReplayError, ReplayServer, Script};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const PROTOCOLS: [(Protocol, &str); 4] = [
    (Protocol::OpenAiChat, "/v1/chat/completions"),
    (Protocol::OpenAiResponses, "/v1/responses"),
    (Protocol::Anthropic, "/v1/messages"),
    (Protocol::Ollama, "/api/chat"),
];

const FIRST_CODE: &str = "print(1)";
/// Quotes, a newline and non-ASCII characters, which the arguments' JSON must escape.
const SECOND_CODE: &str = "import math\nprint(\"π ≈\", round(math.pi, 2))";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sandcell-llm/tests/fixtures")
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).unwrap()
}

async fn start(script: Value) -> ReplayServer {
    let script: Script = serde_json::from_value(script).unwrap();
    ReplayServer::start(script, fixtures()).await.unwrap()
}

async fn post(server: &ReplayServer, path: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}{path}", server.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn content_type(response: &reqwest::Response) -> &str {
    response.headers()["content-type"].to_str().unwrap()
}

/// The body's chunks as they arrived, and the transport error that ended it, if any.
async fn receive(response: reqwest::Response) -> (Vec<Bytes>, Option<reqwest::Error>) {
    let mut body = response.bytes_stream();
    let mut chunks = Vec::new();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) => chunks.push(chunk),
            Err(error) => return (chunks, Some(error)),
        }
    }
    (chunks, None)
}

/// The events of `chunks`; `ended` says whether the body ended cleanly, which is when a
/// client calls [`Decoder::finish`].
fn decode(
    protocol: Protocol,
    chunks: &[Bytes],
    ended: bool,
) -> Result<Vec<ChatEvent>, DecodeError> {
    let mut decoder = Decoder::new(protocol);
    let mut events = Vec::new();
    for chunk in chunks {
        events.extend(decoder.feed(chunk)?);
    }
    if ended {
        events.extend(decoder.finish()?);
    }
    Ok(events)
}

fn assemble(events: &[ChatEvent]) -> Result<AssistantTurn, AssembleError> {
    let mut assembler = Assembler::new();
    for event in events {
        assembler.push(event.clone())?;
    }
    assembler.finish()
}

/// A whole streamed turn, read as a client reads it.
async fn turn_of(
    protocol: Protocol,
    response: reqwest::Response,
) -> (AssistantTurn, Vec<ChatEvent>) {
    assert_eq!(response.status(), 200);
    let (chunks, error) = receive(response).await;
    assert!(error.is_none(), "{error:?}");
    let events = decode(protocol, &chunks, true).unwrap();
    (assemble(&events).unwrap(), events)
}

/// How many argument deltas each tool call (by index) arrived in.
fn argument_deltas(events: &[ChatEvent]) -> BTreeMap<usize, usize> {
    let mut deltas = BTreeMap::new();
    for event in events {
        if let ChatEvent::ToolCallArgumentsDelta { index, .. } = event {
            *deltas.entry(*index).or_default() += 1;
        }
    }
    deltas
}

/// A turn with text and two calls, then one with text only, in `protocol`'s wire format.
async fn check_generated(protocol: Protocol, path: &str, call_id_prefix: &str) {
    let server = start(json!([
        {
            "reply": {
                "text": "Let me run two cells.",
                "tool_calls": [{"code": FIRST_CODE}, {"code": SECOND_CODE}],
            },
            "expect_path": path,
        },
        {"reply": {"text": "π is about 3.14."}, "expect_path": path, "chunk_delay_ms": 1},
    ]))
    .await;
    let request =
        json!({"model": "test-model", "stream": true, "stream_options": {"include_usage": true}});

    let response = post(&server, path, request.clone()).await;
    let expected_type = match protocol {
        Protocol::Ollama => "application/x-ndjson",
        _ => "text/event-stream",
    };
    assert_eq!(content_type(&response), expected_type);
    let (turn, events) = turn_of(protocol, response).await;
    assert_eq!(turn.text, "Let me run two cells.");
    assert_eq!(turn.finish_reason, FinishReason::ToolCalls);
    let arguments: Vec<&str> = turn
        .tool_calls
        .iter()
        .map(|call| call.arguments.as_str())
        .collect();
    assert_eq!(
        arguments,
        [
            json!({"code": FIRST_CODE}).to_string(),
            json!({"code": SECOND_CODE}).to_string()
        ]
    );
    for call in &turn.tool_calls {
        assert_eq!(call.name, "python");
        assert!(call.id.starts_with(call_id_prefix), "{}", call.id);
        assert!(call.id.len() > call_id_prefix.len() + 4, "{}", call.id);
    }
    assert_ne!(turn.tool_calls[0].id, turn.tool_calls[1].id);
    let usage = turn.usage.unwrap();
    assert!(
        usage.input_tokens > 0 && usage.output_tokens > 0,
        "{usage:?}"
    );
    let text_deltas = events
        .iter()
        .filter(|event| matches!(event, ChatEvent::TextDelta(_)))
        .count();
    assert!(text_deltas > 1, "{events:?}");
    let deltas = argument_deltas(&events);
    assert_eq!(deltas.len(), 2, "{events:?}");
    if protocol == Protocol::Ollama {
        // Ollama sends each call whole.
        assert!(deltas.values().all(|&count| count == 1), "{deltas:?}");
    } else {
        assert!(deltas.values().all(|&count| count > 1), "{deltas:?}");
    }

    let (turn, _) = turn_of(protocol, post(&server, path, request).await).await;
    assert_eq!(turn.text, "π is about 3.14.");
    assert!(turn.tool_calls.is_empty());
    assert_eq!(turn.finish_reason, FinishReason::Stop);

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|request| request.path == path));
}

#[tokio::test]
async fn openai_chat_generated_turns() {
    check_generated(Protocol::OpenAiChat, "/v1/chat/completions", "call_").await;
}

#[tokio::test]
async fn openai_responses_generated_turns() {
    check_generated(Protocol::OpenAiResponses, "/v1/responses", "call_").await;
}

#[tokio::test]
async fn anthropic_generated_turns() {
    check_generated(Protocol::Anthropic, "/v1/messages", "toolu_01").await;
}

#[tokio::test]
async fn ollama_generated_turns() {
    check_generated(Protocol::Ollama, "/api/chat", "call_").await;
}

#[tokio::test]
async fn openai_chat_sends_usage_only_when_asked() {
    let server = start(json!([{"reply": {"text": "Hi."}}])).await;
    let response = post(&server, "/v1/chat/completions", json!({"stream": true})).await;
    let (chunks, error) = receive(response).await;
    assert!(error.is_none());
    let body: Vec<u8> = chunks.concat();
    assert!(!String::from_utf8(body.clone()).unwrap().contains("usage"));
    let events = decode(Protocol::OpenAiChat, &[Bytes::from(body)], true).unwrap();
    let turn = assemble(&events).unwrap();
    assert_eq!((turn.text.as_str(), turn.usage), ("Hi.", None));
}

#[tokio::test]
async fn fixtures_are_replayed_byte_for_byte() {
    let cases = [
        (
            "/v1/chat/completions",
            "openai-chat-stream-tool-call-single.sse",
            "text/event-stream",
        ),
        (
            "/api/chat",
            "ollama-chat-stream-tool-calls.ndjson",
            "application/x-ndjson",
        ),
        (
            "/v1/responses",
            "openai-responses-error-400-stream-request.json",
            "application/json",
        ),
        (
            "/v1/messages",
            "anthropic-messages-stream-text-then-tool-use.sse",
            "text/event-stream",
        ),
    ];
    let mut steps: Vec<Value> = cases
        .iter()
        .map(|(path, name, _)| json!({"fixture": name, "expect_path": path}))
        .collect();
    // Sent event by event, over time: still the same bytes.
    steps[3]["chunk_delay_ms"] = json!(1);
    let server = start(Value::Array(steps)).await;
    for (path, name, expected_type) in cases {
        let response = post(&server, path, json!({})).await;
        assert_eq!(response.status(), 200);
        assert_eq!(content_type(&response), expected_type);
        assert_eq!(response.bytes().await.unwrap(), fixture(name), "{name}");
    }
}

#[tokio::test]
async fn error_steps_have_their_status_headers_and_body() {
    let server = start(json!([
        {"status": 429, "headers": {"retry-after": "1"}, "fixture": "anthropic-error-429-rate-limit.json"},
        {"status": 500, "body": "upstream exploded"},
        {"status": 503, "body": {"error": {"type": "overloaded_error", "message": "Overloaded"}}},
    ]))
    .await;

    let response = post(&server, "/v1/messages", json!({})).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(content_type(&response), "application/json");
    let body = response.bytes().await.unwrap();
    assert_eq!(body, fixture("anthropic-error-429-rate-limit.json"));
    let error = ProviderError::from_body(Some(429), &body);
    assert_eq!(error.kind.as_deref(), Some("rate_limit_error"));

    let response = post(&server, "/v1/messages", json!({})).await;
    assert_eq!(response.status(), 500);
    assert_eq!(content_type(&response), "text/plain; charset=utf-8");
    assert_eq!(response.text().await.unwrap(), "upstream exploded");

    let response = post(&server, "/v1/messages", json!({})).await;
    assert_eq!(response.status(), 503);
    assert_eq!(content_type(&response), "application/json");
    let error = ProviderError::from_body(Some(503), &response.bytes().await.unwrap());
    assert_eq!(error.kind.as_deref(), Some("overloaded_error"));
    assert_eq!(error.message, "Overloaded");
}

#[tokio::test]
async fn a_cut_stream_ends_abnormally_after_its_bytes() {
    for (protocol, path) in PROTOCOLS {
        let server = start(json!([{
            "reply": {
                "text": "This answer will not be finished.",
                "tool_calls": [{"code": FIRST_CODE}, {"code": SECOND_CODE}],
            },
            "cut_after_bytes": 300,
        }]))
        .await;
        let response = post(&server, path, json!({})).await;
        assert_eq!(response.status(), 200);
        let (chunks, error) = receive(response).await;
        assert_eq!(chunks.concat().len(), 300, "{protocol}");
        assert!(error.is_some(), "{protocol}: the body ended cleanly");
        let events = decode(protocol, &chunks, false).unwrap();
        assert!(
            matches!(assemble(&events), Err(AssembleError::Incomplete)),
            "{protocol}: {events:?}"
        );
    }
}

#[tokio::test]
async fn a_malformed_stream_fails_to_decode() {
    for (protocol, path) in PROTOCOLS {
        let server = start(json!([{"malformed": true}])).await;
        let response = post(&server, path, json!({})).await;
        assert_eq!(response.status(), 200);
        let (chunks, error) = receive(response).await;
        assert!(error.is_none());
        let result = decode(protocol, &chunks, true);
        assert!(
            matches!(result, Err(DecodeError::Payload { .. })),
            "{protocol}: {result:?}"
        );
    }
}

#[tokio::test]
async fn requests_are_recorded() {
    let server = start(json!([
        {"status": 200, "body": {}},
        {"status": 200, "body": {}},
    ]))
    .await;
    let image = json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}});
    let first_body = json!({"model": "m", "messages": [{"role": "user", "content": [image]}]});
    let client = reqwest::Client::new();
    client
        .post(format!("{}/v1/messages", server.base_url()))
        .header("X-Api-Key", "test-key")
        .json(&first_body)
        .send()
        .await
        .unwrap();
    client
        .post(format!("{}/api/chat?stream=true", server.base_url()))
        .body("not JSON")
        .send()
        .await
        .unwrap();

    let listed: Value = client
        .get(format!("{}/_requests", server.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let requests = server.requests();
    assert_eq!(listed, serde_json::to_value(&requests).unwrap());
    assert_eq!(requests.len(), 2, "{listed}");
    assert_eq!(requests[0].path, "/v1/messages");
    assert_eq!(requests[0].headers["x-api-key"], "test-key");
    assert_eq!(requests[0].headers["content-type"], "application/json");
    assert_eq!(requests[0].body, first_body);
    assert_eq!(requests[1].path, "/api/chat");
    assert_eq!(requests[1].body, json!("not JSON"));
    assert_eq!(
        listed[0].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["body", "headers", "path"]
    );
}

#[tokio::test]
async fn an_exhausted_script_answers_500() {
    let server = start(json!([{"status": 200, "body": "only one"}])).await;
    assert_eq!(
        post(&server, "/v1/responses", json!({})).await.status(),
        200
    );
    let response = post(&server, "/v1/responses", json!({})).await;
    assert_eq!(response.status(), 500);
    assert_eq!(content_type(&response), "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": {"message": "the replay script has no step left for this request"}})
    );
}

#[tokio::test]
async fn a_request_to_the_wrong_path_fails_loudly() {
    let server = start(json!([
        {"reply": {"text": "Hi"}, "expect_path": "/v1/messages"},
        {"reply": {"text": "Hi"}},
    ]))
    .await;
    let response = post(&server, "/api/chat", json!({})).await;
    assert_eq!(response.status(), 400);
    let error = ProviderError::from_body(Some(400), &response.bytes().await.unwrap());
    assert!(error.message.contains("/v1/messages"), "{error}");

    // A generated reply needs a protocol's path.
    let response = post(&server, "/v1/completions", json!({})).await;
    assert_eq!(response.status(), 404);
    let error = ProviderError::from_body(Some(404), &response.bytes().await.unwrap());
    assert!(error.message.contains("/v1/completions"), "{error}");
}

#[tokio::test]
async fn a_delayed_answer_outlasts_a_short_client_timeout() {
    let server = start(json!([{"delay_ms": 5000, "reply": {"text": "Too late."}}])).await;
    let result = reqwest::Client::new()
        .post(format!("{}/v1/messages", server.base_url()))
        .json(&json!({}))
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(
        result.as_ref().is_err_and(|error| error.is_timeout()),
        "{result:?}"
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn bad_scripts_are_refused() {
    for (step, problem) in [
        (
            json!({"reply": {"text": "a"}, "fixture": "b.json"}),
            "two answers",
        ),
        (json!({"status": 500}), "no answer"),
        (json!({"malformed": false}), "no answer"),
        (
            json!({"reply": {"text": "a", "chunk_size": 0}}),
            "a zero chunk size",
        ),
        (
            json!({"reply": {"text": "a"}, "delay": 5}),
            "an unknown key",
        ),
        (json!({"reply": {"txt": "a"}}), "an unknown reply key"),
    ] {
        let result = serde_json::from_value::<Script>(json!([step]));
        assert!(result.is_err(), "a step with {problem} was accepted");
    }

    let script = |steps: Value| serde_json::from_value::<Script>(steps).unwrap();
    let missing = script(json!([{"body": ""}, {"fixture": "no-such-fixture.sse"}]));
    let error = ReplayServer::start(missing, fixtures()).await.unwrap_err();
    assert!(
        matches!(error, ReplayError::Fixture { step: 2, .. }),
        "{error}"
    );
    let bad_status = script(json!([{"status": 1000, "body": ""}]));
    let error = ReplayServer::start(bad_status, fixtures())
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            ReplayError::Status {
                step: 1,
                status: 1000
            }
        ),
        "{error}"
    );
    let bad_header = script(json!([{"headers": {"bad name": "x"}, "body": ""}]));
    let error = ReplayServer::start(bad_header, fixtures())
        .await
        .unwrap_err();
    assert!(
        matches!(error, ReplayError::Header { step: 1, .. }),
        "{error}"
    );
}

fn replay_binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sandcell-llm-replay"))
}

/// The server process, killed however the test ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_prints_its_address_and_serves() {
    let script = Path::new(env!("CARGO_TARGET_TMPDIR")).join("replay-binary-script.json");
    let steps = json!([
        {"reply": {"text": "From a process.", "tool_calls": [{"code": FIRST_CODE}]}},
        {"fixture": "ollama-error.json", "status": 500},
    ]);
    std::fs::write(&script, steps.to_string()).unwrap();
    let mut child = Running(
        replay_binary()
            .arg("--script")
            .arg(&script)
            .arg(format!("--fixtures={}", fixtures().display()))
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base_url = line
        .strip_suffix('\n')
        .and_then(|line| line.strip_prefix("listening on "))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    assert!(base_url.starts_with("http://127.0.0.1:"), "{base_url}");

    let client = reqwest::Client::new();
    let response = client
        .post(format!("{base_url}/v1/messages"))
        .json(&json!({"model": "m"}))
        .send()
        .await
        .unwrap();
    let (turn, _) = turn_of(Protocol::Anthropic, response).await;
    assert_eq!(turn.text, "From a process.");
    assert_eq!(turn.tool_calls.len(), 1);
    let response = client
        .post(format!("{base_url}/api/chat"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(
        response.bytes().await.unwrap(),
        fixture("ollama-error.json")
    );
    let requests: Vec<Value> = client
        .get(format!("{base_url}/_requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(requests.len(), 2);
}

#[test]
fn the_binary_refuses_bad_arguments_with_one_sentence() {
    let missing = Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-such-script.json");
    for arguments in [
        vec!["--bogus".to_owned()],
        vec![],
        vec!["--script".to_owned()],
        vec!["--script".to_owned(), missing.display().to_string()],
        vec!["--script=x.json".to_owned(), "--listen=nowhere".to_owned()],
    ] {
        let output = replay_binary().args(&arguments).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{arguments:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{arguments:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{arguments:?}");
    }
}
