//! An execution as a stream of Server-Sent Events, and the stream's OpenAPI schema.
//!
//! The stream is read from the execution's log in the core ([`log_stream`], which a
//! conversation's turn shares), so any number of clients can follow one execution, and a client that lost its connection re-attaches where it
//! left off: every event carries the number of its log entry as its SSE `id`, and a
//! request with `Last-Event-ID` resumes after it.

use super::error::{ApiError, ErrorBody, ErrorCode};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use sandcell_service::{EventLog, ExecutionLog, LogEntry, LoggedEvent, RESTARTED_NOTICE};
use sandcell_session::{ExecEvent, Execution, ExecutionError, FileChange};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Ref, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

/// One event of an execution's stream, in the order they come.
pub enum StreamEvent {
    /// The first event: which execution this is, to re-attach to it.
    Execution {
        id: String,
    },
    /// The Python process was started afresh for this execution.
    Notice,
    Output(ExecEvent),
    /// The files the execution created or changed.
    Files(Vec<FileChange>),
    /// The whole result.
    End(Execution),
    /// The session could not be driven; the stream ends here.
    Failure(ApiError),
}

impl StreamEvent {
    fn name(&self) -> &'static str {
        match self {
            Self::Execution { .. } => "execution",
            Self::Notice => "notice",
            Self::Output(ExecEvent::Stdout(_)) => "stdout",
            Self::Output(ExecEvent::Stderr(_)) => "stderr",
            Self::Output(ExecEvent::Result(_)) => "result",
            Self::Output(ExecEvent::Error(_)) => "error",
            Self::Files(_) => "files",
            Self::End(_) => "end",
            Self::Failure(_) => "failure",
        }
    }

    fn data(&self) -> Value {
        match self {
            Self::Execution { id } => json!({ "id": id }),
            Self::Notice => json!({ "code": "session_restarted", "message": RESTARTED_NOTICE }),
            Self::Output(ExecEvent::Stdout(text) | ExecEvent::Stderr(text)) => {
                json!({ "text": text })
            }
            Self::Output(ExecEvent::Result(bundle)) => Value::Object(bundle.clone()),
            Self::Output(ExecEvent::Error(error)) => value(error),
            Self::Files(files) => value(files),
            Self::End(execution) => value(execution),
            Self::Failure(error) => value(&error.body()),
        }
    }

    fn to_sse(&self) -> Event {
        Event::default()
            .event(self.name())
            .data(self.data().to_string())
    }

    /// The stream events of one log entry.
    fn of(entry: LoggedEvent) -> Vec<Self> {
        match entry {
            LoggedEvent::Restarted => vec![Self::Notice],
            LoggedEvent::Output(event) => vec![Self::Output(event)],
            LoggedEvent::End(Ok(execution)) => {
                vec![Self::Files(execution.files.clone()), Self::End(execution)]
            }
            LoggedEvent::End(Err(error)) => vec![Self::Failure(error.into())],
        }
    }
}

/// Serializing these plain types into a JSON value cannot fail.
fn value(data: &impl serde::Serialize) -> Value {
    serde_json::to_value(data).unwrap_or(Value::Null)
}

/// The execution's events as Server-Sent Events from log entry `from` on (0: the whole
/// execution, which starts with its `execution` event); see [`StreamEvent`].
pub fn event_stream(
    log: Arc<ExecutionLog>,
    from: usize,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let first = (from == 0).then(|| StreamEvent::Execution { id: log.id.clone() }.to_sse());
    log_stream(log.events(), from, first, |entry| {
        StreamEvent::of(entry)
            .into_iter()
            .map(|event| event.to_sse())
            .collect()
    })
}

