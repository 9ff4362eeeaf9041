//! Nodes sharing the database, and which of them runs each session: heartbeats, and the
//! claims, holds and releases of sessions under a fencing epoch.
//!
//! Liveness is judged by the caller's clock against the heartbeats other nodes wrote with
//! theirs: `alive_since` is "now minus the timeout" in Unix milliseconds, so the nodes'
//! clocks must agree to well within the timeout (NTP does).

use super::sql::values;
use super::{Store, StoreError};

/// Who runs a session, as a claim found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This node does now, under this epoch.
    Held { epoch: i64 },
    /// A live node does, reached at this address.
    Elsewhere { url: String },
    /// There is no such session.
    Gone,
}

/// A session's owner as a request is routed by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// There is no such session.
    Gone,
    /// No live node runs it (or the asking node does).
    Free,
    /// A live node other than the asking one runs it, reached at this address.
    Node { url: String },
}

/// The condition "the owner is a live node", for statements on `sessions`; `?LIVE` is the
/// parameter holding the oldest heartbeat of a live node.
macro_rules! owner_alive {
    ($live:literal) => {
        concat!(
            "EXISTS (SELECT 1 FROM nodes WHERE nodes.id = sessions.owner AND nodes.heartbeat_ms >= ?",
            $live,
            ")"
        )
    };
}

impl Store {
    /// Records that node `id`, reached at `url`, is alive at `now_ms`.
    pub async fn heartbeat(&self, id: &str, url: &str, now_ms: i64) -> Result<(), StoreError> {
        let (id, url) = (id.to_owned(), url.to_owned());
        self.call(move |c| {
            c.execute(
                "INSERT INTO nodes (id, url, heartbeat_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET url = excluded.url, heartbeat_ms = excluded.heartbeat_ms",
                &values![id, url, now_ms],
            )?;
            Ok(())
        })
        .await
    }

    /// Node `id` runs no session any more (it started afresh, or stops): every session it
    /// held is free for any node. With `leaving`, the node is also forgotten.
    pub async fn release_node(&self, id: &str, leaving: bool) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            c.transaction(|c| {
                c.execute(
                    "UPDATE sessions SET owner = NULL WHERE owner = ?1",
                    &values![&id],
                )?;
                if leaving {
                    c.execute("DELETE FROM nodes WHERE id = ?1", &values![&id])?;
                }
                Ok(())
            })
        })
        .await
    }

    /// Makes node `node` the one running session `id`, with a new epoch, unless a live
    /// node other than it does. A node is live when its heartbeat is `alive_since` or later.
    pub async fn claim_session(
        &self,
        id: &str,
        node: &str,
        alive_since: i64,
    ) -> Result<Claim, StoreError> {
        let (id, node) = (id.to_owned(), node.to_owned());
        self.call(move |c| {
            c.transaction(|c| {
                let claimed = c.execute(
                    concat!(
                        "UPDATE sessions SET owner = ?2, epoch = epoch + 1
                         WHERE id = ?1 AND (owner IS NULL OR owner = ?2 OR NOT ",
                        owner_alive!("3"),
                        ")"
                    ),
                    &values![&id, &node, alive_since],
                )?;
                let row = c.query_first(
                    "SELECT sessions.epoch, nodes.url FROM sessions
                     LEFT JOIN nodes ON nodes.id = sessions.owner WHERE sessions.id = ?1",
                    &values![&id],
                )?;
                Ok(match row {
                    None => Claim::Gone,
                    Some(row) if claimed > 0 => Claim::Held { epoch: row.get(0)? },
                    Some(row) => Claim::Elsewhere {
                        url: row.get::<Option<String>>(1)?.unwrap_or_default(),
                    },
                })
            })
        })
        .await
    }

    /// Whether node `node` still runs session `id` under `epoch` (no other node claimed it
    /// since); the answer that lets a node act for the session.
    pub async fn holds_session(
        &self,
        id: &str,
        node: &str,
        epoch: i64,
    ) -> Result<bool, StoreError> {
        let (id, node) = (id.to_owned(), node.to_owned());
        self.call(move |c| {
            Ok(c.query_first(
                "SELECT 1 FROM sessions WHERE id = ?1 AND owner = ?2 AND epoch = ?3",
                &values![id, node, epoch],
            )?
            .is_some())
        })
        .await
    }

    /// Node `node` stopped session `id`'s process: the session is free, unless another
    /// node claimed it since (a later epoch), in which case nothing changes.
    pub async fn release_session(
        &self,
        id: &str,
        node: &str,
        epoch: i64,
    ) -> Result<(), StoreError> {
        let (id, node) = (id.to_owned(), node.to_owned());
        self.call(move |c| {
            c.execute(
                "UPDATE sessions SET owner = NULL WHERE id = ?1 AND owner = ?2 AND epoch = ?3",
                &values![id, node, epoch],
            )?;
            Ok(())
        })
        .await
    }

    /// Who runs session `id`, as node `node` routes a request for it.
    pub async fn session_owner(
        &self,
        id: &str,
        node: &str,
        alive_since: i64,
    ) -> Result<Owner, StoreError> {
        let (id, node) = (id.to_owned(), node.to_owned());
        self.call(move |c| {
            let row = c.query_first(
                "SELECT sessions.owner, nodes.url, nodes.heartbeat_ms FROM sessions
                 LEFT JOIN nodes ON nodes.id = sessions.owner WHERE sessions.id = ?1",
                &values![id],
            )?;
            let Some(row) = row else {
                return Ok(Owner::Gone);
            };
            let owner: Option<String> = row.get(0)?;
            let heartbeat: Option<i64> = row.get(2)?;
            Ok(match (owner, heartbeat) {
                (Some(owner), Some(heartbeat)) if owner != node && heartbeat >= alive_since => {
                    Owner::Node { url: row.get(1)? }
                }
                _ => Owner::Free,
            })
        })
        .await
    }

    /// Live sessions of `user_id` that nodes other than `node` run.
    pub async fn sessions_run_elsewhere(
        &self,
        user_id: i64,
        node: &str,
        alive_since: i64,
    ) -> Result<u64, StoreError> {
        let node = node.to_owned();
        self.call(move |c| {
            let count: i64 = c
                .query_one(
                    concat!(
                        "SELECT COUNT(*) FROM sessions
                         WHERE user_id = ?1 AND owner IS NOT NULL AND owner <> ?2 AND ",
                        owner_alive!("3")
                    ),
                    &values![user_id, node, alive_since],
                )?
                .get(0)?;
            Ok(u64::try_from(count).unwrap_or(0))
        })
        .await
    }
}

/// The objects that run their code in one session, so that a request for one goes to the
/// node running that session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InSession {
    Conversation,
    Notebook,
    Container,
}

impl InSession {
    fn table(self) -> &'static str {
        match self {
            Self::Conversation => "conversations",
            Self::Notebook => "notebooks",
            Self::Container => "containers",
        }
    }
}

impl Store {
    /// The session that object `id` of kind `kind` runs its code in, if it has one.
    pub async fn session_of(
        &self,
        kind: InSession,
        id: &str,
    ) -> Result<Option<String>, StoreError> {
        let (id, sql) = (
            id.to_owned(),
            format!("SELECT session_id FROM {} WHERE id = ?1", kind.table()),
        );
        self.call(move |c| {
            c.query_first(&sql, &values![id])?
                .and_then(|r| r.get::<Option<String>>(0).transpose())
                .transpose()
        })
        .await
    }
}
