//! Every recorded stream, fed whole and in tiny chunks, assembled into its turn.

use sandcell_llm::{
    AssembleError, Assembler, AssistantTurn, ChatEvent, Decoder, FinishReason, Protocol, ToolCall,
    Usage,
};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// The events of a whole body fed in chunks of `chunk_size` bytes (0: in one piece).
fn decode(protocol: Protocol, body: &[u8], chunk_size: usize) -> Vec<ChatEvent> {
    let mut decoder = Decoder::new(protocol);
    let mut events = Vec::new();
    let chunks: Vec<&[u8]> = if chunk_size == 0 {
        vec![body]
    } else {
        body.chunks(chunk_size).collect()
    };
    for chunk in chunks {
        events.extend(decoder.feed(chunk).unwrap());
    }
    events.extend(decoder.finish().unwrap());
    events
}

fn assemble(events: Vec<ChatEvent>) -> Result<AssistantTurn, AssembleError> {
    let mut assembler = Assembler::new();
    for event in events {
        assembler.push(event)?;
    }
    assembler.finish()
}

/// Asserts that `name` makes `expected` whether fed whole or in 1, 3 and 7 byte chunks,
/// and that chunking changes nothing but how text deltas are cut.
fn check(protocol: Protocol, name: &str, expected: AssistantTurn) {
    let body = fixture(name);
    let whole = decode(protocol, &body, 0);
    for chunk_size in [0, 1, 3, 7] {
        let events = decode(protocol, &body, chunk_size);
        assert_eq!(events, whole, "{name} in chunks of {chunk_size}");
        let turn = assemble(events).unwrap();
        assert_eq!(turn, expected, "{name} in chunks of {chunk_size}");
    }
    for call in &expected.tool_calls {
        assert!(call.input().unwrap().is_object(), "{name}: {call:?}");
    }
}

fn call(id: &str, name: &str, arguments: &str) -> ToolCall {
    ToolCall {
        id: id.to_owned(),
        name: name.to_owned(),
        arguments: arguments.to_owned(),
    }
}

fn turn(
    text: &str,
    tool_calls: Vec<ToolCall>,
    (input_tokens, output_tokens): (u64, u64),
    finish_reason: FinishReason,
) -> AssistantTurn {
    AssistantTurn {
        text: text.to_owned(),
        tool_calls,
        usage: Some(Usage {
            input_tokens,
            output_tokens,
        }),
        finish_reason,
    }
}

#[test]
fn openai_chat_parallel_tool_calls() {
    check(
        Protocol::OpenAiChat,
        "openai-chat-stream-tool-calls-parallel.sse",
        turn(
            "",
            vec![
                call(
                    "call_JMW1whyEaYG438VE1OIflxA2",
                    "GetWeatherArgs",
                    r#"{"city": "Edinburgh", "country": "GB", "units": "c"}"#,
                ),
                call(
                    "call_DNYTawLBoN8fj3KN6qU9N1Ou",
                    "get_stock_price",
                    r#"{"ticker": "AAPL", "exchange": "NASDAQ"}"#,
                ),
            ],
            (149, 60),
            FinishReason::ToolCalls,
        ),
    );
}

#[test]
fn openai_chat_single_tool_call() {
    check(
        Protocol::OpenAiChat,
        "openai-chat-stream-tool-call-single.sse",
        turn(
            "",
            vec![call(
                "call_CTf1nWJLqSeRgDqaCG27xZ74",
                "get_weather",
                r#"{"city":"San Francisco","state":"CA"}"#,
            )],
            (48, 19),
            FinishReason::ToolCalls,
        ),
    );
}

#[test]
fn openai_chat_tool_call_2026_format() {
    check(
        Protocol::OpenAiChat,
        "openai-chat-stream-tool-call-2026.sse",
        turn(
            "",
            vec![call(
                "call_ZR5UUuTt3pf61kjwAJIYdVMj",
                "get_capital",
                r#"{"country":"UK"}"#,
            )],
            (53, 15),
            FinishReason::ToolCalls,
        ),
    );
}

#[test]
fn openai_chat_parallel_empty_arguments_with_shuffled_keys() {
    check(
        Protocol::OpenAiChat,
        "openai-chat-stream-parallel-tool-calls-2025.sse",
        turn(
            "",
            vec![
                call("call_q2UyBRP7eXNTzAoR8lEhjc9Z", "get_country", "{}"),
                call("call_b51ijcpFkDiTQG1bQzsrmtW5", "get_product_name", "{}"),
            ],
            (364, 40),
            FinishReason::ToolCalls,
        ),
    );
}

