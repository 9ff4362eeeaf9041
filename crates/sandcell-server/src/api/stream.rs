//! An execution as a stream of Server-Sent Events, and the stream's OpenAPI schema.

use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::sessions::{RunningExecution, RESTARTED_NOTICE};
use axum::response::sse::{Event, KeepAlive, Sse};
use sandcell_session::{ExecEvent, Execution, ExecutionError, FileChange};
use serde_json::{json, Value};
use std::convert::Infallible;
use tokio::sync::mpsc;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Ref, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

/// One event of an execution's stream, in the order they come.
pub enum StreamEvent {
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
}

/// Serializing these plain types into a JSON value cannot fail.
fn value(data: &impl serde::Serialize) -> Value {
    serde_json::to_value(data).unwrap_or(Value::Null)
}

/// The execution's events as Server-Sent Events; see [`StreamEvent`].
pub fn event_stream(
    running: RunningExecution,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let (sender, mut receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let RunningExecution {
            mut events,
            done,
            restarted,
        } = running;
        let send = |event: StreamEvent| {
            // A client that went away no longer reads; the execution still finishes.
            let _ = sender.send(event.to_sse());
        };
        if restarted {
            send(StreamEvent::Notice);
        }
        while let Some(event) = events.recv().await {
            send(StreamEvent::Output(event));
        }
        match done.await {
            Ok(Ok(execution)) => {
                // The session restarted on its own (after a crash or a kill).
                if execution.restarted && !restarted {
                    send(StreamEvent::Notice);
                }
                send(StreamEvent::Files(execution.files.clone()));
                send(StreamEvent::End(execution));
            }
            Ok(Err(error)) => send(StreamEvent::Failure(error)),
            Err(error) => send(StreamEvent::Failure(ApiError::new(
                ErrorCode::Internal,
                format!("The execution stopped: {error}."),
            ))),
        }
    });
    let events = futures_util::stream::poll_fn(move |context| {
        receiver.poll_recv(context).map(|event| event.map(Ok))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
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
        let kinds: [(&str, &str, RefOr<Schema>); 8] = [
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
            one_of = one_of.item(
                ObjectBuilder::new()
                    .description(Some(description))
                    .property(
                        "event",
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .enum_values(Some([name])),
                    )
                    .property(
                        "data",
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .content_media_type("application/json")
                            .content_schema(Some(data)),
                    )
                    .required("event")
                    .required("data"),
            );
        }
        one_of.into()
    }
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
