//! A log of events that any number of readers follow: from the start, from where a lost
//! connection left off, or to wait for the end.
//!
//! Whatever runs in a task of its own and streams what it does (an execution, a
//! conversation's turn) appends to one; clients read it, so a client that goes away
//! neither stops the work nor loses what it produced, a second client sees the same
//! events, and nothing is queued for a reader that is gone. An entry's number in the log
//! is what a client sends back to resume after it.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// An entry of an [`EventLog`]: one of them is the last.
pub trait LogEntry: Clone {
    /// Whether this entry ends the log (nothing is appended after it).
    fn is_end(&self) -> bool;
}

/// What one piece of work produced so far, shared by its task and its readers.
#[derive(Debug)]
pub struct EventLog<E> {
    entries: Mutex<Entries<E>>,
    /// The number of entries, bumped after each append: readers wait on it.
    count: watch::Sender<usize>,
}

#[derive(Debug)]
struct Entries<E> {
    list: Vec<E>,
    finished_at: Option<Instant>,
}

impl<E: LogEntry> Default for EventLog<E> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(Entries {
                list: Vec::new(),
                finished_at: None,
            }),
            count: watch::Sender::new(0),
        }
    }
}

impl<E: LogEntry> EventLog<E> {
    pub(crate) fn push(&self, event: E) {
        let count = {
            let mut entries = self.entries();
            if entries.finished_at.is_some() {
                return; // nothing follows the end
            }
            if event.is_end() {
                entries.finished_at = Some(Instant::now());
            }
            entries.list.push(event);
            entries.list.len()
        };
        self.count.send_replace(count);
    }

    /// Whether the last entry has been appended.
    pub fn finished(&self) -> bool {
        self.entries().finished_at.is_some()
    }

    /// Finished longer than `retention` ago.
    pub(crate) fn expired(&self, retention: Duration) -> bool {
        self.entries()
            .finished_at
            .is_some_and(|at| at.elapsed() >= retention)
    }

    /// The entries from number `from` on, waiting until there is at least one; empty only
    /// when the log ended before `from`.
    pub async fn entries_from(&self, from: usize) -> Vec<E> {
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

    /// The last entry, once appended.
    pub async fn end(&self) -> Option<E> {
        let mut from = 0;
        loop {
            let entries = self.entries_from(from).await;
            from += entries.len();
            match entries.into_iter().last() {
                None => return None,
                Some(last) if last.is_end() => return Some(last),
                Some(_) => {}
            }
        }
    }

    fn entries(&self) -> MutexGuard<'_, Entries<E>> {
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

    #[derive(Debug, Clone, PartialEq)]
    enum Entry {
        Text(&'static str),
        End,
    }

    impl LogEntry for Entry {
        fn is_end(&self) -> bool {
            *self == Entry::End
        }
    }

    #[tokio::test]
    async fn a_late_reader_sees_everything_and_a_waiting_one_is_woken() {
        let log = Arc::new(EventLog::default());
        log.push(Entry::Text("a"));
        let reader = {
            let log = log.clone();
            tokio::spawn(async move { log.entries_from(1).await })
        };
        tokio::task::yield_now().await;
        log.push(Entry::Text("b"));
        assert_eq!(reader.await.unwrap(), vec![Entry::Text("b")]);
        assert_eq!(log.entries_from(0).await.len(), 2);
        assert!(!log.finished());
    }

    #[tokio::test]
    async fn the_end_is_last_and_final() {
        let log = EventLog::default();
        log.push(Entry::End);
        log.push(Entry::Text("late"));
        assert!(log.finished());
        assert!(log.entries_from(1).await.is_empty());
        assert_eq!(log.end().await, Some(Entry::End));
        assert!(!log.expired(Duration::from_secs(60)));
        assert!(log.expired(Duration::ZERO));
    }
}
