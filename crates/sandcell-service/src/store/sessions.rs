//! Sessions' rows: who owns each, its limits, network and environment, and when it was
//! last used.

use super::sql::{values, Row};
use super::{Store, StoreError};
use crate::limits::SessionLimits;
use sandcell_session::Allowlist;

/// What the database keeps about a session.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    pub id: String,
    pub user_id: i64,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub last_used_at: String,
    pub limits: SessionLimits,
    /// What the session may reach; empty: no network.
    pub network: Allowlist,
    /// The configured environment it runs in; `None`: the base environment.
    pub environment: Option<String>,
}

/// An allowlist as `insert_session` wrote it. Entries were read before they were
/// stored; one that no longer reads (an older sandcell's syntax) is left out, so the
/// session gets less network, never more.
fn stored_allowlist(text: &str) -> Allowlist {
    let entries = text.split_whitespace().filter(|entry| {
        let readable = entry.parse::<sandcell_session::NetEntry>().is_ok();
        if !readable {
            tracing::warn!("a session's network entry {entry:?} cannot be read; it is left out");
        }
        readable
    });
    Allowlist::parse(&entries.collect::<Vec<_>>()).unwrap_or_default()
}

const SELECT_SESSIONS: &str = "SELECT id, user_id, created_at, last_used_at, memory_mib,
     processes, timeout_secs, file_size_mib, disk_quota_mib, allow_net, environment
     FROM sessions";

fn session_record(r: &Row) -> Result<SessionRecord, StoreError> {
    Ok(SessionRecord {
        id: r.get(0)?,
        user_id: r.get(1)?,
        created_at: r.get(2)?,
        last_used_at: r.get(3)?,
        limits: SessionLimits {
            memory_mib: r.get(4)?,
            processes: r.get(5)?,
            timeout_secs: r.get(6)?,
            file_size_mib: r.get(7)?,
            disk_quota_mib: r.get(8)?,
        },
        network: stored_allowlist(&r.get::<String>(9)?),
        environment: r.get(10)?,
    })
}

impl Store {
    /// Records a new session, run by node `owner` (under the first epoch).
    pub async fn insert_session(
        &self,
        record: SessionRecord,
        owner: &str,
    ) -> Result<(), StoreError> {
        let owner = owner.to_owned();
        self.call(move |c| {
            let l = &record.limits;
            c.execute(
                "INSERT INTO sessions (id, user_id, created_at, last_used_at, memory_mib,
                     processes, timeout_secs, file_size_mib, disk_quota_mib, allow_net,
                     environment, owner, epoch)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 1)",
                &values![
                    &record.id,
                    record.user_id,
                    &record.created_at,
                    &record.last_used_at,
                    l.memory_mib,
                    l.processes,
                    l.timeout_secs,
                    l.file_size_mib,
                    l.disk_quota_mib,
                    record.network.to_strings().join(" "),
                    record.environment.clone(),
                    owner
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// Every session of every user, oldest first.
    pub async fn sessions(&self) -> Result<Vec<SessionRecord>, StoreError> {
        self.call(|c| {
            c.query(&format!("{SELECT_SESSIONS} ORDER BY created_at, id"), &[])?
                .iter()
                .map(session_record)
                .collect()
        })
        .await
    }

    /// Session `id` with the conversation that runs its code, if any.
    pub fn session_blocking(
        &self,
        id: &str,
    ) -> Result<Option<(SessionRecord, Option<String>)>, StoreError> {
        self.call_blocking(|c| {
            let Some(row) =
                c.query_first(&format!("{SELECT_SESSIONS} WHERE id = ?1"), &values![id])?
            else {
                return Ok(None);
            };
            let conversation = c
                .query_first(
                    "SELECT id FROM conversations WHERE session_id = ?1",
                    &values![id],
                )?
                .map(|r| r.get(0))
                .transpose()?;
            Ok(Some((session_record(&row)?, conversation)))
        })
    }

    /// The ids of `user_id`'s sessions, each with the address of the live node running it,
    /// if one does (a node is live when its heartbeat is `alive_since` or later).
    pub async fn sessions_of(
        &self,
        user_id: i64,
        alive_since: i64,
    ) -> Result<Vec<(String, Option<String>)>, StoreError> {
        self.call(move |c| {
            c.query(
                "SELECT sessions.id, nodes.url FROM sessions LEFT JOIN nodes
                   ON nodes.id = sessions.owner AND nodes.heartbeat_ms >= ?2
                 WHERE sessions.user_id = ?1",
                &values![user_id, alive_since],
            )?
            .iter()
            .map(|r| Ok((r.get(0)?, r.get(1)?)))
            .collect()
        })
        .await
    }

    pub async fn touch_session(&self, id: &str, at: String) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            c.execute(
                "UPDATE sessions SET last_used_at = ?2 WHERE id = ?1",
                &values![id, at],
            )?;
            Ok(())
        })
        .await
    }

    /// Which conversation each session that has one belongs to: session id → conversation id.
    pub async fn conversation_sessions(
        &self,
    ) -> Result<std::collections::HashMap<String, String>, StoreError> {
        self.call(|c| {
            c.query("SELECT session_id, id FROM conversations", &[])?
                .iter()
                .map(|r| Ok((r.get(0)?, r.get(1)?)))
                .collect()
        })
        .await
    }

    pub async fn delete_session(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            c.execute("DELETE FROM sessions WHERE id = ?1", &values![id])?;
            Ok(())
        })
        .await
    }
}
