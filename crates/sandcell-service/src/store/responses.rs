//! The OpenAI door's responses (each a JSON body the core reads), and which response
//! ended each of a user's chats.

use super::{Store, StoreError};
use rusqlite::{params, OptionalExtension};

impl Store {
    pub async fn insert_response(
        &self,
        id: &str,
        user_id: i64,
        created_at: i64,
        body: String,
    ) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            c.execute(
                "INSERT INTO responses (id, user_id, created_at, body) VALUES (?1, ?2, ?3, ?4)",
                params![id, user_id, created_at, body],
            )?;
            Ok(())
        })
        .await
    }

    /// Replaces the response's body; a response deleted meanwhile stays deleted.
    pub async fn update_response(&self, id: &str, body: String) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            c.execute(
                "UPDATE responses SET body = ?2 WHERE id = ?1",
                params![id, body],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn delete_response(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            c.execute("DELETE FROM responses WHERE id = ?1", [id])?;
            Ok(())
        })
        .await
    }

    /// The id and body of every response, of every user, whose body says it is in progress.
    pub async fn unfinished_responses(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.call(|c| {
            let mut statement = c.prepare(
                "SELECT id, body FROM responses
                 WHERE json_extract(body, '$.status') = 'in_progress'",
            )?;
            let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    /// The id of the response that ended the user's chat `key`, if one was remembered.
    pub async fn chat_thread(&self, user_id: i64, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_owned();
        self.call(move |c| {
            Ok(c.query_row(
                "SELECT response_id FROM chat_threads WHERE user_id = ?1 AND key = ?2",
                params![user_id, key],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    /// Remembers that response `response_id` ended the user's chat `key`.
    pub async fn set_chat_thread(
        &self,
        user_id: i64,
        key: &str,
        response_id: &str,
    ) -> Result<(), StoreError> {
        let (key, id) = (key.to_owned(), response_id.to_owned());
        self.call(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO chat_threads (user_id, key, response_id)
                 VALUES (?1, ?2, ?3)",
                params![user_id, key, id],
            )?;
            Ok(())
        })
        .await
    }
}
