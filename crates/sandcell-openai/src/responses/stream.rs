//! A response streamed as OpenAI's Server-Sent Events, in OpenAI's order, each with its
//! `sequence_number`: `response.created`, `response.in_progress`; per reply's words
//! `output_item.added`, `content_part.added`, `output_text.delta`…; per call of the code
//! `output_item.added`, `code_interpreter_call.in_progress`,
//! `code_interpreter_call_code.delta`… / `.done`, `code_interpreter_call.interpreting`,
//! `code_interpreter_call.completed`, `output_item.done`; the last words' citations as
//! `output_text.annotation.added`, then `output_text.done`, `content_part.done`,
//! `output_item.done`; and `response.completed` (or `.incomplete`, `.failed`) with the
//! whole response. The ids and indices are those of the finished response's output.

use super::items::{message, output_items, outputs};
use super::{response_object, suffix};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream, StreamExt};
use sandcell_agent::AgentEvent;
use sandcell_service::{ResponseEvent, ResponseEvents, ResponseRecord, ResponseStatus};
use serde_json::{json, Value};
use std::convert::Infallible;

/// The response `started` and its `events` as an event stream.
pub(crate) fn response_stream(
    started: ResponseRecord,
    events: ResponseEvents,
    include_outputs: bool,
) -> Response {
    let mut writer = Writer::new(&started, include_outputs);
    let opening = writer.opening(&started);
    let rest = stream::unfold((events, writer), |(mut events, mut writer)| async move {
        let event = events.recv().await?;
        let sent = writer.on(event);
        Some((stream::iter(sent), (events, writer)))
    })
    .flatten();
    let all = stream::iter(opening).chain(rest);
    Sse::new(sse(all))
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn sse(
    events: impl Stream<Item = Value> + Send + 'static,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    events.map(|data| {
        let name = data["type"].as_str().unwrap_or("message").to_owned();
        Ok(Event::default().event(name).data(data.to_string()))
    })
}

/// The words of a reply being streamed.
struct OpenText {
    index: usize,
    id: String,
    text: String,
    /// Whether its item was announced (only once it has more than white space).
    announced: bool,
}

/// A call of the code being streamed.
struct OpenCall {
    index: usize,
    id: String,
    call_id: String,
    code: String,
}

/// Turns a response's events into OpenAI's, numbering them.
struct Writer {
    id_suffix: String,
    container_id: String,
    include_outputs: bool,
    sequence: u64,
    /// Output items so far.
    items: usize,
    text: Option<OpenText>,
    calls: Vec<OpenCall>,
}

impl Writer {
    fn new(started: &ResponseRecord, include_outputs: bool) -> Self {
        Self {
            id_suffix: suffix(&started.id).to_owned(),
            container_id: started.container_id.clone(),
            include_outputs,
            sequence: 0,
            items: 0,
            text: None,
            calls: Vec::new(),
        }
    }