#[test]
fn openai_chat_text_with_usage() {
    check(
        Protocol::OpenAiChat,
        "openai-chat-stream-text-usage.sse",
        turn(
            "I'm unable to provide real-time weather updates. To get the current weather in San \
             Francisco, I recommend checking a reliable weather website or a weather app.",
            vec![],
            (14, 30),
            FinishReason::Stop,
        ),
    );
}

#[test]
fn openai_chat_text_with_usage_2026_format() {
    check(
        Protocol::OpenAiChat,
        "openai-chat-stream-text-usage-2026.sse",
        turn(
            "The capital of the UK is London.",
            vec![],
            (78, 9),
            FinishReason::Stop,
        ),
    );
}

#[test]
fn openai_responses_function_call() {
    check(
        Protocol::OpenAiResponses,
        "openai-responses-stream-function-call.sse",
        turn(
            "",
            vec![call(
                "call_kL0PCQV7M2WMoVX8V8OtYSAL",
                "get_capital",
                r#"{"country":"France"}"#,
            )],
            (255, 16),
            FinishReason::ToolCalls,
        ),
    );
}

#[test]
fn openai_responses_text() {
    check(
        Protocol::OpenAiResponses,
        "openai-responses-stream-text.sse",
        turn(
            "The capital of France is Paris.",
            vec![],
            (278, 9),
            FinishReason::Stop,
        ),
    );
}

#[test]
fn openai_responses_reasoning_is_skipped() {
    check(
        Protocol::OpenAiResponses,
        "openai-responses-stream-reasoning-function-call.sse",
        turn(
            "",
            vec![call(
                "call_CWXgs68YprAjp6t0371hiPOI",
                "final_result",
                r#"{"result":6666}"#,
            )],
            (53, 469),
            FinishReason::ToolCalls,
        ),
    );
}

#[test]
fn openai_responses_text_then_function_call() {
    check(
        Protocol::OpenAiResponses,
        "openai-responses-stream-text-then-function-call.sse",
        turn(
            "I’ll check the capital lookup tool for “PotatoLand.”",
            vec![call(
                "call_LabG58Uhrq9kZvR52BYKjToD",
                "get_capital",
                r#"{"country":"PotatoLand"}"#,
            )],
            (63, 69),
            FinishReason::ToolCalls,
        ),
    );
}

#[test]
fn anthropic_tool_use() {
    check(
        Protocol::Anthropic,
        "anthropic-messages-stream-tool-use.sse",
        turn(
            "",
            vec![call(
                "toolu_018acGYLtfR52q9yDbWaEdQZ",
                "get_weather",
                r#"{"location": "San Francisco, CA", "units": "f"}"#,
            )],
            (656, 74),
            FinishReason::ToolCalls,
        ),
    );
}

#[test]
fn anthropic_text_after_tool_result() {
    check(
        Protocol::Anthropic,
        "anthropic-messages-stream-text-after-tool-result.sse",
        turn(
            "The weather in San Francisco, CA is currently:\n- **Temperature:** 68°F\n- \
             **Condition:** Sunny\n\nIt's a nice sunny day!",
            vec![],
            (770, 38),
            FinishReason::Stop,
        ),
    );
}

#[test]
fn anthropic_text_then_tool_use() {
    // The final `message_delta` of this older stream has no input count: it comes from
    // `message_start`.
    check(
        Protocol::Anthropic,
        "anthropic-messages-stream-text-then-tool-use.sse",
        turn(
            "I'll check the current weather in Paris for you.",
            vec![call(
                "toolu_01NRLabsLyVHZPKxbKvkfSMn",
                "get_weather",
                r#"{"location": "Paris"}"#,
            )],
            (377, 65),
            FinishReason::ToolCalls,
        ),
    );
}

