//! Containers (the OpenAI door's): a session with a name and an idle expiry, whose files
//! in `/mnt/data` have ids.
//!
//! A container is a sandcell session like any other (its limits, quotas and files are
//! the session's); its row says whose it is, what it is called and after how many idle
//! minutes it goes, with its files. A file has an id from the moment the container is
//! seen to hold it: uploaded or copied in (source `user`), or made by the code (source
//! `assistant`), found when the files are listed, so the directory stays the truth.
//!
//! A container idle past its expiry goes with its session and files, whether or not
//! anyone touches it again: a reaper in the background expires them (and one found
//! expired when touched goes then). What is left is a record that it expired, kept a
//! day, so that retrieving it says so.

use crate::error::ServiceError;
use crate::files::{FileInfo, FilePath};
use crate::limits::{LimitsRequest, SessionLimits};
use crate::page::{Page, PageRequest};
use crate::sessions::{SessionState, Sessions};
use crate::store::{ContainerRecord, OwnedTable, Store, StoreError, User};
use crate::user_files::{file_name, random_id, unix_now, UserFiles};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tempfile::NamedTempFile;
use tokio::task::JoinHandle;

/// Idle minutes before a container expires, unless asked otherwise (OpenAI's default).
pub const DEFAULT_EXPIRY_MINUTES: u32 = 20;
/// The longest idle expiry a container may ask for.
pub const MAX_EXPIRY_MINUTES: u32 = 24 * 60;
/// How long the record of an expired container is kept, in seconds.
const EXPIRED_KEPT_SECS: i64 = 24 * 60 * 60;

/// Whether a container can still be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerStatus {
    Running,
    /// Idle past its expiry: its session and files are gone.
    Expired,
}

impl ContainerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Expired => "expired",
        }
    }
}

/// A container as the core knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerInfo {
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
    /// Its session's limits.
    pub limits: SessionLimits,
    pub status: ContainerStatus,
}

/// What a new container asks for.
#[derive(Debug, Clone, Default)]
pub struct NewContainer {
    pub name: String,
    /// The user's files to copy into `/mnt/data`.
    pub file_ids: Vec<String>,
    /// Idle minutes before it expires: 1 to a day (20 when `None`).
    pub expires_after_minutes: Option<u32>,
    /// Its session's limits (the server's defaults for each left out).
    pub limits: LimitsRequest,
    /// Its session's network allowlist (entries as `--allow-net` takes them), within the
    /// operator's ceiling; `None`: the operator's default.
    pub allow_net: Option<Vec<String>>,
}

pub use crate::store::{ContainerFile, FileSource};

/// Every user's containers.
pub struct Containers {
    store: Store,
    sessions: Arc<Sessions>,
    files: Arc<UserFiles>,
    max_limits: SessionLimits,
    /// Where copies are written before they are put in place.
    staging_dir: PathBuf,
    /// How long one minute of an expiry lasts (a minute, but for tests).
    minute: Duration,
}

impl Containers {
    pub(crate) fn new(
        store: Store,
        sessions: Arc<Sessions>,
        files: Arc<UserFiles>,
        max_limits: SessionLimits,
        staging_dir: PathBuf,
        minute: Duration,
    ) -> Self {
        Self {
            store,
            sessions,
            files,
            max_limits,
            staging_dir,
            minute,
        }
    }

    /// A new container: a session with the limits asked for, the files copied in.
    pub async fn create(
        &self,
        user: &User,
        new: NewContainer,
    ) -> Result<ContainerInfo, ServiceError> {
        let minutes = new.expires_after_minutes.unwrap_or(DEFAULT_EXPIRY_MINUTES);
        if !(1..=MAX_EXPIRY_MINUTES).contains(&minutes) {
            return Err(ServiceError::invalid(format!(
                "expires_after.minutes must be between 1 and {MAX_EXPIRY_MINUTES}, not {minutes}."
            )));
        }
        let limits = new.limits.resolve(&self.max_limits)?;
        let network = self.sessions.network_for(new.allow_net.as_deref())?;
        // Every file must be the user's before anything is made.
        let mut sources = Vec::with_capacity(new.file_ids.len());
        for file_id in &new.file_ids {
            sources.push(self.files.get(user, file_id).await?);
        }
        let session = self
            .sessions
            .create_owned(user, limits, network, None, None)
            .await?;
        let now = unix_now();
        let container = ContainerInfo {
            id: format!("cntr_{}", random_id()?),
            name: new.name,
            session_id: session.id.clone(),
            created_at: now,
            last_active_at: now,
            expires_after_minutes: minutes,
            limits: session.limits.clone(),
            status: ContainerStatus::Running,
        };
        let record = ContainerRecord {
            id: container.id.clone(),
            name: container.name.clone(),
            session_id: container.session_id.clone(),
            created_at: container.created_at,
            last_active_at: container.last_active_at,
            expires_after_minutes: container.expires_after_minutes,
        };
        let inserted = self.store.insert_container(user.id, record).await;
        if let Err(error) = inserted {
            let _ = self.sessions.remove(user, &session.id).await;
            return Err(ServiceError::internal(
                "The container cannot be recorded",
                &error,
            ));
        }
        for source in sources {
            if let Err(error) = self.copy_file(user, &container.id, &source.id).await {
                let _ = self.sessions.remove(user, &session.id).await;
                return Err(error);
            }
        }
        Ok(container)
    }

