//! Talking to a model over HTTP: one streamed assistant turn per call, retried with
//! backoff when the provider is busy, every failure turned into one clear sentence.

use futures_util::StreamExt;
use reqwest::header::{HeaderMap, CONTENT_TYPE};
use reqwest::StatusCode;
use sandcell_llm::{
    AssembleError, Assembler, AssistantTurn, ChatEvent, Conversation, Decoder, Protocol,
    ProviderError, RequestOptions, Sampling, Tool,
};
use std::time::Duration;

use crate::config::ModelChoice;
use crate::error::{AgentError, ModelError};

/// When and how often a failed request is tried again.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The wait before the second attempt; it doubles each time after.
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// A `Retry-After` longer than this is not waited for: the turn fails and says so.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(20),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// What a turn reports while it streams.
#[derive(Debug)]
pub enum ClientEvent {
    Chat(ChatEvent),
    /// The last attempt failed in a way worth retrying; the next starts after `delay`.
    Retrying {
        attempt: u32,
        delay: Duration,
        reason: String,
    },
}

/// Output tokens one turn may write. Enough for long code; Anthropic requires a limit.
const MAX_OUTPUT_TOKENS: u32 = 8192;
/// How much of an error body is read.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Anthropic's API version header; the Messages API is stable under it.
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// A model to talk to.
#[derive(Debug, Clone)]
pub struct ModelClient {
    http: reqwest::Client,
    choice: ModelChoice,
    retry: RetryPolicy,
    sampling: Sampling,
}