#[test]
fn ollama_tool_calls_arrive_whole() {
    // Ollama (before late 2025) sends no call id; the decoder numbers the calls.
    check(
        Protocol::Ollama,
        "ollama-chat-stream-tool-calls.ndjson",
        turn(
            "",
            vec![call("call_0", "get_weather", r#"{"city":"Tokyo"}"#)],
            (169, 15),
            FinishReason::ToolCalls,
        ),
    );
}

#[test]
fn ollama_newer_tool_call_shape() {
    // Since v0.12.6 calls carry `function.index`, and later an `id`.
    let body = concat!(
        r#"{"model":"qwen3","created_at":"2025-11-05T10:00:00Z","message":{"role":"assistant","content":"","tool_calls":[{"id":"call_abc","function":{"index":0,"name":"python","arguments":{"code":"print(1)"}}}]},"done":false}"#,
        "\n",
        r#"{"model":"qwen3","created_at":"2025-11-05T10:00:01Z","message":{"role":"assistant","content":""},"done_reason":"stop","done":true,"prompt_eval_count":10,"eval_count":5}"#,
    ); // No final newline: `finish` still reads the last line.
    let turn_ = assemble(decode(Protocol::Ollama, body.as_bytes(), 3)).unwrap();
    assert_eq!(
        turn_,
        turn(
            "",
            vec![call("call_abc", "python", r#"{"code":"print(1)"}"#)],
            (10, 5),
            FinishReason::ToolCalls,
        )
    );
}

#[test]
fn ollama_midstream_error() {
    let body = fixture("ollama-generate-stream-midstream-error.ndjson");
    for chunk_size in [0, 1, 3, 7] {
        let events = decode(Protocol::Ollama, &body, chunk_size);
        let Some(ChatEvent::Error(error)) = events.last() else {
            panic!("no error at the end: {events:?}");
        };
        assert_eq!(error.status, None);
        assert_eq!(error.kind, None);
        assert_eq!(
            error.message,
            "an error was encountered while running the model"
        );
        let AssembleError::Provider(assembled) = assemble(events.clone()).unwrap_err() else {
            panic!("the provider error is not what assembling reports");
        };
        assert_eq!(&assembled, error);
    }
}

#[test]
fn anthropic_midstream_error_event() {
    // No recording exists; this is the shape of Anthropic's documented `error` event.
    let body = "event: ping\ndata: {\"type\": \"ping\"}\n\nevent: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n";
    let events = decode(Protocol::Anthropic, body.as_bytes(), 5);
    let [ChatEvent::Error(error)] = events.as_slice() else {
        panic!("{events:?}");
    };
    assert_eq!(error.kind.as_deref(), Some("overloaded_error"));
    assert_eq!(
        error.to_string(),
        "the provider reported an error mid-stream (overloaded_error): Overloaded"
    );
}

#[test]
fn a_cut_stream_is_incomplete() {
    let body = fixture("openai-chat-stream-tool-call-single.sse");
    let events = decode(Protocol::OpenAiChat, &body[..body.len() / 2], 0);
    assert!(matches!(assemble(events), Err(AssembleError::Incomplete)));
}

#[test]
fn invalid_arguments_are_reported_with_the_call() {
    let events = vec![
        ChatEvent::ToolCallStart {
            index: 0,
            id: "call_1".to_owned(),
            name: "python".to_owned(),
        },
        ChatEvent::ToolCallArgumentsDelta {
            index: 0,
            delta: r#"{"code": "print(1)""#.to_owned(),
        },
        ChatEvent::Finished {
            reason: FinishReason::ToolCalls,
        },
    ];
    let error = assemble(events).unwrap_err();
    assert!(matches!(error, AssembleError::InvalidToolArguments(_)));
    let message = error.to_string();
    assert!(
        message.starts_with("the model wrote arguments for tool call call_1 (python)"),
        "{message}"
    );
}

#[test]
fn crlf_line_endings_split_anywhere() {
    let body = "data: {\"choices\":[{\"delta\":{\"content\":\"h\u{e9}\"},\"finish_reason\":null}]}\r\n\r\ndata: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\r\n\r\ndata: [DONE]\r\n\r\n";
    for chunk_size in [1, 2, 3] {
        let turn_ = assemble(decode(Protocol::OpenAiChat, body.as_bytes(), chunk_size)).unwrap();
        assert_eq!(turn_.text, "hé");
        assert_eq!(turn_.finish_reason, FinishReason::Stop);
        assert_eq!(turn_.usage, None);
    }
}

#[test]
fn a_malformed_message_is_an_error() {
    let mut decoder = Decoder::new(Protocol::Anthropic);
    let error = decoder.feed(b"data: {\"type\":\n\n").unwrap_err();
    assert!(error
        .to_string()
        .starts_with("the Anthropic Messages stream sent a message it does not document"));
}