    /// A page of the user's containers (of one name, if given; those expired are
    /// deleted first).
    pub async fn list(
        &self,
        user: &User,
        name: Option<&str>,
        newest_first: bool,
        page: &PageRequest,
    ) -> Result<Page<ContainerInfo>, ServiceError> {
        let rows = self.store.containers(user.id).await.map_err(read_error)?;
        let mut containers = Vec::with_capacity(rows.len());
        for row in rows {
            if name.is_some_and(|name| name != row.name) {
                continue;
            }
            if let Some(container) = self.unexpired(user, row).await? {
                containers.push(container);
            }
        }
        if newest_first {
            containers.reverse();
        }
        page.page(containers, |container| &container.id)
    }

    /// The user's container `id`, to use; another user's is "not found", one expired is
    /// refused with a sentence saying so.
    pub async fn get(&self, user: &User, id: &str) -> Result<ContainerInfo, ServiceError> {
        let container = self.retrieve(user, id).await?;
        match container.status {
            ContainerStatus::Running => Ok(container),
            ContainerStatus::Expired => Err(ServiceError::invalid(format!(
                "Container {id} expired after {} idle minutes, with its files; create a new one.",
                container.expires_after_minutes
            ))),
        }
    }

    /// The user's container `id`, running or expired; another user's is "not found".
    pub async fn retrieve(&self, user: &User, id: &str) -> Result<ContainerInfo, ServiceError> {
        if let Some(container) = self.live(user, id).await? {
            return Ok(container);
        }
        let body = self
            .store
            .owned_body(OwnedTable::ExpiredContainers, user.id, id)
            .await
            .map_err(read_error)?;
        let body = body.ok_or_else(|| ServiceError::not_found(format!("container {id}")))?;
        serde_json::from_str(&body)
            .map_err(|e| ServiceError::internal("The containers cannot be read", &e))
    }

    /// The user's container `id` if it is there and has not expired.
    async fn live(&self, user: &User, id: &str) -> Result<Option<ContainerInfo>, ServiceError> {
        let row = self
            .store
            .container(user.id, id)
            .await
            .map_err(read_error)?;
        match row {
            Some(row) => self.unexpired(user, row).await,
            None => Ok(None),
        }
    }

    /// Deletes the container with its session and files (or the record of one expired).
    pub async fn delete(&self, user: &User, id: &str) -> Result<(), ServiceError> {
        if let Some(container) = self.live(user, id).await? {
            // The container's rows go with its session's.
            return self.sessions.remove(user, &container.session_id).await;
        }
        let deleted = self
            .store
            .delete_owned(OwnedTable::ExpiredContainers, user.id, id)
            .await
            .map_err(|e| ServiceError::internal("The container cannot be deleted", &e))?;
        if !deleted {
            return Err(ServiceError::not_found(format!("container {id}")));
        }
        Ok(())
    }

    /// Expires every container idle past its expiry (and not running code), and forgets
    /// those expired more than a day ago.
    pub async fn expire_idle(&self) -> Result<(), ServiceError> {
        let rows = self
            .store
            .containers_with_owners()
            .await
            .map_err(read_error)?;
        self.store
            .forget_expired_containers(unix_now() - EXPIRED_KEPT_SECS)
            .await
            .map_err(read_error)?;
        for (row, user) in rows {
            if self.past_expiry(row.last_active_at, row.expires_after_minutes) {
                let id = row.id.clone();
                match self.unexpired(&user, row).await {
                    Ok(Some(_)) => {}
                    Ok(None) => tracing::info!(container = %id, "an idle container expired"),
                    Err(error) => {
                        tracing::warn!(container = %id, "an idle container cannot be expired: {error}")
                    }
                }
            }
        }
        Ok(())
    }

