//! A response's records as OpenAI's output items: each reply's words as a `message`, each
//! call of the code as a `code_interpreter_call`, and on the last message one
//! `container_file_citation` for every file the code created or changed.

use super::{file_name, suffix};
use sandcell_agent::Record;
use sandcell_service::ResponseRecord;
use serde_json::{json, Value};

/// The output items of `response`; a call's `outputs` only when `include_outputs`.
pub(crate) fn output_items(response: &ResponseRecord, include_outputs: bool) -> Vec<Value> {
    let id = suffix(&response.id);
    let mut items = Vec::new();
    let mut last_message = None;
    for record in &response.records {
        let Record::Assistant {
            text, tool_calls, ..
        } = record
        else {
            continue;
        };
        if !text.trim().is_empty() {
            last_message = Some(items.len());
            items.push(message(
                &format!("msg_{id}_{}", items.len()),
                text,
                Vec::new(),
            ));
        }
        for call in tool_calls {
            let ran = response.records.iter().find_map(|record| match record {
                Record::Tool {
                    call_id,
                    code,
                    execution,
                    ..
                } if *call_id == call.id => Some((code, execution)),
                _ => None,
            });
            let code = ran.map(|(code, _)| code.clone()).unwrap_or_else(|| {
                serde_json::from_str::<Value>(&call.arguments)
                    .ok()
                    .and_then(|arguments| arguments["code"].as_str().map(str::to_owned))
                    .unwrap_or_default()
            });
            let execution = ran.and_then(|(_, execution)| execution.as_deref());
            let outputs = match execution {
                Some(execution) if include_outputs => Value::Array(outputs(execution)),
                _ if include_outputs => json!([]),
                _ => Value::Null,
            };
            items.push(json!({
                "id": format!("ci_{id}_{}", items.len()),
                "type": "code_interpreter_call",
                "status": if execution.is_some() { "completed" } else { "incomplete" },
                "code": code,
                "container_id": response.container_id,
                "outputs": outputs,
            }));
        }
    }
    if let Some(index) = last_message {
        let text = items[index]["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        items[index]["content"][0]["annotations"] = Value::Array(citations(response, &text));
    }
    items
}

/// An assistant message with one `output_text`.
pub(crate) fn message(id: &str, text: &str, annotations: Vec<Value>) -> Value {
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": annotations, "logprobs": []}],
    })
}

/// One citation per file the code touched: spanning the file's name where the text
/// mentions it (in characters), else empty at the text's end.
pub(crate) fn citations(response: &ResponseRecord, text: &str) -> Vec<Value> {
    let length = text.chars().count();
    response
        .files
        .iter()
        .map(|file| {
            let name = file_name(file);
            let (start, end) = match text.find(name) {
                Some(byte) => {
                    let start = text[..byte].chars().count();
                    (start, start + name.chars().count())
                }
                None => (length, length),
            };
            json!({
                "type": "container_file_citation",
                "container_id": response.container_id,
                "file_id": file.id,
                "filename": name,
                "start_index": start,
                "end_index": end,
            })
        })
        .collect()
}

/// What the code printed (stdout, stderr, an error's traceback) as one `logs` output,
/// then each image it showed as an `image` output with a `data:` URL.
pub(crate) fn outputs(execution: &sandcell_session::Execution) -> Vec<Value> {
    let mut logs = format!("{}{}", execution.stdout, execution.stderr);
    if let Some(error) = &execution.error {
        logs.push_str(&format!("{}: {}", error.ename, error.evalue));
    }
    let mut outputs = Vec::new();
    if !logs.is_empty() {
        outputs.push(json!({"type": "logs", "logs": logs}));
    }
    for result in &execution.results {
        if let Some(png) = result.get("image/png").and_then(Value::as_str) {
            let data: String = png.split_whitespace().collect();
            outputs.push(json!({"type": "image", "url": format!("data:image/png;base64,{data}")}));
        }
    }
    outputs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(records: Value, files: Value) -> ResponseRecord {
        serde_json::from_value(json!({
            "id": "resp_abc", "container_id": "cntr_x", "model": "m:x",
            "previous_response_id": null, "created_at": 0, "status": "completed",
            "error": null, "input": "hi", "records": records,
            "usage": {"input_tokens": 1, "output_tokens": 2}, "files": files, "door": null,
        }))
        .unwrap()
    }

    fn file(id: &str, path: &str) -> Value {
        json!({"id": id, "container_id": "cntr_x", "path": path, "bytes": 1,
            "source": "assistant", "created_at": 0})
    }

    #[test]
    fn the_last_message_cites_each_file_at_its_name_or_at_the_end() {
        let records = json!([
            {"type": "user", "text": "hi"},
            {"type": "assistant", "text": "Wait.", "tool_calls": [
                {"id": "c1", "name": "python", "arguments": "{\"code\": \"1\"}"}]},
            {"type": "assistant", "text": "Über: see plot.png.", "tool_calls": []},
        ]);
        let files = json!([file("cfile_1", "plot.png"), file("cfile_2", "out/data.csv")]);
        let items = output_items(&response(records, files), false);
        let kinds: Vec<&str> = items.iter().map(|i| i["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["message", "code_interpreter_call", "message"]);
        assert_eq!(items[1]["id"], "ci_abc_1");
        // The call never ran: its code comes from the model's arguments.
        assert_eq!(items[1]["code"], "1");
        assert_eq!(items[1]["status"], "incomplete");
        assert_eq!(items[1]["outputs"], Value::Null);
        assert_eq!(items[0]["content"][0]["annotations"], json!([]));
        let cited = &items[2]["content"][0]["annotations"];
        // Indices count characters, not bytes ("Ü" is two bytes).
        assert_eq!(
            (&cited[0]["start_index"], &cited[0]["end_index"]),
            (&json!(10), &json!(18))
        );
        assert_eq!(cited[1]["filename"], "data.csv");
        assert_eq!(
            (&cited[1]["start_index"], &cited[1]["end_index"]),
            (&json!(19), &json!(19))
        );
    }
}
