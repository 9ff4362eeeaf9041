//! The OpenAI door's responses (each a JSON body the core reads), and which response
//! ended each of a user's chats.

use super::sql::values;
use super::{Store, StoreError};

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
                &values![id, user_id, created_at, body],
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
                &values![id, body],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn delete_response(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            c.execute("DELETE FROM responses WHERE id = ?1", &values![id])?;
            Ok(())
        })
        .await
    }

    /// The id and body of every response, of every user, whose body says it is in progress.
    pub async fn unfinished_responses(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.call(|c| {
            // The bodies are the core's JSON, compact: the text narrows the rows down, and
            // reading each one's status decides (an answer may quote the same text).
            let mut unfinished = Vec::new();
            for row in c.query(
                "SELECT id, body FROM responses WHERE body LIKE '%\"status\":\"in_progress\"%'",
                &[],
            )? {
                let (id, body): (String, String) = (row.get(0)?, row.get(1)?);
                let status = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|json| json.get("status")?.as_str().map(str::to_owned));
                if status.as_deref() == Some("in_progress") {
                    unfinished.push((id, body));
                }
            }
            Ok(unfinished)
        })
        .await
    }

    /// The id of the response that ended the user's chat `key`, if one was remembered.
    pub async fn chat_thread(&self, user_id: i64, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_owned();
        self.call(move |c| {
            c.query_first(
                "SELECT response_id FROM chat_threads WHERE user_id = ?1 AND key = ?2",
                &values![user_id, key],
            )?
            .map(|r| r.get(0))
            .transpose()
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
                "INSERT INTO chat_threads (user_id, key, response_id) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user_id, key) DO UPDATE SET response_id = excluded.response_id",
                &values![user_id, key, id],
            )?;
            Ok(())
        })
        .await
    }
}
