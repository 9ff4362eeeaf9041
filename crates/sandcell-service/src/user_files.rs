//! Files a user keeps outside any session (the OpenAI door's Files): uploaded once, then
//! copied into containers by id. Their bytes are `files/ID` in the data directory (and,
//! when sessions' files are kept in a bucket, `PREFIX/files/ID` there too, fetched by a
//! node that lacks them), their names and purposes rows of the store; each belongs to the
//! user who uploaded it.

use crate::error::ServiceError;
use crate::files::FilePath;
use crate::page::{Page, PageRequest};
use crate::session_files::SessionFiles;
use crate::store::{Store, StoreError, User};
use crate::users::random_hex;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tempfile::NamedTempFile;

pub use crate::store::StoredFile;

/// Every user's files.
pub struct UserFiles {
    store: Store,
    /// `files/` in the data directory: one file per id, nothing else.
    dir: PathBuf,
    /// Where copies are kept for the other nodes, when sessions' files are.
    copies: Arc<SessionFiles>,
}

impl UserFiles {
    pub(crate) fn new(store: Store, dir: PathBuf, copies: Arc<SessionFiles>) -> Self {
        Self { store, dir, copies }
    }

    /// Keeps `staged` (fully written) as a new file of the user's named `filename`.
    pub async fn create(
        &self,
        user: &User,
        filename: &str,
        purpose: &str,
        staged: NamedTempFile,
    ) -> Result<StoredFile, ServiceError> {
        let filename = file_name(filename)?;
        let id = format!("file-{}", random_id()?);
        let bytes = staged
            .as_file()
            .metadata()
            .map_err(|e| ServiceError::internal("The upload cannot be read", &e))?
            .len();
        let dir = self.dir.clone();
        let path = self.dir.join(&id);
        let target = path.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            staged.persist(&target).map(drop).map_err(|e| e.error)
        })
        .await
        .map_err(|e| ServiceError::internal("The file cannot be stored", &e))?
        .map_err(|e| ServiceError::internal("The file cannot be stored", &e))?;
        if let Err(error) = self.copies.keep_user_file(&id, &path).await {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(ServiceError::internal(
                "The file cannot be copied to the bucket",
                &error,
            ));
        }
        let file = StoredFile {
            id,
            filename,
            purpose: purpose.to_owned(),
            bytes,
            created_at: unix_now(),
        };
        let inserted = self.store.insert_file(user.id, file.clone()).await;
        if let Err(error) = inserted {
            let _ = tokio::fs::remove_file(self.dir.join(&file.id)).await;
            self.copies.forget_user_file(&file.id).await;
            return Err(ServiceError::internal(
                "The file cannot be recorded",
                &error,
            ));
        }
        Ok(file)
    }

    /// A page of the user's files (of one purpose, if given), oldest or newest first.
    pub async fn list(
        &self,
        user: &User,
        purpose: Option<&str>,
        newest_first: bool,
        page: &PageRequest,
    ) -> Result<Page<StoredFile>, ServiceError> {
        let mut files = self.store.files(user.id).await.map_err(read_error)?;
        if let Some(purpose) = purpose {
            files.retain(|file| file.purpose == purpose);
        }
        if newest_first {
            files.reverse();
        }
        page.page(files, |file| &file.id)
    }

    /// The user's file `id`; another user's is "not found".
    pub async fn get(&self, user: &User, id: &str) -> Result<StoredFile, ServiceError> {
        self.store
            .file(user.id, id)
            .await
            .map_err(read_error)?
            .ok_or_else(|| ServiceError::not_found(format!("file {id}")))
    }

    /// The file's content, opened for reading.
    pub async fn open(
        &self,
        user: &User,
        id: &str,
    ) -> Result<(std::fs::File, StoredFile), ServiceError> {
        let file = self.get(user, id).await?;
        // The id comes from the user's row, never from the request as it was sent.
        let path = self.dir.join(&file.id);
        // Uploaded through another node: its copy in the bucket comes here first.
        if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
            self.copies
                .fetch_user_file(&file.id, &path, file.bytes)
                .await
                .map_err(|e| {
                    ServiceError::internal("The file cannot be fetched from the bucket", &e)
                })?;
        }
        let opened = tokio::task::spawn_blocking(move || std::fs::File::open(path))
            .await
            .map_err(|e| ServiceError::internal("The file cannot be read", &e))?
            .map_err(|e| ServiceError::internal("The file cannot be read", &e))?;
        Ok((opened, file))
    }

    pub async fn delete(&self, user: &User, id: &str) -> Result<(), ServiceError> {
        let file = self.get(user, id).await?;
        self.store
            .delete_file(&file.id)
            .await
            .map_err(|e| ServiceError::internal("The file cannot be deleted", &e))?;
        self.copies.forget_user_file(&file.id).await;
        match tokio::fs::remove_file(self.dir.join(&file.id)).await {
            // Uploaded through another node and never read here.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            removed => removed
                .map_err(|e| ServiceError::internal("The file's content cannot be removed", &e)),
        }
    }
}

fn read_error(error: StoreError) -> ServiceError {
    ServiceError::internal("The files cannot be read", &error)
}

/// An uploaded file's name as one path part: the last part of what the client sent (a
/// browser may send a path), checked like any path from a request.
pub(crate) fn file_name(sent: &str) -> Result<String, ServiceError> {
    let last = sent.rsplit(['/', '\\']).next().unwrap_or_default();
    FilePath::parse(last).map_err(|_| {
        ServiceError::invalid(format!(
            "The file name {sent:?} cannot be used; give the file a plain name such as data.csv."
        ))
    })?;
    Ok(last.to_owned())
}

/// 24 random bytes in hex, for the ids of the OpenAI door's objects.
pub(crate) fn random_id() -> Result<String, ServiceError> {
    random_hex(24).map_err(|e| ServiceError::internal("No random id", &e))
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_name_is_the_last_part_of_what_was_sent() {
        assert_eq!(file_name("data.csv").unwrap(), "data.csv");
        assert_eq!(file_name("C:\\Users\\me\\data.csv").unwrap(), "data.csv");
        assert_eq!(file_name("dir/plot.png").unwrap(), "plot.png");
        for bad in ["", "..", "dir/", "."] {
            let error = file_name(bad).unwrap_err();
            assert!(error.to_string().ends_with("data.csv."), "{error}");
        }
    }
}
