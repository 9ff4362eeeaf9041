//! The OpenAI door's containers: their rows, the ids of their files, and the records of
//! those expired.

use super::sql::{values, Row};
use super::{Store, StoreError, User};
use crate::files::FileInfo;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A container's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRecord {
    /// `cntr_…`.
    pub id: String,
    pub name: String,
    /// The session its code runs in.
    pub session_id: String,
    /// Unix seconds.
    pub created_at: i64,
    pub last_active_at: i64,
    /// Idle minutes after `last_active_at` before it expires.
    pub expires_after_minutes: u32,
}

/// Who put a file in a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileSource {
    /// Uploaded or copied in by the client.
    User,
    /// Made by the code.
    Assistant,
}

impl FileSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }
}

/// A file in a container's `/mnt/data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerFile {
    /// `cfile_…`.
    pub id: String,
    pub container_id: String,
    /// Relative to `/mnt/data`.
    pub path: String,
    pub bytes: u64,
    pub source: FileSource,
    /// Unix seconds: when the container was first seen to hold it.
    pub created_at: i64,
}

impl Store {
    pub async fn insert_container(
        &self,
        user_id: i64,
        container: ContainerRecord,
    ) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO containers (id, user_id, session_id, name, expires_minutes,
                     created_at, last_active_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                &values![
                    container.id,
                    user_id,
                    container.session_id,
                    container.name,
                    container.expires_after_minutes,
                    container.created_at,
                    container.last_active_at
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// The user's containers, oldest first.
    pub async fn containers(&self, user_id: i64) -> Result<Vec<ContainerRecord>, StoreError> {
        self.call(move |c| {
            c.query(
                &format!(
                    "SELECT {CONTAINER_COLUMNS} FROM containers WHERE user_id = ?1
                     ORDER BY created_at, rowid"
                ),
                &values![user_id],
            )?
            .iter()
            .map(container_row)
            .collect()
        })
        .await
    }

    /// The container `id` if it is the user's.
    pub async fn container(
        &self,
        user_id: i64,
        id: &str,
    ) -> Result<Option<ContainerRecord>, StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            c.query_first(
                &format!(
                    "SELECT {CONTAINER_COLUMNS} FROM containers WHERE user_id = ?1 AND id = ?2"
                ),
                &values![user_id, id],
            )?
            .as_ref()
            .map(container_row)
            .transpose()
        })
        .await
    }

    /// Every user's containers, each with its owner.
    pub async fn containers_with_owners(&self) -> Result<Vec<(ContainerRecord, User)>, StoreError> {
        self.call(|c| {
            c.query(
                &format!(
                    "SELECT {CONTAINER_COLUMNS}, users.id, users.name FROM containers
                     JOIN users ON users.id = containers.user_id"
                ),
                &[],
            )?
            .iter()
            .map(|r| {
                Ok((
                    container_row(r)?,
                    User {
                        id: r.get(6)?,
                        name: r.get(7)?,
                    },
                ))
            })
            .collect()
        })
        .await
    }

    /// Marks the container used at `at` (Unix seconds).
    pub async fn touch_container(&self, id: &str, at: i64) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            c.execute(
                "UPDATE containers SET last_active_at = ?2 WHERE id = ?1",
                &values![id, at],
            )?;
            Ok(())
        })
        .await
    }

    /// Keeps the last state (`body`, JSON) of the user's container `id`, expired at
    /// `expired_at` (Unix seconds).
    pub async fn insert_expired_container(
        &self,
        id: &str,
        user_id: i64,
        expired_at: i64,
        body: String,
    ) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            c.execute(
                "INSERT INTO expired_containers (id, user_id, expired_at, body)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id,
                     expired_at = excluded.expired_at, body = excluded.body",
                &values![id, user_id, expired_at, body],
            )?;
            Ok(())
        })
        .await
    }

    /// Forgets the containers that expired before `before` (Unix seconds).
    pub async fn forget_expired_containers(&self, before: i64) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "DELETE FROM expired_containers WHERE expired_at < ?1",
                &values![before],
            )?;
            Ok(())
        })
        .await
    }

    /// Records a file the client put in a container (its path's old row replaced).
    pub async fn insert_container_file(&self, file: ContainerFile) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO container_files (id, container_id, path, source, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (container_id, path) DO UPDATE SET id = excluded.id,
                     source = excluded.source, created_at = excluded.created_at",
                &values![
                    file.id,
                    file.container_id,
                    file.path,
                    file.source.as_str(),
                    file.created_at
                ],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn delete_container_file(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            c.execute("DELETE FROM container_files WHERE id = ?1", &values![id])?;
            Ok(())
        })
        .await
    }

    /// Brings the ids of a container's files in line with `listed` (its directory as it
    /// is now), in one transaction: a file without a row gets one (source `assistant`,
    /// its id the one of `new_ids` at its place, created at `now`), a row without a file
    /// goes. The files with their ids, in the order listed.
    pub async fn sync_container_files(
        &self,
        container_id: &str,
        listed: Vec<FileInfo>,
        new_ids: Vec<String>,
        now: i64,
    ) -> Result<Vec<ContainerFile>, StoreError> {
        let container_id = container_id.to_owned();
        self.call(move |c| {
            c.transaction(|c| {
                let mut known: HashMap<String, (String, String, i64)> = c
                    .query(
                        "SELECT path, id, source, created_at FROM container_files
                         WHERE container_id = ?1",
                        &values![&container_id],
                    )?
                    .iter()
                    .map(|r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))))
                    .collect::<Result<_, StoreError>>()?;
                let mut files = Vec::with_capacity(listed.len());
                for (info, new_id) in listed.into_iter().zip(new_ids) {
                    let (id, source, created_at) = match known.remove(&info.path) {
                        Some(row) => row,
                        None => {
                            c.execute(
                                "INSERT INTO container_files (id, container_id, path, source,
                                     created_at)
                                 VALUES (?1, ?2, ?3, 'assistant', ?4)",
                                &values![&new_id, &container_id, &info.path, now],
                            )?;
                            (new_id, "assistant".to_owned(), now)
                        }
                    };
                    files.push(ContainerFile {
                        id,
                        container_id: container_id.clone(),
                        path: info.path,
                        bytes: info.size,
                        source: if source == "user" {
                            FileSource::User
                        } else {
                            FileSource::Assistant
                        },
                        created_at,
                    });
                }
                for (_, (gone, _, _)) in known {
                    c.execute("DELETE FROM container_files WHERE id = ?1", &values![gone])?;
                }
                Ok(files)
            })
        })
        .await
    }
}

const CONTAINER_COLUMNS: &str = "containers.id, containers.name, containers.session_id,
    containers.created_at, containers.last_active_at, containers.expires_minutes";

fn container_row(r: &Row) -> Result<ContainerRecord, StoreError> {
    Ok(ContainerRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        session_id: r.get(2)?,
        created_at: r.get(3)?,
        last_active_at: r.get(4)?,
        expires_after_minutes: r.get(5)?,
    })
}
