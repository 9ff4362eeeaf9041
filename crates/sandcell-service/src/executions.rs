//! Executions with ids, kept for a while after they end.
//!
//! An execution runs in a task of its own; what it produces goes into its
//! [`ExecutionLog`] (an [`EventLog`]), which any number of clients read: from the start,
//! //! from where a lost connection left off, or just for the result. The log holds no more
//! than the execution itself keeps (the session runtime bounds every execution's
//! output), and a session keeps only its last few logs.

use crate::error::ServiceError;
use crate::event_log::{EventLog, LogEntry};
use sandcell_session::{ExecEvent, Execution};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use utoipa::ToSchema;

/// One entry of an execution's log, in order.
#[derive(Debug, Clone)]
pub enum LoggedEvent {
    /// The Python process was started afresh for this execution (its state was lost).
    Restarted,
    Output(ExecEvent),
    /// The last entry: the result, or why the session could not be driven.
    End(Result<Execution, ServiceError>),
}

/// Whether an execution is still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionState {
    Running,
    Finished,
}

/// What one execution produced so far, shared by its task and its readers.
#[derive(Debug)]
pub struct ExecutionLog {
    pub id: String,
    pub session_id: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    events: Arc<EventLog<LoggedEvent>>,
}

impl LogEntry for LoggedEvent {
    fn is_end(&self) -> bool {
        matches!(self, Self::End(_))
    }
}

impl ExecutionLog {
    pub(crate) fn new(id: String, session_id: String, started_at: String) -> Self {
        Self {
            id,
            session_id,
            started_at,
            events: Arc::default(),
        }
    }

    /// The log itself, for a reader that outlives this borrow (a stream).
    pub fn events(&self) -> Arc<EventLog<LoggedEvent>> {
        self.events.clone()
    }

    pub(crate) fn push(&self, event: LoggedEvent) {
        self.events.push(event);
    }

    pub fn state(&self) -> ExecutionState {
        if self.events.finished() {
            ExecutionState::Finished
        } else {
            ExecutionState::Running
        }
    }

    /// Finished longer than `retention` ago.
    pub(crate) fn expired(&self, retention: Duration) -> bool {
        self.events.expired(retention)
    }

    /// The entries from number `from` on, waiting until there is at least one; empty only
    /// when the log ended before `from`.
    pub async fn entries_from(&self, from: usize) -> Vec<LoggedEvent> {
        self.events.entries_from(from).await
    }

    /// The result, once the execution has ended.
    pub async fn result(&self) -> Result<Execution, ServiceError> {
        match self.events.end().await {
            Some(LoggedEvent::End(result)) => result,
            _ => Err(ServiceError::Internal(
                "The execution ended without a result.".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_result_is_the_last_entry_once_it_is_there() {
        let log = ExecutionLog::new("e1".into(), "s1".into(), "now".into());
        log.push(LoggedEvent::Output(ExecEvent::Stdout("a".into())));
        assert_eq!(log.state(), ExecutionState::Running);
        log.push(LoggedEvent::End(Err(ServiceError::Internal("x".into()))));
        assert_eq!(log.state(), ExecutionState::Finished);
        assert_eq!(
            log.result().await.unwrap_err(),
            ServiceError::Internal("x".into())
        );
    }
}