    fn event(&mut self, mut event: Value) -> Value {
        event["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        event
    }

    fn opening(&mut self, started: &ResponseRecord) -> Vec<Value> {
        let response = response_object(started);
        vec![
            self.event(json!({"type": "response.created", "response": response})),
            self.event(json!({"type": "response.in_progress", "response": response})),
        ]
    }

    fn on(&mut self, event: ResponseEvent) -> Vec<Value> {
        let mut sent = Vec::new();
        match event {
            ResponseEvent::Agent(AgentEvent::TextDelta { text }) => {
                self.text_delta(&text, &mut sent)
            }
            ResponseEvent::Agent(AgentEvent::CodeDelta { call_id, text }) => {
                let index = self.call(&call_id, &mut sent);
                let call = &mut self.calls[index];
                call.code.push_str(&text);
                let delta = json!({"type": "response.code_interpreter_call_code.delta",
                    "output_index": call.index, "item_id": call.id, "delta": text});
                sent.push(self.event(delta));
            }
            ResponseEvent::Agent(AgentEvent::Code { call_id, code }) => {
                let index = self.call(&call_id, &mut sent);
                let call = &mut self.calls[index];
                call.code = code.clone();
                let (output_index, item_id) = (call.index, call.id.clone());
                sent.push(
                    self.event(json!({"type": "response.code_interpreter_call_code.done",
                    "output_index": output_index, "item_id": item_id, "code": code})),
                );
                sent.push(self.event(
                    json!({"type": "response.code_interpreter_call.interpreting",
                    "output_index": output_index, "item_id": item_id}),
                ));
            }
            ResponseEvent::Agent(AgentEvent::Execution {
                call_id, execution, ..
            }) => {
                if let Some(position) = self.calls.iter().position(|call| call.call_id == call_id) {
                    let call = self.calls.remove(position);
                    let outputs = if self.include_outputs {
                        Value::Array(outputs(&execution))
                    } else {
                        Value::Null
                    };
                    sent.push(
                        self.event(json!({"type": "response.code_interpreter_call.completed",
                        "output_index": call.index, "item_id": call.id})),
                    );
                    let item = json!({"id": call.id, "type": "code_interpreter_call",
                        "status": "completed", "code": call.code,
                        "container_id": self.container_id, "outputs": outputs});
                    sent.push(self.event(json!({"type": "response.output_item.done",
                        "output_index": call.index, "item": item})));
                }
            }
            ResponseEvent::Agent(_) => {}
            ResponseEvent::Done(done) => self.done(&done, &mut sent),
        }
        sent
    }

    fn text_delta(&mut self, delta: &str, sent: &mut Vec<Value>) {
        if self.text.is_none() {
            self.text = Some(OpenText {
                index: self.items,
                id: format!("msg_{}_{}", self.id_suffix, self.items),
                text: String::new(),
                announced: false,
            });
        }
        let Some(text) = self.text.as_mut() else {
            return;
        };
        text.text.push_str(delta);
        if text.text.trim().is_empty() {
            return;
        }
        let (index, id) = (text.index, text.id.clone());
        // The words so far, when the item is announced now.
        let delta = if text.announced {
            delta.to_owned()
        } else {
            text.announced = true;
            self.items += 1;
            let added = json!({"type": "response.output_item.added", "output_index": index,
                "item": {"id": id, "type": "message", "role": "assistant", "status": "in_progress", "content": []}});
            sent.push(self.event(added));
            let part = json!({"type": "response.content_part.added", "item_id": id,
                "output_index": index, "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}});
            sent.push(self.event(part));
            self.text
                .as_ref()
                .map(|t| t.text.clone())
                .unwrap_or_default()
        };
        sent.push(
            self.event(json!({"type": "response.output_text.delta", "item_id": id,
            "output_index": index, "content_index": 0, "delta": delta, "logprobs": []})),
        );
    }

    /// Closes the words being streamed, with these citations.
    fn close_text(&mut self, annotations: Vec<Value>, sent: &mut Vec<Value>) {
        let Some(text) = self.text.take() else {
            return;
        };
        if !text.announced {
            return;
        }
        for (position, annotation) in annotations.iter().enumerate() {
            sent.push(
                self.event(json!({"type": "response.output_text.annotation.added",
                "item_id": text.id, "output_index": text.index, "content_index": 0,
                "annotation_index": position, "annotation": annotation})),
            );
        }
        sent.push(self.event(
            json!({"type": "response.output_text.done", "item_id": text.id,
            "output_index": text.index, "content_index": 0, "text": text.text, "logprobs": []}),
        ));
        let item = message(&text.id, &text.text, annotations);
        let part = item["content"][0].clone();
        sent.push(self.event(
            json!({"type": "response.content_part.done", "item_id": text.id,
            "output_index": text.index, "content_index": 0, "part": part}),
        ));
        sent.push(self.event(json!({"type": "response.output_item.done",
            "output_index": text.index, "item": item})));
    }

    /// The open call `call_id` (its position in `calls`), announced when new; words
    /// before it are closed first.
    fn call(&mut self, call_id: &str, sent: &mut Vec<Value>) -> usize {
        if let Some(position) = self.calls.iter().position(|call| call.call_id == call_id) {
            return position;
        }
        self.close_text(Vec::new(), sent);
        let call = OpenCall {
            index: self.items,
            id: format!("ci_{}_{}", self.id_suffix, self.items),
            call_id: call_id.to_owned(),
            code: String::new(),
        };
        self.items += 1;
        let item = json!({"id": call.id, "type": "code_interpreter_call", "status": "in_progress",
            "code": "", "container_id": self.container_id, "outputs": null});
        sent.push(self.event(json!({"type": "response.output_item.added",
            "output_index": call.index, "item": item})));
        sent.push(
            self.event(json!({"type": "response.code_interpreter_call.in_progress",
            "output_index": call.index, "item_id": call.id})),
        );
        self.calls.push(call);
        self.calls.len() - 1
    }

    fn done(&mut self, done: &ResponseRecord, sent: &mut Vec<Value>) {
        let output = output_items(done, self.include_outputs);
        // Calls that never ran (a cancelled turn) end as the response shows them.
        for call in std::mem::take(&mut self.calls) {
            if let Some(item) = output.get(call.index).cloned() {
                sent.push(self.event(json!({"type": "response.output_item.done",
                    "output_index": call.index, "item": item})));
            }
        }
        let annotations = self
            .text
            .as_ref()
            .and_then(|text| output.get(text.index))
            .and_then(|item| item["content"][0]["annotations"].as_array().cloned())
            .unwrap_or_default();
        self.close_text(annotations, sent);
        let kind = match done.status {
            ResponseStatus::Completed | ResponseStatus::InProgress => "response.completed",
            ResponseStatus::Incomplete => "response.incomplete",
            ResponseStatus::Failed => "response.failed",
        };
        let response = response_object(done);
        sent.push(self.event(json!({"type": kind, "response": response})));
    }
}
