//! The OpenAI door's files: a user's uploads, their bytes kept outside the database.

use super::sql::{values, Row};
use super::{Store, StoreError};

/// A file as the core knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    /// `file-…`.
    pub id: String,
    /// The name it was uploaded with (one path part).
    pub filename: String,
    /// What the client said it is for.
    pub purpose: String,
    pub bytes: u64,
    /// Unix seconds.
    pub created_at: i64,
}

impl Store {
    pub async fn insert_file(&self, user_id: i64, file: StoredFile) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO files (id, user_id, filename, purpose, bytes, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                &values![
                    file.id,
                    user_id,
                    file.filename,
                    file.purpose,
                    file.bytes,
                    file.created_at
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// The user's files, oldest first.
    pub async fn files(&self, user_id: i64) -> Result<Vec<StoredFile>, StoreError> {
        self.call(move |c| {
            c.query(
                &format!("{SELECT_FILE} WHERE user_id = ?1 ORDER BY created_at, rowid"),
                &values![user_id],
            )?
            .iter()
            .map(file_row)
            .collect()
        })
        .await
    }

    /// The file `id` if it is the user's.
    pub async fn file(&self, user_id: i64, id: &str) -> Result<Option<StoredFile>, StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            c.query_first(
                &format!("{SELECT_FILE} WHERE user_id = ?1 AND id = ?2"),
                &values![user_id, id],
            )?
            .as_ref()
            .map(file_row)
            .transpose()
        })
        .await
    }

    pub async fn delete_file(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            c.execute("DELETE FROM files WHERE id = ?1", &values![id])?;
            Ok(())
        })
        .await
    }
}

const SELECT_FILE: &str = "SELECT id, filename, purpose, bytes, created_at FROM files";

fn file_row(r: &Row) -> Result<StoredFile, StoreError> {
    Ok(StoredFile {
        id: r.get(0)?,
        filename: r.get(1)?,
        purpose: r.get(2)?,
        bytes: r.get(3)?,
        created_at: r.get(4)?,
    })
}