    /// Expires idle containers, often enough for their minute, until aborted.
    pub fn spawn_expiry_reaper(self: &Arc<Self>) -> JoinHandle<()> {
        let containers = self.clone();
        let every = (self.minute / 4).clamp(Duration::from_millis(50), Duration::from_secs(15));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(error) = containers.expire_idle().await {
                    tracing::warn!("the containers cannot be checked for expiry: {error}");
                }
            }
        })
    }

    /// Marks the container used now: its expiry starts again.
    pub async fn touch(&self, id: &str) -> Result<(), ServiceError> {
        self.store
            .touch_container(id, unix_now())
            .await
            .map_err(|e| ServiceError::internal("The container cannot be written", &e))
    }

    /// Puts `staged` in the container's `/mnt/data` under `filename`, numbered if that
    /// name is taken.
    pub async fn add_file(
        &self,
        user: &User,
        id: &str,
        filename: &str,
        staged: NamedTempFile,
    ) -> Result<ContainerFile, ServiceError> {
        let filename = file_name(filename)?;
        let container = self.get(user, id).await?;
        let workdir = self.sessions.workdir(user, &container.session_id).await?;
        let placed = blocking(move || {
            let taken: Vec<String> = workdir.list()?.into_iter().map(|f| f.path).collect();
            let path = FilePath::parse(&free_name(&filename, &taken))?;
            workdir.place(&path, staged)
        })
        .await??;
        self.touch(id).await?;
        self.record(&container.id, &placed, FileSource::User).await
    }

    /// Copies the user's file `file_id` into the container.
    pub async fn copy_file(
        &self,
        user: &User,
        id: &str,
        file_id: &str,
    ) -> Result<ContainerFile, ServiceError> {
        let (mut source, file) = self.files.open(user, file_id).await?;
        let staging_dir = self.staging_dir.clone();
        let staged = blocking(move || {
            let mut staged = NamedTempFile::new_in(staging_dir)?;
            std::io::copy(&mut source, &mut staged)?;
            staged.flush()?;
            Ok::<_, std::io::Error>(staged)
        })
        .await?
        .map_err(|e| ServiceError::internal("The file cannot be copied", &e))?;
        self.add_file(user, id, &file.filename, staged).await
    }

    /// A page of the container's files, each regular file of its `/mnt/data` (those the
    /// code made get their id now).
    pub async fn files(
        &self,
        user: &User,
        id: &str,
        newest_first: bool,
        page: &PageRequest,
    ) -> Result<Page<ContainerFile>, ServiceError> {
        let container = self.get(user, id).await?;
        let mut files = self.sync_files(user, &container).await?;
        files.sort_by(|a, b| (a.created_at, &a.path).cmp(&(b.created_at, &b.path)));
        if newest_first {
            files.reverse();
        }
        page.page(files, |file| &file.id)
    }

    /// Every file of the container, in no particular order.
    pub async fn all_files(
        &self,
        user: &User,
        id: &str,
    ) -> Result<Vec<ContainerFile>, ServiceError> {
        let container = self.get(user, id).await?;
        self.sync_files(user, &container).await
    }

    /// The container's file `file_id`.
    pub async fn file(
        &self,
        user: &User,
        id: &str,
        file_id: &str,
    ) -> Result<ContainerFile, ServiceError> {
        let container = self.get(user, id).await?;
        self.sync_files(user, &container)
            .await?
            .into_iter()
            .find(|file| file.id == file_id)
            .ok_or_else(|| ServiceError::not_found(format!("file {file_id} in container {id}")))
    }

    /// The file's content, opened for reading, with what it is.
    pub async fn open_file(
        &self,
        user: &User,
        id: &str,
        file_id: &str,
    ) -> Result<(std::fs::File, ContainerFile), ServiceError> {
        let file = self.file(user, id, file_id).await?;
        let container = self.get(user, id).await?;
        let workdir = self.sessions.workdir(user, &container.session_id).await?;
        let path = FilePath::parse(&file.path)?;
        let (opened, info) = blocking(move || workdir.open(&path)).await??;
        Ok((
            opened,
            ContainerFile {
                bytes: info.size,
                ..file
            },
        ))
    }

    pub async fn delete_file(
        &self,
        user: &User,
        id: &str,
        file_id: &str,
    ) -> Result<(), ServiceError> {
        let file = self.file(user, id, file_id).await?;
        let container = self.get(user, id).await?;
        let workdir = self.sessions.workdir(user, &container.session_id).await?;
        let path = FilePath::parse(&file.path)?;
        blocking(move || workdir.remove(&path)).await??;
        self.store
            .delete_container_file(&file.id)
            .await
            .map_err(|e| ServiceError::internal("The container cannot be written", &e))?;
        self.touch(id).await
    }

    /// The container's files as its directory holds them now: rows for new files (made
    /// by the code), none for files gone.
    async fn sync_files(
        &self,
        user: &User,
        container: &ContainerInfo,
    ) -> Result<Vec<ContainerFile>, ServiceError> {
        let workdir = self.sessions.workdir(user, &container.session_id).await?;
        let listed = blocking(move || workdir.list()).await??;
        let mut new_ids = Vec::new();
        for _ in &listed {
            new_ids.push(format!("cfile_{}", random_id()?));
        }
        self.store
            .sync_container_files(&container.id, listed, new_ids, unix_now())
            .await
            .map_err(read_error)
    }

    /// Records a file the client put in the container (its path's old row replaced).
    async fn record(
        &self,
        container_id: &str,
        placed: &FileInfo,
        source: FileSource,
    ) -> Result<ContainerFile, ServiceError> {
        let file = ContainerFile {
            id: format!("cfile_{}", random_id()?),
            container_id: container_id.to_owned(),
            path: placed.path.clone(),
            bytes: placed.size,
            source,
            created_at: unix_now(),
        };
        self.store
            .insert_container_file(file.clone())
            .await
            .map_err(|e| ServiceError::internal("The container cannot be written", &e))?;
        Ok(file)
    }

    /// Whether a container last active at `last_active_at` has been idle past its
    /// expiry of `minutes`.
    fn past_expiry(&self, last_active_at: i64, minutes: u32) -> bool {
        let idle_secs = u128::try_from(unix_now() - last_active_at).unwrap_or(0);
        idle_secs * 1000 > self.minute.as_millis() * u128::from(minutes)
    }

    /// The container as stored if it has not expired; one that has (idle past its
    /// expiry and not running code) goes now, leaving the record that it expired.
    async fn unexpired(
        &self,
        user: &User,
        row: ContainerRecord,
    ) -> Result<Option<ContainerInfo>, ServiceError> {
        let session = match self.sessions.get(user, &row.session_id) {
            Ok(session) => session,
            // Its rows went with the session's: nothing is left to expire.
            Err(ServiceError::NotFound(_)) => return Ok(None),
            Err(error) => return Err(error),
        };
        let container = ContainerInfo {
            id: row.id,
            name: row.name,
            session_id: row.session_id,
            created_at: row.created_at,
            last_active_at: row.last_active_at,
            expires_after_minutes: row.expires_after_minutes,
            limits: session.limits,
            status: ContainerStatus::Running,
        };
        if !self.past_expiry(container.last_active_at, container.expires_after_minutes)
            || session.state == SessionState::Busy
        {
            return Ok(Some(container));
        }
        let expired = ContainerInfo {
            status: ContainerStatus::Expired,
            ..container
        };
        let body = serde_json::to_string(&expired)
            .map_err(|e| ServiceError::internal("The container cannot be expired", &e))?;
        self.store
            .insert_expired_container(&expired.id, user.id, unix_now(), body)
            .await
            .map_err(|e| ServiceError::internal("The container cannot be expired", &e))?;
        // Its session's rows (and the container's) go, with its files.
        match self.sessions.remove(user, &expired.session_id).await {
            Ok(()) | Err(ServiceError::NotFound(_)) => Ok(None),
            Err(error) => Err(error),
        }
    }
}

fn read_error(error: StoreError) -> ServiceError {
    ServiceError::internal("The containers cannot be read", &error)
}

/// `name`, or `stem_1.ext`, `stem_2.ext`, … : the first not in `taken`.
fn free_name(name: &str, taken: &[String]) -> String {
    if !taken.iter().any(|path| path == name) {
        return name.to_owned();
    }
    let (stem, extension) = match name.rsplit_once('.') {
        Some((stem, extension)) if !stem.is_empty() => (stem, format!(".{extension}")),
        _ => (name, String::new()),
    };
    (1..)
        .map(|n| format!("{stem}_{n}{extension}"))
        .find(|candidate| !taken.contains(candidate))
        .unwrap_or_else(|| name.to_owned())
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ServiceError::internal("A file operation stopped", &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_name_gets_the_first_free_number() {
        let taken = [
            "data.csv".to_owned(),
            "data_1.csv".to_owned(),
            "README".to_owned(),
        ];
        assert_eq!(free_name("plot.png", &taken), "plot.png");
        assert_eq!(free_name("data.csv", &taken), "data_2.csv");
        assert_eq!(free_name("README", &taken), "README_1");
        assert_eq!(free_name(".env", &[".env".to_owned()]), ".env_1");
    }
}
