//! What a client gets back: an execution or a file as MCP content blocks.

use crate::params::{enum_name, ChangedFile, FileRead, RunError, RunOutput};
use crate::paths::file_uri;
use base64::Engine;
use rmcp::model::{CallToolResult, ContentBlock, Resource, ResourceContents};
use sandcell_service::{ServiceError, RESTARTED_NOTICE};
use sandcell_session::{Execution, Status};

/// Image types a client can show; others come back as resources.
const IMAGE_TYPES: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];

/// An execution as a tool result: text blocks (what was printed, the values' text, the
/// traceback), an image block per image value, a resource link per file created or
/// changed, and [`RunOutput`] as `structuredContent`. A cell that did not end well is an
/// error result, so the model sees that it has something to fix.
pub(crate) fn execution_result(
    session_id: &str,
    execution: Execution,
) -> Result<CallToolResult, ServiceError> {
    let mut content = Vec::new();
    if execution.restarted {
        content.push(ContentBlock::text(RESTARTED_NOTICE));
    }
    if !execution.stdout.is_empty() {
        content.push(ContentBlock::text(execution.stdout.clone()));
    }
    if !execution.stderr.is_empty() {
        content.push(ContentBlock::text(format!(
            "[stderr]\n{}",
            execution.stderr
        )));
    }
    for bundle in &execution.results {
        let image = IMAGE_TYPES
            .iter()
            .find_map(|mime| Some((*mime, bundle.get(*mime)?.as_str()?)));
        match (image, bundle.get("text/plain").and_then(|v| v.as_str())) {
            (Some((mime, data)), _) => content.push(ContentBlock::image(data, mime)),
            (None, Some(text)) => content.push(ContentBlock::text(text)),
            (None, None) => {}
        }
    }
    if let Some(error) = &execution.error {
        content.push(ContentBlock::text(error.traceback.join("\n")));
    }
    match execution.status {
        Status::Ok | Status::Error => {}
        Status::Timeout => content.push(ContentBlock::text(
            "The code ran past its time limit and was stopped; the session's variables are kept.",
        )),
        Status::Interrupted => content.push(ContentBlock::text(
            "The code was interrupted; the session's variables are kept.",
        )),
        Status::Crashed => content.push(ContentBlock::text(
            "The Python process died (memory limit, os._exit or a crash): variables are gone, files in /mnt/data remain.",
        )),
    }
    for file in &execution.files {
        content.push(ContentBlock::resource_link(
            Resource::new(file_uri(session_id, &file.path), file.path.clone())
                .with_mime_type(file.mime.clone())
                .with_size(file.size),
        ));
    }
    let failed = execution.status != Status::Ok;
    let output = RunOutput {
        session_id: session_id.to_owned(),
        status: enum_name(&execution.status),
        results: execution
            .results
            .iter()
            .map(|bundle| bundle.keys().cloned().collect())
            .collect(),
        error: execution.error.map(|error| RunError {
            ename: error.ename,
            evalue: error.evalue,
            traceback: error.traceback,
        }),
        files: execution
            .files
            .into_iter()
            .map(|file| ChangedFile {
                path: file.path,
                size: file.size,
                mime: file.mime,
            })
            .collect(),
        stdout: execution.stdout,
        stderr: execution.stderr,
        duration_ms: execution.duration_ms,
        restarted: execution.restarted,
    };
    if content.is_empty() {
        content.push(ContentBlock::text("(no output)"));
    }
    let mut result = if failed {
        CallToolResult::error(content)
    } else {
        CallToolResult::success(content)
    };
    result.structured_content = Some(to_json(&output)?);
    Ok(result)
}

/// Part of a file as a tool result: text for text, an image block for a whole image, an
/// embedded resource with a base64 blob otherwise; [`FileRead`] says where the part lies.
pub(crate) fn file_part_result(
    uri: String,
    bytes: Vec<u8>,
    read: FileRead,
) -> Result<CallToolResult, ServiceError> {
    let whole = read.offset == 0 && !read.more;
    let block = if whole && IMAGE_TYPES.contains(&read.mime.as_str()) {
        ContentBlock::image(base64_of(&bytes), read.mime.clone())
    } else {
        ContentBlock::resource(file_contents(uri, &read.mime, bytes))
    };
    let mut result = CallToolResult::success(vec![block]);
    result.structured_content = Some(to_json(&read)?);
    Ok(result)
}