/// A log's entries as Server-Sent Events from entry `from` on, after `first`, live until
/// the log ends. `events_of` gives an entry's events; the last of them carries the
/// entry's number as its SSE `id`, so a client that resumes after it (`Last-Event-ID`)
/// has seen the whole entry.
pub fn log_stream<E: LogEntry + Send + Sync + 'static>(
    log: Arc<EventLog<E>>,
    from: usize,
    first: Option<Event>,
    events_of: fn(E) -> Vec<Event>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let entries = futures_util::stream::unfold((log, from), move |(log, next)| async move {
        let entries = log.entries_from(next).await;
        if entries.is_empty() {
            return None;
        }
        let count = entries.len();
        let events: Vec<Result<Event, Infallible>> = entries
            .into_iter()
            .enumerate()
            .flat_map(|(offset, entry)| {
                let mut events = events_of(entry);
                if let Some(last) = events.pop() {
                    events.push(last.id((next + offset).to_string()));
                }
                events.into_iter().map(Ok)
            })
            .collect();
        Some((futures_util::stream::iter(events), (log, next + count)))
    });
    let events = futures_util::StreamExt::flatten(entries);
    let events = futures_util::StreamExt::chain(futures_util::stream::iter(first.map(Ok)), events);
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// The entry a client that sends `Last-Event-ID` resumes from (0 without one).
pub fn resume_from(headers: &HeaderMap) -> Result<usize, ApiError> {
    match headers.get("last-event-id") {
        None => Ok(0),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse::<usize>().ok())
            .and_then(|seen| seen.checked_add(1))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::BadRequest,
                    "Last-Event-ID must be the id of an event of this stream.",
                )
            }),
    }
}

/// Each event is `{"event": NAME, "data": JSON text}`; one alternative per name, with
/// the schema of its data.
impl PartialSchema for StreamEvent {
    fn schema() -> RefOr<Schema> {
        let text = || {
            ObjectBuilder::new()
                .property("text", ObjectBuilder::new().schema_type(Type::String))
                .required("text")
                .into()
        };
        let kinds: [(&str, &str, RefOr<Schema>); 9] = [
            (
                "execution",
                "The execution's id, first: GET /sessions/{id}/executions/{execution_id} reads its result, …/events re-attaches to its stream.",
                ObjectBuilder::new()
                    .property("id", ObjectBuilder::new().schema_type(Type::String))
                    .required("id")
                    .into(),
            ),
            (
                "notice",
                "The Python process was started afresh for this execution: variables are gone, files remain.",
                ObjectBuilder::new()
                    .property("code", ObjectBuilder::new().schema_type(Type::String))
                    .property("message", ObjectBuilder::new().schema_type(Type::String))
                    .required("code")
                    .required("message")
                    .into(),
            ),
            ("stdout", "Text the code wrote to standard output.", text()),
            ("stderr", "Text the code wrote to standard error.", text()),
            (
                "result",
                "A display() output or the value of the last expression: MIME type → data (binary data in base64).",
                ObjectBuilder::new().schema_type(Type::Object).into(),
            ),
            (
                "error",
                "The exception the code raised.",
                Ref::from_schema_name(ExecutionError::name()).into(),
            ),
            (
                "files",
                "The files the execution created or changed.",
                ArrayBuilder::new()
                    .items(Ref::from_schema_name(FileChange::name()))
                    .into(),
            ),
            (
                "end",
                "The whole result; the last event.",
                Ref::from_schema_name(Execution::name()).into(),
            ),
            (
                "failure",
                "The session could not be driven; the last event.",
                Ref::from_schema_name(ErrorBody::name()).into(),
            ),
        ];
        let mut one_of = OneOfBuilder::new();
        for (name, description, data) in kinds {
            one_of = one_of.item(sse_event_schema(&[name], data).description(Some(description)));
        }
        one_of.into()
    }
}

/// One Server-Sent Event as the OpenAPI document describes it: an `event` among `names`
/// whose `data` is JSON of the schema `data`.
pub(crate) fn sse_event_schema(names: &[&str], data: RefOr<Schema>) -> ObjectBuilder {
    ObjectBuilder::new()
        .property(
            "event",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(names.to_vec())),
        )
        .property(
            "data",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .content_media_type("application/json")
                .content_schema(Some(data)),
        )
        .required("event")
        .required("data")
}

impl ToSchema for StreamEvent {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        for (name, schema) in [
            (Execution::name(), Execution::schema()),
            (ExecutionError::name(), ExecutionError::schema()),
            (FileChange::name(), FileChange::schema()),
            (ErrorBody::name(), ErrorBody::schema()),
        ] {
            schemas.push((name.into_owned(), schema));
        }
        <Execution as ToSchema>::schemas(schemas);
        <ErrorBody as ToSchema>::schemas(schemas);
    }
}
