//! Conversations: their rows, and their records (transcript entries, JSON) in order.

use super::sql::{values, Row};
use super::{now, Store, StoreError};

/// What the database keeps about a conversation (its records apart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationRecord {
    pub id: String,
    pub user_id: i64,
    pub session_id: String,
    pub title: String,
    /// `provider:model`.
    pub model: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub updated_at: String,
}

impl Store {
    pub async fn insert_conversation(
        &self,
        conversation: ConversationRecord,
    ) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO conversations (id, user_id, session_id, title, model, created_at,
                     updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                &values![
                    conversation.id,
                    conversation.user_id,
                    conversation.session_id,
                    conversation.title,
                    conversation.model,
                    conversation.created_at,
                    conversation.updated_at
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// The user's conversations, the most recently used first.
    pub async fn conversations(&self, user_id: i64) -> Result<Vec<ConversationRecord>, StoreError> {
        self.call(move |c| {
            c.query(
                &format!("{SELECT_CONVERSATION} WHERE user_id = ?1 ORDER BY updated_at DESC, id"),
                &values![user_id],
            )?
            .iter()
            .map(conversation_row)
            .collect()
        })
        .await
    }

    /// The conversation `id` if it is the user's.
    pub async fn conversation(
        &self,
        user_id: i64,
        id: &str,
    ) -> Result<Option<ConversationRecord>, StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            c.query_first(
                &format!("{SELECT_CONVERSATION} WHERE user_id = ?1 AND id = ?2"),
                &values![user_id, id],
            )?
            .as_ref()
            .map(conversation_row)
            .transpose()
        })
        .await
    }

    /// A conversation's records (JSON), in order.
    pub async fn conversation_records(&self, id: &str) -> Result<Vec<String>, StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            c.query(
                "SELECT record FROM conversation_records WHERE conversation_id = ?1 ORDER BY seq",
                &values![id],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect()
        })
        .await
    }

    /// Appends record number `seq` (JSON, of type `kind`) to a conversation, and marks
    /// the conversation used now.
    pub fn append_conversation_record(
        &self,
        id: &str,
        seq: usize,
        kind: &str,
        record: &str,
    ) -> Result<(), StoreError> {
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        self.call_blocking(|c| {
            c.transaction(|c| {
                let now = now();
                c.execute(
                    "INSERT INTO conversation_records (conversation_id, seq, kind, record,
                         created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    &values![id, seq, kind, record, &now],
                )?;
                c.execute(
                    "UPDATE conversations SET updated_at = ?2 WHERE id = ?1",
                    &values![id, now],
                )?;
                Ok(())
            })
        })
    }

    /// Sets what is shown of a conversation: its title, and the model it talks to.
    pub async fn update_conversation(
        &self,
        id: &str,
        title: String,
        model: String,
    ) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            c.execute(
                "UPDATE conversations SET title = ?2, model = ?3 WHERE id = ?1",
                &values![id, title, model],
            )?;
            Ok(())
        })
        .await
    }

    /// Deletes a conversation and its records (its session stays).
    pub async fn delete_conversation(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            c.execute("DELETE FROM conversations WHERE id = ?1", &values![id])?;
            Ok(())
        })
        .await
    }
}

const SELECT_CONVERSATION: &str =
    "SELECT id, user_id, session_id, title, model, created_at, updated_at FROM conversations";

fn conversation_row(r: &Row) -> Result<ConversationRecord, StoreError> {
    Ok(ConversationRecord {
        id: r.get(0)?,
        user_id: r.get(1)?,
        session_id: r.get(2)?,
        title: r.get(3)?,
        model: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
    })
}