impl ModelClient {
    pub fn new(choice: ModelChoice) -> Result<ModelClient, AgentError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            // Between two chunks of a stream: reasoning models may think for minutes.
            .read_timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| AgentError::Config(format!("cannot set up HTTP: {e}")))?;
        Ok(ModelClient {
            http,
            choice,
            retry: RetryPolicy::default(),
            sampling: Sampling::default(),
        })
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> ModelClient {
        self.retry = retry;
        self
    }

    /// Every request asks the model to sample so (the provider's defaults otherwise).
    pub fn with_sampling(mut self, sampling: Sampling) -> ModelClient {
        self.sampling = sampling;
        self
    }

    pub fn choice(&self) -> &ModelChoice {
        &self.choice
    }

    fn endpoint(&self) -> String {
        let base = &self.choice.provider.base_url;
        match self.choice.provider.protocol {
            Protocol::OpenAiChat => format!("{base}/chat/completions"),
            Protocol::OpenAiResponses => format!("{base}/responses"),
            Protocol::Anthropic => format!("{base}/v1/messages"),
            Protocol::Ollama => format!("{base}/api/chat"),
        }
    }

    fn provider_name(&self) -> String {
        self.choice.provider.name.clone()
    }

    /// The model's next turn in `conversation`, streamed through `on_event`, writing at
    /// most `max_output_tokens` (the client's own cap when `None` or higher).
    pub async fn turn(
        &self,
        conversation: &Conversation,
        tools: &[Tool],
        max_output_tokens: Option<u32>,
        on_event: &mut (dyn FnMut(ClientEvent) + Send),
    ) -> Result<AssistantTurn, ModelError> {
        let options = RequestOptions {
            model: self.choice.model.clone(),
            max_output_tokens: max_output_tokens
                .map_or(MAX_OUTPUT_TOKENS, |asked| asked.min(MAX_OUTPUT_TOKENS)),
            sampling: self.sampling,
        };
        let body = self
            .choice
            .provider
            .protocol
            .request_body(&options, conversation, tools)
            .map_err(|e| ModelError::Malformed {
                provider: self.provider_name(),
                detail: e.to_string(),
            })?;
        let mut attempt = 1;
        loop {
            let failure = match self.request(&body).send().await {
                Ok(response) if response.status().is_success() => {
                    return self.read_stream(response, on_event).await;
                }
                Ok(response) => {
                    let status = response.status();
                    let retry_after = retry_after(response.headers());
                    let body = read_limited(response).await;
                    let error = ProviderError::from_body(Some(status.as_u16()), &body);
                    if !is_retryable(status) {
                        return Err(self.classify(status, error));
                    }
                    Failure {
                        reason: format!("HTTP {}: {}", status.as_u16(), error.message),
                        retry_after,
                    }
                }
                Err(e) if e.is_connect() || e.is_timeout() || e.is_request() => Failure {
                    reason: transport_reason(&e),
                    retry_after: None,
                },
                Err(e) => {
                    return Err(ModelError::Unavailable {
                        provider: self.provider_name(),
                        reason: transport_reason(&e),
                        attempts: attempt,
                    })
                }
            };
            let delay = failure.retry_after.unwrap_or_else(|| self.backoff(attempt));
            if attempt >= self.retry.max_attempts || delay > self.retry.max_retry_after {
                let reason = match failure.retry_after {
                    Some(wait) if wait > self.retry.max_retry_after => format!(
                        "{}; it asks to wait {} s before trying again",
                        failure.reason,
                        wait.as_secs()
                    ),
                    _ => failure.reason,
                };
                return Err(ModelError::Unavailable {
                    provider: self.provider_name(),
                    reason,
                    attempts: attempt,
                });
            }
            tracing::info!(attempt, ?delay, reason = %failure.reason, "retrying the model request");
            on_event(ClientEvent::Retrying {
                attempt,
                delay,
                reason: failure.reason,
            });
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    fn request(&self, body: &serde_json::Value) -> reqwest::RequestBuilder {
        let provider = &self.choice.provider;
        let mut request = self.http.post(self.endpoint()).json(body);
        if let Some(key) = &provider.api_key {
            request = match provider.protocol {
                Protocol::Anthropic => request.header("x-api-key", key),
                _ => request.bearer_auth(key),
            };
        }
        if provider.protocol == Protocol::Anthropic {
            request = request.header("anthropic-version", ANTHROPIC_VERSION);
        }
        request
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.retry
            .first_delay
            .saturating_mul(factor)
            .min(self.retry.max_delay)
    }

    async fn read_stream(
        &self,
        response: reqwest::Response,
        on_event: &mut (dyn FnMut(ClientEvent) + Send),
    ) -> Result<AssistantTurn, ModelError> {
        let provider = self.provider_name();
        let malformed = |detail: String| ModelError::Malformed {
            provider: provider.clone(),
            detail,
        };
        // A JSON body instead of a stream: an error some servers send with status 200.
        let is_json = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if is_json && self.choice.provider.protocol != Protocol::Ollama {
            let body = read_limited(response).await;
            let error = ProviderError::from_body(None, &body);
            return Err(ModelError::MidStream {
                provider,
                message: error.message,
            });
        }
        let mut decoder = Decoder::new(self.choice.provider.protocol);
        let mut assembler = Assembler::new();
        let mut body = response.bytes_stream();
        let mut push = |events: Vec<ChatEvent>| -> Result<(), ModelError> {
            for event in events {
                on_event(ClientEvent::Chat(event.clone()));
                assembler.push(event).map_err(|e| self.assembly_error(e))?;
            }
            Ok(())
        };
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                tracing::info!(error = %e, "the response stream broke");
                ModelError::Cut {
                    provider: provider.clone(),
                }
            })?;
            push(decoder.feed(&chunk).map_err(|e| malformed(e.to_string()))?)?;
        }
        push(decoder.finish().map_err(|e| malformed(e.to_string()))?)?;
        assembler.finish().map_err(|e| self.assembly_error(e))
    }

    fn assembly_error(&self, error: AssembleError) -> ModelError {
        let provider = self.provider_name();
        match error {
            AssembleError::Incomplete => ModelError::Cut { provider },
            AssembleError::Provider(error) => match classify_message(&error.message) {
                Some(Kind::ContextTooLong) => ModelError::ContextTooLong {
                    message: error.message,
                },
                _ => ModelError::MidStream {
                    provider,
                    message: error.message,
                },
            },
            other => ModelError::Malformed {
                provider,
                detail: other.to_string(),
            },
        }
    }

    /// A final (not retried) HTTP error, said for what it is.
    fn classify(&self, status: StatusCode, error: ProviderError) -> ModelError {
        let provider = self.provider_name();
        let message = error.message;
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return ModelError::Unauthorized {
                provider,
                status: status.as_u16(),
                message,
                key_source: self
                    .choice
                    .provider
                    .key_source
                    .clone()
                    .unwrap_or_else(|| "the provider's API key".to_owned()),
            };
        }
        match classify_message(&message) {
            Some(Kind::ContextTooLong) => ModelError::ContextTooLong { message },
            Some(Kind::ToolsUnsupported) => ModelError::ToolsUnsupported {
                provider,
                model: self.choice.model.clone(),
                message,
            },
            Some(Kind::UnknownModel) => ModelError::UnknownModel {
                provider,
                model: self.choice.model.clone(),
                message,
            },
            None if status == StatusCode::NOT_FOUND => ModelError::UnknownModel {
                provider,
                model: self.choice.model.clone(),
                message,
            },
            None => ModelError::Rejected {
                provider,
                status: status.as_u16(),
                message,
            },
        }
    }
}

