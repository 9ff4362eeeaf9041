//! This node among the nodes sharing one database (several `sandcell serve` behind one
//! address, on PostgreSQL; or just this one, on SQLite).
//!
//! A node is known by an id kept in its data directory (`node-id`), so that a node that
//! restarts on the same data directory is the same node, and by the address other nodes
//! forward requests to (`--advertise-url`). It writes a heartbeat into the database every
//! [`HEARTBEAT_EVERY`]; one whose heartbeat is older than the timeout is gone, and the
//! sessions it ran may be claimed by any other node. A session is run by one node at a
//! time: the one that claimed it last, under a fencing epoch that every claim raises
//! (`store::nodes`); a node acts for a session only while the database still names it,
//! with that epoch, as its owner.

use crate::start_error::StartError;
use crate::store::{InSession, Store};
use crate::users::random_hex;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;

/// How often a node writes its heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// How long without a heartbeat before a node is taken for gone, by default: five missed
/// heartbeats, so that a slow database or a busy node is not mistaken for a dead one.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a request is handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// On this node (also when what it names does not exist: the request then says so).
    Here,
    /// On the live node reached at this address, which runs the session.
    Node(String),
}

/// What a request is routed by: a session, or an object that runs its code in one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed<'a> {
    Session(&'a str),
    In(InSession, &'a str),
}

/// This node.
#[derive(Debug, Clone)]
pub struct Node {
    /// Its id in the database.
    pub id: String,
    /// Where other nodes reach it (empty: they cannot).
    pub url: String,
    /// How long without a heartbeat before a node is taken for gone.
    pub timeout: Duration,
}

impl Node {
    /// The node whose data directory is `data_dir` (its id made there the first time),
    /// reached at `url`.
    pub fn in_data_dir(data_dir: &Path, url: &str, timeout: Duration) -> Result<Self, StartError> {
        let file = data_dir.join("node-id");
        let data_dir_error = |source| StartError::DataDir {
            path: file.clone(),
            source,
        };
        let id = match std::fs::read_to_string(&file) {
            Ok(id) if !id.trim().is_empty() => id.trim().to_owned(),
            Ok(_) => return Err(data_dir_error(std::io::Error::other("the file is empty"))),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let random = random_hex(12)
                    .map_err(|e| data_dir_error(std::io::Error::other(e.to_string())))?;
                let id = format!("node_{random}");
                std::fs::write(&file, &id).map_err(data_dir_error)?;
                id
            }
            Err(error) => return Err(data_dir_error(error)),
        };
        Ok(Self {
            id,
            url: url.to_owned(),
            timeout,
        })
    }

    /// The oldest heartbeat of a node still alive, in Unix milliseconds.
    pub fn alive_since(&self) -> i64 {
        now_ms().saturating_sub(i64::try_from(self.timeout.as_millis()).unwrap_or(i64::MAX))
    }

    /// Writes this node's heartbeat now and then every [`HEARTBEAT_EVERY`], until aborted.
    /// A heartbeat that cannot be written is logged: after the timeout, other nodes may
    /// take this node's sessions, and this node then finds it no longer holds them.
    pub fn spawn_heartbeat(&self, store: Store) -> JoinHandle<()> {
        let node = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(HEARTBEAT_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if let Err(error) = store.heartbeat(&node.id, &node.url, now_ms()).await {
                    tracing::warn!("this node's heartbeat cannot be written: {error}");
                }
            }
        })
    }
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_keeps_its_id_in_its_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let first = Node::in_data_dir(dir.path(), "http://a:1", NODE_TIMEOUT).unwrap();
        let again = Node::in_data_dir(dir.path(), "http://a:2", NODE_TIMEOUT).unwrap();
        assert!(first.id.starts_with("node_"), "{}", first.id);
        assert_eq!(first.id, again.id);
        let other = tempfile::tempdir().unwrap();
        let second = Node::in_data_dir(other.path(), "http://b:1", NODE_TIMEOUT).unwrap();
        assert_ne!(first.id, second.id);
        assert!(first.alive_since() <= now_ms() - 10_000);
    }
}
