//! The one place where the core's [`ServiceError`] becomes what an MCP client sees.
//!
//! A tool that fails answers a result with `isError: true` and the error's sentence, so
//! that the model reads it and can correct its call; only a request that cannot be
//! routed at all is a JSON-RPC error (the SDK answers those). Reading a resource has no
//! such result, so there the error is a JSON-RPC error with the same sentence.

use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::ErrorData;
use sandcell_service::ServiceError;

/// A tool call the core refused or failed: one plain sentence, marked as an error.
pub(crate) fn tool_error(error: ServiceError) -> CallToolResult {
    let mut sentence = error.to_string();
    if let Some(wait) = error.retry_after() {
        sentence.push_str(&format!(" Try again in {} s.", wait.as_secs().max(1)));
    }
    CallToolResult::error(vec![ContentBlock::text(sentence)])
}

/// A resource read the core refused or failed, as a JSON-RPC error naming the resource.
pub(crate) fn resource_error(error: ServiceError, uri: &str) -> ErrorData {
    protocol_error(error, Some(serde_json::json!({ "uri": uri })))
}

/// A request other than a tool call the core refused or failed, as a JSON-RPC error.
pub(crate) fn protocol_error(error: ServiceError, data: Option<serde_json::Value>) -> ErrorData {
    match error {
        ServiceError::NotFound(message) => ErrorData::resource_not_found(message, data),
        ServiceError::Invalid(message) | ServiceError::InvalidPath(message) => {
            ErrorData::invalid_params(message, data)
        }
        ServiceError::Unauthorized(message) => ErrorData::invalid_request(message, data),
        other => ErrorData::internal_error(other.to_string(), data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn text(result: &CallToolResult) -> &str {
        result.content[0]
            .as_text()
            .map(|t| t.text.as_str())
            .unwrap()
    }

    #[test]
    fn a_refusal_is_a_tool_result_marked_as_an_error() {
        let result = tool_error(ServiceError::not_found("session abc"));
        assert_eq!(result.is_error, Some(true));
        assert_eq!(text(&result), "There is no session abc.");
        let full = tool_error(ServiceError::ServerFull {
            message: "The server is full.".into(),
            retry_after: Duration::from_secs(5),
        });
        assert_eq!(text(&full), "The server is full. Try again in 5 s.");
    }

    #[test]
    fn resource_errors_keep_the_sentence_and_name_the_uri() {
        let missing = resource_error(ServiceError::not_found("file x"), "sandcell://s");
        assert_eq!(missing.message, "There is no file x.");
        assert_eq!(
            missing.data,
            Some(serde_json::json!({"uri": "sandcell://s"}))
        );
        let bad = resource_error(ServiceError::InvalidPath("bad".into()), "u");
        assert_eq!(bad.code, rmcp::model::ErrorCode::INVALID_PARAMS);
        let stranger = protocol_error(ServiceError::Unauthorized("No key.".into()), None);
        assert_eq!(
            (stranger.code, stranger.message.as_ref()),
            (rmcp::model::ErrorCode::INVALID_REQUEST, "No key.")
        );
    }
}
