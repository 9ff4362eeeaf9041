//! Every recorded error body, read into one `ProviderError`.

use sandcell_llm::ProviderError;

fn read(name: &str, status: u16) -> ProviderError {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    ProviderError::from_body(Some(status), &std::fs::read(path).unwrap())
}

#[test]
fn openai_chat_400() {
    let error = read(
        "openai-chat-error-400-invalid-function-parameters.json",
        400,
    );
    assert_eq!(error.status, Some(400));
    assert_eq!(error.kind.as_deref(), Some("invalid_request_error"));
    assert_eq!(
        error.message,
        "Invalid schema for function 'get_favorite_color_for_day_of_week': In context=(), \
         'additionalProperties' is required to be supplied and to be false."
    );
    assert_eq!(
        error.to_string(),
        "the provider answered HTTP 400 (invalid_request_error): Invalid schema for function \
         'get_favorite_color_for_day_of_week': In context=(), 'additionalProperties' is \
         required to be supplied and to be false."
    );
}

#[test]
fn openai_responses_400_to_a_stream_request() {
    let error = read("openai-responses-error-400-stream-request.json", 400);
    assert_eq!(error.kind.as_deref(), Some("invalid_request_error"));
    assert_eq!(
        error.message,
        "Invalid 'temperature': decimal below minimum value. Expected a value >= 0, but got -1 instead."
    );
}

#[test]
fn anthropic_429() {
    let error = read("anthropic-error-429-rate-limit.json", 429);
    assert_eq!(error.status, Some(429));
    assert_eq!(error.kind.as_deref(), Some("rate_limit_error"));
    assert!(error
        .message
        .starts_with("This request would exceed your organization's rate limit of 20,000,000"));
    assert!(error
        .to_string()
        .starts_with("the provider answered HTTP 429 (rate_limit_error): This request"));
}

#[test]
fn anthropic_400() {
    let error = read("anthropic-error-400-invalid-request.json", 400);
    assert_eq!(error.kind.as_deref(), Some("invalid_request_error"));
    assert!(error
        .message
        .starts_with("messages.0.content.1: unexpected `tool_use_id` found in `tool_result`"));
}

#[test]
fn ollama_error() {
    let error = read("ollama-error.json", 500);
    assert_eq!(
        error,
        ProviderError {
            status: Some(500),
            kind: None,
            message: "the model failed to generate a response".to_owned(),
        }
    );
    assert_eq!(
        error.to_string(),
        "the provider answered HTTP 500: the model failed to generate a response"
    );
}

#[test]
fn a_body_in_no_known_shape_is_kept_as_the_message() {
    let error = ProviderError::from_body(Some(502), b"<html>Bad Gateway</html>\n");
    assert_eq!(error.kind, None);
    assert_eq!(error.message, "<html>Bad Gateway</html>");
}
