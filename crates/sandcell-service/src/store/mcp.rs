//! MCP sessions of the Streamable HTTP transport: what a client sent in `initialize`,
//! kept so that a node that did not begin a session can take it up.

use super::sql::values;
use super::{Store, StoreError};

/// How long an MCP session is kept without being closed (a client that went away never
/// closes it): a week, in seconds.
const MCP_SESSION_KEPT_SECS: i64 = 7 * 24 * 60 * 60;

impl Store {
    /// The state (JSON) of MCP session `id`, if it is kept.
    pub async fn mcp_session(&self, id: &str) -> Result<Option<String>, StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            c.query_first("SELECT state FROM mcp_sessions WHERE id = ?1", &values![id])?
                .map(|r| r.get(0))
                .transpose()
        })
        .await
    }

    /// Keeps MCP session `id`'s state, made at `now` (Unix seconds); sessions older than
    /// a week go.
    pub async fn save_mcp_session(
        &self,
        id: &str,
        state: String,
        now: i64,
    ) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            c.transaction(|c| {
                c.execute(
                    "DELETE FROM mcp_sessions WHERE created_at < ?1",
                    &values![now - MCP_SESSION_KEPT_SECS],
                )?;
                c.execute(
                    "INSERT INTO mcp_sessions (id, state, created_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (id) DO UPDATE SET state = excluded.state",
                    &values![id, state, now],
                )?;
                Ok(())
            })
        })
        .await
    }

    pub async fn delete_mcp_session(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            c.execute("DELETE FROM mcp_sessions WHERE id = ?1", &values![id])?;
            Ok(())
        })
        .await
    }
}