struct Failure {
    reason: String,
    retry_after: Option<Duration>,
}

enum Kind {
    ContextTooLong,
    UnknownModel,
    ToolsUnsupported,
}

/// What an error message is about; providers say it in words, not in status codes.
fn classify_message(message: &str) -> Option<Kind> {
    let lower = message.to_lowercase();
    const CONTEXT: &[&str] = &[
        "context length",
        "context_length",
        "context window",
        "maximum context",
        "prompt is too long",
        "too many tokens",
        "input is too long",
    ];
    if CONTEXT.iter().any(|m| lower.contains(m)) {
        return Some(Kind::ContextTooLong);
    }
    // Ollama: "registry.ollama.ai/library/gemma:2b does not support tools"; others say
    // it of tools, tool use or function calling.
    const NO_TOOLS: &[&str] = &[
        "does not support tools",
        "does not support tool",
        "tools are not supported",
        "tool use is not supported",
        "does not support function calling",
        "function calling is not supported",
    ];
    if NO_TOOLS.iter().any(|m| lower.contains(m)) {
        return Some(Kind::ToolsUnsupported);
    }
    let about_model = lower.contains("model");
    let missing = ["not found", "does not exist", "not_found", "unknown model"]
        .iter()
        .any(|m| lower.contains(m));
    (about_model && missing).then_some(Kind::UnknownModel)
}

/// Busy, overloaded or briefly broken: worth another attempt.
fn is_retryable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        408 | 409 | 429 | 500 | 502 | 503 | 504 | 529
    )
}

/// `retry-after-ms` (OpenAI) or `retry-after` in seconds. (The HTTP-date form is left to
/// the backoff.)
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok();
    let seconds = header("retry-after-ms")
        .map(|ms| ms / 1000.0)
        .or_else(|| header("retry-after"))?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

async fn read_limited(response: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_ERROR_BODY {
            body.truncate(MAX_ERROR_BODY);
            break;
        }
    }
    body
}

/// reqwest's error, with its cause (the part that says what happened).
fn transport_reason(error: &reqwest::Error) -> String {
    let mut reason = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        reason = format!("{reason}: {cause}");
        source = cause.source();
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_is_read_in_seconds_or_milliseconds() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(250)));
        let mut date = HeaderMap::new();
        date.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&date), None);
    }

    #[test]
    fn provider_messages_are_recognised() {
        assert!(matches!(
            classify_message("This model's maximum context length is 128000 tokens."),
            Some(Kind::ContextTooLong)
        ));
        assert!(matches!(
            classify_message("prompt is too long: 210000 tokens > 200000 maximum"),
            Some(Kind::ContextTooLong)
        ));
        assert!(matches!(
            classify_message("model \"qwen9\" not found, try pulling it first"),
            Some(Kind::UnknownModel)
        ));
        assert!(matches!(
            classify_message("registry.ollama.ai/library/gemma:2b does not support tools"),
            Some(Kind::ToolsUnsupported)
        ));
        assert!(classify_message("Invalid schema for function 'python'").is_none());
    }
}
