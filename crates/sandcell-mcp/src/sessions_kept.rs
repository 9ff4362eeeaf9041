//! MCP sessions kept in the database (rmcp's `SessionStore`), so that a request of an
//! MCP session that reaches another node (forwarded to the node running the sandcell
//! session it names) is taken up there: rmcp replays the client's `initialize` from what
//! was kept, and the request goes on as if that node had begun the session.

use rmcp::transport::streamable_http_server::session::store::{
    SessionState, SessionStore, SessionStoreError,
};
use sandcell_service::Store;
use std::time::{SystemTime, UNIX_EPOCH};

/// The store's `mcp_sessions`.
pub(crate) struct KeptSessions(pub(crate) Store);

#[async_trait::async_trait]
impl SessionStore for KeptSessions {
    async fn load(&self, session_id: &str) -> Result<Option<SessionState>, SessionStoreError> {
        match self.0.mcp_session(session_id).await? {
            Some(state) => Ok(Some(serde_json::from_str(&state)?)),
            None => Ok(None),
        }
    }

    async fn store(&self, session_id: &str, state: &SessionState) -> Result<(), SessionStoreError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|since| i64::try_from(since.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        self.0
            .save_mcp_session(session_id, serde_json::to_string(state)?, now)
            .await?;
        Ok(())
    }

    async fn delete(&self, session_id: &str) -> Result<(), SessionStoreError> {
        Ok(self.0.delete_mcp_session(session_id).await?)
    }
}
