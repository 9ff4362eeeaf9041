//! Notebooks: each saved whole, its cells one JSON text, with the revision a save changes.

use super::sql::{values, Row};
use super::{Store, StoreError};

/// What the database keeps about a notebook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotebookRecord {
    pub id: String,
    pub user_id: i64,
    pub title: String,
    pub session_id: Option<String>,
    /// The cells, as JSON.
    pub cells: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub updated_at: String,
    /// How many times it was saved since it was made.
    pub revision: u64,
}

/// What became of a save of a notebook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotebookSave {
    /// Written; the notebook is at this revision now.
    Saved(u64),
    /// Not written: the notebook is at another revision than the one the save changes.
    Stale,
    /// Not written: the user has no such notebook.
    NotFound,
}

impl Store {
    pub async fn insert_notebook(&self, record: NotebookRecord) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO notebooks (id, user_id, title, session_id, cells, created_at, updated_at, revision)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                &values![
                    record.id,
                    record.user_id,
                    record.title,
                    record.session_id,
                    record.cells,
                    record.created_at,
                    record.updated_at,
                    record.revision
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// The user's notebooks (their cells apart: empty), the most recently changed first.
    pub async fn notebooks(&self, user_id: i64) -> Result<Vec<NotebookRecord>, StoreError> {
        self.call(move |c| {
            c.query(
                "SELECT id, user_id, title, session_id, '', created_at, updated_at, revision
                 FROM notebooks WHERE user_id = ?1 ORDER BY updated_at DESC, id",
                &values![user_id],
            )?
            .iter()
            .map(notebook_row)
            .collect()
        })
        .await
    }

    /// The notebook `id` with its cells, if it is the user's.
    pub async fn notebook(
        &self,
        user_id: i64,
        id: &str,
    ) -> Result<Option<NotebookRecord>, StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            c.query_first(
                "SELECT id, user_id, title, session_id, cells, created_at, updated_at, revision
                 FROM notebooks WHERE user_id = ?1 AND id = ?2",
                &values![user_id, id],
            )?
            .as_ref()
            .map(notebook_row)
            .transpose()
        })
        .await
    }

    /// Writes the notebook's title, session and cells as its next revision, if it is the
    /// user's and (with `expected`) still at revision `expected`.
    pub async fn update_notebook(
        &self,
        record: NotebookRecord,
        expected: Option<u64>,
    ) -> Result<NotebookSave, StoreError> {
        // A revision past SQLite's integers is none a notebook ever had: -1 matches none.
        let expected = expected.map(|revision| i64::try_from(revision).unwrap_or(-1));
        self.call(move |c| {
            let saved = c.query_first(
                "UPDATE notebooks SET title = ?3, session_id = ?4, cells = ?5, updated_at = ?6,
                         revision = revision + 1
                     WHERE user_id = ?1 AND id = ?2 AND revision = COALESCE(?7, revision)
                     RETURNING revision",
                &values![
                    record.user_id,
                    &record.id,
                    record.title,
                    record.session_id,
                    record.cells,
                    record.updated_at,
                    expected
                ],
            )?;
            if let Some(row) = saved {
                return Ok(NotebookSave::Saved(row.get(0)?));
            }
            let exists = c
                .query_first(
                    "SELECT 1 FROM notebooks WHERE user_id = ?1 AND id = ?2",
                    &values![record.user_id, record.id],
                )?
                .is_some();
            Ok(if exists {
                NotebookSave::Stale
            } else {
                NotebookSave::NotFound
            })
        })
        .await
    }

    /// Whether a notebook of the user's runs its cells in session `session_id`.
    pub async fn notebook_uses_session(
        &self,
        user_id: i64,
        session_id: &str,
    ) -> Result<bool, StoreError> {
        let session_id = session_id.to_owned();
        self.call(move |c| {
            Ok(c.query_first(
                "SELECT 1 FROM notebooks WHERE user_id = ?1 AND session_id = ?2",
                &values![user_id, session_id],
            )?
            .is_some())
        })
        .await
    }

    /// Deletes the notebook; false when it is not the user's.
    pub async fn delete_notebook(&self, user_id: i64, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            Ok(c.execute(
                "DELETE FROM notebooks WHERE user_id = ?1 AND id = ?2",
                &values![user_id, id],
            )? > 0)
        })
        .await
    }
}

fn notebook_row(r: &Row) -> Result<NotebookRecord, StoreError> {
    Ok(NotebookRecord {
        id: r.get(0)?,
        user_id: r.get(1)?,
        title: r.get(2)?,
        session_id: r.get(3)?,
        cells: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
        revision: r.get(7)?,
    })
}