/// A file's bytes as resource contents: text when it is text, else a base64 blob.
pub(crate) fn file_contents(uri: String, mime: &str, bytes: Vec<u8>) -> ResourceContents {
    let texty = mime.starts_with("text/")
        || [
            "application/json",
            "application/xml",
            "application/javascript",
        ]
        .contains(&mime);
    match String::from_utf8(bytes) {
        Ok(text) if texty => ResourceContents::text(text, uri).with_mime_type(mime),
        Ok(text) => ResourceContents::blob(base64_of(text.as_bytes()), uri).with_mime_type(mime),
        Err(not_text) => {
            ResourceContents::blob(base64_of(not_text.as_bytes()), uri).with_mime_type(mime)
        }
    }
}

fn base64_of(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(crate) fn to_json(value: &impl serde::Serialize) -> Result<serde_json::Value, ServiceError> {
    serde_json::to_value(value)
        .map_err(|e| ServiceError::internal("A result cannot be written", &e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandcell_session::{ExecutionError, FileChange};
    use serde_json::json;

    fn execution(status: Status) -> Execution {
        Execution {
            status,
            stdout: "printed\n".into(),
            stderr: String::new(),
            results: vec![
                json!({"text/plain": "<Figure>", "image/png": "iVBORw0K"})
                    .as_object()
                    .cloned()
                    .unwrap(),
                json!({"text/plain": "42"}).as_object().cloned().unwrap(),
            ],
            execute_result: Some(1),
            execution_count: Some(3),
            error: None,
            files: vec![FileChange {
                path: "out dir/a.csv".into(),
                size: 3,
                mime: "text/csv".into(),
            }],
            duration_ms: 5,
            restarted: false,
            truncated: false,
            network: Default::default(),
        }
    }

    #[test]
    fn an_execution_becomes_text_images_links_and_structured_content() {
        let result = execution_result("s1", execution(Status::Ok)).unwrap();
        assert_eq!(result.is_error, Some(false));
        assert_eq!(result.content[0].as_text().unwrap().text, "printed\n");
        let image = result.content[1].as_image().unwrap();
        assert_eq!(
            (image.data.as_str(), image.mime_type.as_str()),
            ("iVBORw0K", "image/png")
        );
        assert_eq!(result.content[2].as_text().unwrap().text, "42");
        let link = result.content[3].as_resource_link().unwrap();
        assert_eq!(link.uri, "sandcell://sessions/s1/files/out%20dir/a.csv");
        let structured = result.structured_content.unwrap();
        assert_eq!(structured["status"], "ok");
        assert_eq!(
            structured["results"],
            json!([["image/png", "text/plain"], ["text/plain"]])
        );
        assert_eq!(structured["files"][0]["path"], "out dir/a.csv");
        assert_eq!(structured["error"], serde_json::Value::Null);
    }

    #[test]
    fn a_raising_cell_is_an_error_result_with_its_traceback() {
        let mut raised = execution(Status::Error);
        raised.error = Some(ExecutionError {
            ename: "ZeroDivisionError".into(),
            evalue: "division by zero".into(),
            traceback: vec![
                "Traceback".into(),
                "ZeroDivisionError: division by zero".into(),
            ],
        });
        let result = execution_result("s1", raised).unwrap();
        assert_eq!(result.is_error, Some(true));
        assert!(result.content.iter().any(|block| block
            .as_text()
            .is_some_and(|t| t.text == "Traceback\nZeroDivisionError: division by zero")));
        assert_eq!(
            result.structured_content.unwrap()["error"]["ename"],
            "ZeroDivisionError"
        );
    }

    #[test]
    fn a_whole_image_file_is_an_image_and_a_part_of_one_a_blob() {
        let read = |offset, more| FileRead {
            path: "p.png".into(),
            mime: "image/png".into(),
            size: 4,
            offset,
            length: 2,
            more,
        };
        let whole = file_part_result("u".into(), vec![1, 2], read(0, false)).unwrap();
        assert!(whole.content[0].as_image().is_some());
        let part = file_part_result("u".into(), vec![1, 2], read(0, true)).unwrap();
        let embedded = part.content[0].as_resource().unwrap();
        assert!(matches!(
            &embedded.resource,
            ResourceContents::BlobResourceContents { blob, .. } if blob == "AQI="
        ));
        assert_eq!(part.structured_content.unwrap()["more"], true);
    }

    #[test]
    fn text_is_text_unless_it_is_not_utf8() {
        assert!(matches!(
            file_contents("u".into(), "text/csv", b"a,b".to_vec()),
            ResourceContents::TextResourceContents { text, .. } if text == "a,b"
        ));
        assert!(matches!(
            file_contents("u".into(), "text/csv", vec![0xff]),
            ResourceContents::BlobResourceContents { .. }
        ));
    }
}
