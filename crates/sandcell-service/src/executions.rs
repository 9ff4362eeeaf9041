//! Executions with ids, kept for a while after they end.
//!
//! An execution runs in a task of its own; what it produces goes into its
//! [`ExecutionLog`], which any number of clients read: from the start, from where a lost
//! connection left off, or just for the result. So a client that goes away neither
//! stops the execution nor loses its output, and nothing is queued for a reader that is
//! gone. The log holds no more than the execution itself keeps (the session runtime
//! bounds every execution's output), and a session keeps only its last few logs.

use crate::error::ServiceError;
use sandcell_session::{ExecEvent, Execution};
use serde::Serialize;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;
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
    entries: Mutex<Entries>,
    /// The number of entries, bumped after each append: readers wait on it.
    count: watch::Sender<usize>,
}

#[derive(Debug, Default)]
struct Entries {
    list: Vec<LoggedEvent>,
    finished_at: Option<Instant>,
}

impl ExecutionLog {
    pub(crate) fn new(id: String, session_id: String, started_at: String) -> Self {
        Self {
            id,
            session_id,
            started_at,
            entries: Mutex::default(),
            count: watch::Sender::new(0),
        }
    }

    pub(crate) fn push(&self, event: LoggedEvent) {
        let count = {
            let mut entries = self.entries();
            if entries.finished_at.is_some() {
                return; // nothing follows the end
            }
            if matches!(event, LoggedEvent::End(_)) {
                entries.finished_at = Some(Instant::now());
            }
            entries.list.push(event);
            entries.list.len()
        };
        self.count.send_replace(count);
    }

    pub fn state(&self) -> ExecutionState {
        if self.entries().finished_at.is_some() {
            ExecutionState::Finished
        } else {
            ExecutionState::Running
        }
    }

    /// Finished longer than `retention` ago.
    pub(crate) fn expired(&self, retention: Duration) -> bool {
        self.entries()
            .finished_at
            .is_some_and(|at| at.elapsed() >= retention)
    }

    /// The entries from number `from` on, waiting until there is at least one; empty only
    /// when the log ended before `from`.
    pub async fn entries_from(&self, from: usize) -> Vec<LoggedEvent> {
        let mut count = self.count.subscribe();
        loop {
            {
                let entries = self.entries();
                if entries.list.len() > from {
                    return entries.list[from..].to_vec();
                }
                if entries.finished_at.is_some() {
                    return Vec::new();
                }
            }
            if count.changed().await.is_err() {
                return Vec::new();
            }
        }
    }

    /// The result, once the execution has ended.
    pub async fn result(&self) -> Result<Execution, ServiceError> {
        let mut from = 0;
        loop {
            let entries = self.entries_from(from).await;
            if entries.is_empty() {
                return Err(ServiceError::Internal(
                    "The execution ended without a result.".into(),
                ));
            }
            from += entries.len();
            if let Some(LoggedEvent::End(result)) = entries.into_iter().last() {
                return result;
            }
        }
    }

    fn entries(&self) -> MutexGuard<'_, Entries> {
        // Entries are only appended: a panic cannot leave them torn.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn log() -> Arc<ExecutionLog> {
        Arc::new(ExecutionLog::new("e1".into(), "s1".into(), "now".into()))
    }

    #[tokio::test]
    async fn a_late_reader_sees_everything_and_a_waiting_one_is_woken() {
        let log = log();
        log.push(LoggedEvent::Output(ExecEvent::Stdout("a".into())));
        let reader = {
            let log = log.clone();
            tokio::spawn(async move { log.entries_from(1).await })
        };
        tokio::task::yield_now().await;
        log.push(LoggedEvent::Output(ExecEvent::Stdout("b".into())));
        let woken = reader.await.unwrap();
        assert!(matches!(&woken[..], [LoggedEvent::Output(ExecEvent::Stdout(b))] if b == "b"));
        assert_eq!(log.entries_from(0).await.len(), 2);
        assert_eq!(log.state(), ExecutionState::Running);
    }

    #[tokio::test]
    async fn the_end_is_last_and_final() {
        let log = log();
        log.push(LoggedEvent::End(Err(ServiceError::Internal("x".into()))));
        log.push(LoggedEvent::Output(ExecEvent::Stdout("late".into())));
        assert_eq!(log.state(), ExecutionState::Finished);
        assert!(log.entries_from(1).await.is_empty());
        assert_eq!(
            log.result().await.unwrap_err(),
            ServiceError::Internal("x".into())
        );
        assert!(!log.expired(Duration::from_secs(60)));
        assert!(log.expired(Duration::ZERO));
    }
}
