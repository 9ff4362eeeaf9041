//! Where sessions' files are kept beyond the node that runs them.
//!
//! A live session always works on its local directory (`sessions/ID`). With
//! [`FilesLocation::Local`] that directory is all there is. With
//! [`FilesLocation::Bucket`] the directory is also written back to an S3-compatible
//! bucket after each use of the session (and after an upload or a deletion through a
//! door), content-addressed: `PREFIX/objects/SHA256` holds each distinct content once,
//! and `PREFIX/sessions/ID.json` (the manifest) maps each path to its hash, size and
//! modification time. A file whose size and modification time are those of the manifest
//! is not read again, and content already in the bucket is not uploaded again. When a
//! session starts on a directory that is missing or empty (another node, a lost disk),
//! or whose manifest another node wrote since (the session ran there after it ran here),
//! its files are fetched from its manifest before its Python process starts; the
//! manifest names the node that wrote it for that.
//!
//! The directory belongs to the sandboxed code: it is read through `sandcell-safedir`
//! (no link is followed, only regular files are kept) and never more than the session's
//! disk quota is read or restored. Deleting a session deletes its manifest; the objects
//! it named stay until a collection of objects no manifest names (not done here).

use crate::files::{FilePath, WorkDir, LISTING};
use crate::metrics::Metrics;
use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload, RetryConfig};
use sandcell_safedir::{SafeDir, SafeDirError, SafePath};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::io::AsyncWriteExt;

/// Where sessions' files are kept: `--files`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum FilesLocation {
    /// Only in the sessions' local directories.
    #[default]
    Local,
    /// Also in an S3-compatible bucket, under `prefix` (no leading or trailing `/`).
    Bucket { bucket: String, prefix: String },
}

impl FilesLocation {
    /// `local` (or nothing), or `s3://BUCKET/PREFIX` (the prefix may be empty).
    pub fn parse(text: &str) -> Result<Self, FilesError> {
        if text == "local" || text.is_empty() {
            return Ok(Self::Local);
        }
        let Some(rest) = text.strip_prefix("s3://") else {
            return Err(FilesError::InvalidLocation(text.to_owned()));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/');
        if bucket.is_empty() || prefix.split('/').any(|part| part == "." || part == "..") {
            return Err(FilesError::InvalidLocation(text.to_owned()));
        }
        Ok(Self::Bucket {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }
}

/// Why sessions' files could not be written back or fetched. Each is one sentence.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("{0} is not a place for files: give `local` or `s3://BUCKET/PREFIX`")]
    InvalidLocation(String),
    #[error("the bucket {bucket} cannot be used ({reason}); check AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")]
    Unreachable { bucket: String, reason: String },
    #[error("the bucket refused an operation: {0}")]
    Bucket(#[from] object_store::Error),
    #[error("the manifest of session {id} in the bucket cannot be read: {source}")]
    Manifest {
        id: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the files of session {id} exceed its disk quota of {quota} bytes, so they are not written back")]
    OverQuota { id: String, quota: u64 },
    #[error("the content of {path} in the bucket does not match its manifest")]
    Corrupt { path: String },
    #[error("a session file cannot be read: {0}")]
    File(#[from] SafeDirError),
    #[error("a staged copy of a session file failed: {0}")]
    Staging(#[from] std::io::Error),
    #[error("a background task of the file store failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// One file in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ManifestFile {
    /// SHA-256 of the content, hex: the object's name.
    hash: String,
    size: u64,
    /// RFC 3339 with nanoseconds.
    modified: String,
}

/// A session's files in the bucket: path (relative to `/mnt/data`) to content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Manifest {
    files: BTreeMap<String, ManifestFile>,
    /// The node that wrote it. A node whose directory of the session holds files keeps
    /// them only when it wrote the manifest last: any other node's write is newer than
    /// them. Absent in manifests of older sandcells (the directory is then kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    node: Option<String>,
}

/// What one write-back did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteBack {
    /// Objects uploaded (contents the bucket did not have).
    pub uploaded: usize,
    /// Whether the manifest changed (and was written).
    pub manifest_written: bool,
}

/// Sessions' files: the local directory alone, or written back to a bucket.
#[derive(Debug)]
pub enum SessionFiles {
    Local,
    Bucket(BucketFiles),
}

/// The bucket side of [`SessionFiles`].
#[derive(Debug)]
pub struct BucketFiles {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// Where copies are staged before they are uploaded or placed: beside the sessions.
    staging_dir: PathBuf,
    metrics: Arc<Metrics>,
    /// This node's id, written into the manifests it writes.
    node_id: String,
    /// Per session, the manifest last known to be in the bucket; the lock makes one
    /// write-back of a session at a time.
    manifests: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Manifest>>>>>,
}

impl SessionFiles {
    /// Connects to the bucket of `location` (with the `AWS_*` variables) and checks that
    /// it answers; `node_id` is this node's.
    pub async fn connect(
        location: &FilesLocation,
        staging_dir: PathBuf,
        metrics: Arc<Metrics>,
        node_id: &str,
    ) -> Result<Self, FilesError> {
        let FilesLocation::Bucket { bucket, prefix } = location else {
            return Ok(Self::Local);
        };
        let unreachable = |error: object_store::Error| FilesError::Unreachable {
            bucket: bucket.clone(),
            reason: root_cause(&error),
        };
        // A plain-HTTP endpoint is an S3-compatible server the operator named.
        let http_endpoint = std::env::var("AWS_ENDPOINT_URL")
            .or_else(|_| std::env::var("AWS_ENDPOINT"))
            .is_ok_and(|url| url.starts_with("http://"));
        let store = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_allow_http(http_endpoint)
            // A few retries within seconds: a write-back that fails is tried again with
            // the next execution, and an unreachable bucket stops `serve` soon.
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(20),
                ..RetryConfig::default()
            })
            .build()
            .map_err(unreachable)?;
        let files = BucketFiles {
            store: Arc::new(store),
            prefix: prefix.clone(),
            staging_dir,
            metrics,
            node_id: node_id.to_owned(),
            manifests: Mutex::default(),
        };
        // One listing proves the endpoint, the bucket and the credentials.
        let probe = files.path("sessions/");
        if let Some(Err(error)) = files.store.list(Some(&probe)).next().await {
            return Err(unreachable(error));
        }
        Ok(Self::Bucket(files))
    }

    /// Whether files are kept beyond the local directories (and can be fetched again).
    pub fn keeps_copies(&self) -> bool {
        matches!(self, Self::Bucket(_))
    }

    /// Writes the session's directory back; a failure is logged and counted, and the
    /// next write-back tries again (the local files are never touched).
    pub async fn write_back(&self, id: &str, dir: &Path, quota: u64) {
        let Self::Bucket(files) = self else {
            return;
        };
        match files.write_back(id, dir, quota).await {
            Ok(done) => files.metrics.record_write_back(Some(done.uploaded)),
            Err(error) => {
                tracing::warn!(
                    session = id,
                    "the session's files were not written back: {error}"
                );
                files.metrics.record_write_back(None);
            }
        }
    }

    /// Brings `dir` up to date with the session's files in the bucket before this node
    /// uses it: when `dir` has no files (a node that never ran the session, a lost disk),
    /// or another node wrote the manifest since (it ran the session after this node did),
    /// `dir` is emptied and filled from the manifest. Returns the files fetched.
    pub async fn sync_down(&self, id: &str, dir: &Path, quota: u64) -> Result<usize, FilesError> {
        let Self::Bucket(files) = self else {
            return Ok(0);
        };
        let lock = files.lock_for(id);
        let mut last = lock.lock().await;
        let Some(manifest) = files.read_manifest(id).await? else {
            return Ok(0);
        };
        let probe = dir.to_path_buf();
        let empty = tokio::task::spawn_blocking(move || {
            std::fs::read_dir(&probe).map(|mut entries| {
                // `lost+found` is the disk image's own, not the session's.
                entries.all(|e| e.is_ok_and(|e| e.file_name() == "lost+found"))
            })
        })
        .await??;
        let newer_elsewhere = manifest
            .node
            .as_ref()
            .is_some_and(|node| *node != files.node_id);
        if !empty && !newer_elsewhere {
            *last = Some(manifest);
            return Ok(0);
        }
        if !empty {
            let stale = dir.to_path_buf();
            tokio::task::spawn_blocking(move || empty_directory(&stale)).await??;
        }
        files.restore(id, manifest, dir, quota, &mut last).await
    }

    /// Keeps a copy of `local`, the OpenAI door's file `id`, in the bucket
    /// (`PREFIX/files/ID`), so that every node can serve it.
    pub async fn keep_user_file(&self, id: &str, local: &Path) -> Result<(), FilesError> {
        let Self::Bucket(files) = self else {
            return Ok(());
        };
        files.upload_to(files.user_file_path(id), local).await
    }

    /// Fetches the OpenAI door's file `id` of `size` bytes from the bucket into `local`;
    /// without a bucket, nothing is fetched.
    pub async fn fetch_user_file(
        &self,
        id: &str,
        local: &Path,
        size: u64,
    ) -> Result<(), FilesError> {
        let Self::Bucket(files) = self else {
            return Ok(());
        };
        let (staged, _) = files
            .stage(&files.user_file_path(id), size)
            .await?
            .ok_or_else(|| FilesError::Corrupt {
                path: format!("files/{id}"),
            })?;
        if let Some(parent) = local.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        staged.persist(local).map_err(|e| e.error)?;
        Ok(())
    }

    /// Deletes the bucket's copy of the OpenAI door's file `id`; a failure is logged (the
    /// row is gone, so nothing names the object any more).
    pub async fn forget_user_file(&self, id: &str) {
        let Self::Bucket(files) = self else {
            return;
        };
        if let Err(error) = files.store.delete(&files.user_file_path(id)).await {
            tracing::warn!("the bucket's copy of file {id} was not deleted: {error}");
        }
    }

    /// Deletes the session's manifest (its objects stay for a later collection).
    pub async fn forget(&self, id: &str) {
        let Self::Bucket(files) = self else {
            return;
        };
        let lock = files.lock_for(id);
        let _writing = lock.lock().await;
        if let Err(error) = files.store.delete(&files.manifest_path(id)).await {
            tracing::warn!(
                session = id,
                "the session's manifest was not deleted: {error}"
            );
        }
        crate::sessions::lock(&files.manifests).remove(id);
    }
}

impl BucketFiles {
    fn path(&self, rest: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(rest)
        } else {
            ObjectPath::from(format!("{}/{rest}", self.prefix))
        }
    }

    fn manifest_path(&self, id: &str) -> ObjectPath {
        self.path(&format!("sessions/{id}.json"))
    }

    fn object_path(&self, hash: &str) -> ObjectPath {
        self.path(&format!("objects/{hash}"))
    }

    fn lock_for(&self, id: &str) -> Arc<tokio::sync::Mutex<Option<Manifest>>> {
        crate::sessions::lock(&self.manifests)
            .entry(id.to_owned())
            .or_default()
            .clone()
    }

    async fn read_manifest(&self, id: &str) -> Result<Option<Manifest>, FilesError> {
        let bytes = match self.store.get(&self.manifest_path(id)).await {
            Ok(found) => found.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| FilesError::Manifest {
                id: id.to_owned(),
                source,
            })
    }

    async fn write_back(&self, id: &str, dir: &Path, quota: u64) -> Result<WriteBack, FilesError> {
        let lock = self.lock_for(id);
        let mut last = lock.lock().await;
        let previous = match last.as_ref() {
            Some(manifest) => manifest.clone(),
            None => self.read_manifest(id).await?.unwrap_or_default(),
        };
        let scan = {
            let (id, dir, staging, previous, node) = (
                id.to_owned(),
                dir.to_path_buf(),
                self.staging_dir.clone(),
                previous.clone(),
                self.node_id.clone(),
            );
            tokio::task::spawn_blocking(move || scan(&id, &dir, &previous, quota, &staging, &node))
                .await??
        };
        let known: HashSet<&str> = previous.files.values().map(|f| f.hash.as_str()).collect();
        let mut done = WriteBack::default();
        for (hash, staged) in &scan.staged {
            if known.contains(hash.as_str()) || self.has_object(hash).await? {
                continue;
            }
            self.upload(hash, staged.path()).await?;
            done.uploaded += 1;
        }
        if scan.manifest != previous {
            let body =
                serde_json::to_vec(&scan.manifest).map_err(|source| FilesError::Manifest {
                    id: id.to_owned(),
                    source,
                })?;
            self.store
                .put(&self.manifest_path(id), PutPayload::from(body))
                .await?;
            done.manifest_written = true;
        }
        *last = Some(scan.manifest);
        Ok(done)
    }

    async fn has_object(&self, hash: &str) -> Result<bool, FilesError> {
        match self.store.head(&self.object_path(hash)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// Uploads a staged copy, in parts when it is large.
    async fn upload(&self, hash: &str, staged: &Path) -> Result<(), FilesError> {
        self.upload_to(self.object_path(hash), staged).await
    }

    async fn upload_to(&self, object: ObjectPath, staged: &Path) -> Result<(), FilesError> {
        let mut source = tokio::fs::File::open(staged).await?;
        let mut writer = object_store::buffered::BufWriter::new(self.store.clone(), object);
        tokio::io::copy(&mut source, &mut writer).await?;
        writer.shutdown().await?;
        Ok(())
    }

    /// Fetches `manifest`'s files into the empty `dir`; `last` (the session's cached
    /// manifest, locked by the caller) becomes `manifest`.
    async fn restore(
        &self,
        id: &str,
        manifest: Manifest,
        dir: &Path,
        quota: u64,
        last: &mut Option<Manifest>,
    ) -> Result<usize, FilesError> {
        let total: u64 = manifest.files.values().map(|f| f.size).sum();
        if total > quota {
            return Err(FilesError::OverQuota {
                id: id.to_owned(),
                quota,
            });
        }
        let workdir = WorkDir::new(dir);
        for (path, file) in &manifest.files {
            let target = FilePath::parse(path)?;
            let staged = self.download(path, file).await?;
            let workdir = workdir.clone();
            tokio::task::spawn_blocking(move || workdir.place(&target, staged)).await??;
        }
        let restored = manifest.files.len();
        *last = Some(manifest);
        Ok(restored)
    }

    /// The object of `file` in a staged copy with its modification time, checked
    /// against its size and hash.
    async fn download(
        &self,
        path: &str,
        file: &ManifestFile,
    ) -> Result<tempfile::NamedTempFile, FilesError> {
        let corrupt = || FilesError::Corrupt {
            path: path.to_owned(),
        };
        let (staged, hash) = self
            .stage(&self.object_path(&file.hash), file.size)
            .await?
            .ok_or_else(corrupt)?;
        if hash != file.hash {
            return Err(corrupt());
        }
        let modified = humantime::parse_rfc3339(&file.modified).map_err(|_| corrupt())?;
        staged.as_file().set_modified(modified)?;
        Ok(staged)
    }

    /// The object at `object` in a staged copy, with its SHA-256 (hex); `None` when it is
    /// not `size` bytes long (more is never read).
    async fn stage(
        &self,
        object: &ObjectPath,
        size: u64,
    ) -> Result<Option<(tempfile::NamedTempFile, String)>, FilesError> {
        let staged = tempfile::NamedTempFile::new_in(&self.staging_dir)?;
        let mut writer = tokio::fs::File::from_std(staged.reopen()?);
        let mut hasher = Sha256::new();
        let mut read = 0u64;
        let mut chunks = self.store.get(object).await?.into_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            read += chunk.len() as u64;
            if read > size {
                return Ok(None);
            }
            hasher.update(&chunk);
            writer.write_all(&chunk).await?;
        }
        writer.flush().await?;
        Ok((read == size).then(|| (staged, hex(&hasher.finalize()))))
    }

    /// Where the OpenAI door's file `id` is kept.
    fn user_file_path(&self, id: &str) -> ObjectPath {
        self.path(&format!("files/{id}"))
    }
}

/// Removes everything in `dir` (links themselves, never what they point to), keeping
/// the disk image's `lost+found`.
fn empty_directory(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name() == "lost+found" {
            continue;
        }
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// The directory as a manifest, with staged copies of the files whose content may be
/// new (size or modification time not those of `previous`).
struct Scan {
    manifest: Manifest,
    staged: Vec<(String, tempfile::NamedTempFile)>,
}

/// Walks `dir` without following links and reads what changed since `previous`, never
/// more than `quota` bytes in all.
fn scan(
    id: &str,
    dir: &Path,
    previous: &Manifest,
    quota: u64,
    staging_dir: &Path,
    node_id: &str,
) -> Result<Scan, FilesError> {
    let over_quota = || FilesError::OverQuota {
        id: id.to_owned(),
        quota,
    };
    let root = SafeDir::open(dir)?.shown_as("/mnt/data");
    let listing = root.files(LISTING);
    if !listing.complete {
        tracing::warn!(
            session = id,
            "the session has more files than are written back; the first ones are kept"
        );
    }
    let mut scan = Scan {
        manifest: Manifest {
            node: Some(node_id.to_owned()),
            ..Manifest::default()
        },
        staged: Vec::new(),
    };
    let mut total = 0u64;
    for entry in &listing.files {
        // A name that is not UTF-8 could not be asked for by name, nor restored.
        let Some(path) = entry.path.to_str() else {
            continue;
        };
        let modified = modified_of(entry.modified);
        if let Some(known) = previous
            .files
            .get(path)
            .filter(|f| f.size == entry.size && f.modified == modified)
        {
            total += known.size;
            if total > quota {
                return Err(over_quota());
            }
            scan.manifest.files.insert(path.to_owned(), known.clone());
            continue;
        }
        let safe_path = SafePath::parse(path)?;
        let (file, opened) = match root.open_file(&safe_path) {
            Ok(found) => found,
            // Gone or replaced by a link or a special file since the walk: not kept.
            Err(
                SafeDirError::NotFound(_)
                | SafeDirError::Symlink(_)
                | SafeDirError::NotRegular(_)
                | SafeDirError::IsDirectory(_),
            ) => continue,
            Err(error) => return Err(error.into()),
        };
        let mut staged = tempfile::NamedTempFile::new_in(staging_dir)?;
        let (hash, size) = copy_hashed(file, staged.as_file_mut(), quota - total.min(quota))
            .map_err(|error| match error {
                CopyError::TooLarge => over_quota(),
                CopyError::Io(error) => FilesError::Staging(error),
            })?;
        total += size;
        let modified = modified_of(opened.modified);
        scan.manifest.files.insert(
            path.to_owned(),
            ManifestFile {
                hash: hash.clone(),
                size,
                modified,
            },
        );
        scan.staged.push((hash, staged));
    }
    Ok(scan)
}

/// The innermost error of a chain: what actually went wrong (a refused connection, a
/// status the bucket answered), without the layers that each repeat it; of an S3 error
/// body, its `<Message>`.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    let text = cause.to_string();
    let message = text
        .split_once("<Message>")
        .and_then(|(_, rest)| rest.split_once("</Message>"))
        .map(|(message, _)| message.trim_end_matches('.').to_owned());
    message.unwrap_or(text)
}

fn modified_of(time: SystemTime) -> String {
    humantime::format_rfc3339_nanos(time).to_string()
}

enum CopyError {
    TooLarge,
    Io(std::io::Error),
}

/// Copies at most `limit` bytes of `source` into `target`, hashing them.
fn copy_hashed(
    source: std::fs::File,
    target: &mut std::fs::File,
    limit: u64,
) -> Result<(String, u64), CopyError> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut bounded = source.take(limit.saturating_add(1));
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = bounded.read(&mut buffer).map_err(CopyError::Io)?;
        if read == 0 {
            break;
        }
        size += read as u64;
        if size > limit {
            return Err(CopyError::TooLarge);
        }
        hasher.update(&buffer[..read]);
        target.write_all(&buffer[..read]).map_err(CopyError::Io)?;
    }
    target.flush().map_err(CopyError::Io)?;
    Ok((hex(&hasher.finalize()), size))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_parsed() {
        assert_eq!(FilesLocation::parse("local").unwrap(), FilesLocation::Local);
        assert_eq!(
            FilesLocation::parse("s3://b/p/q/").unwrap(),
            FilesLocation::Bucket {
                bucket: "b".into(),
                prefix: "p/q".into()
            }
        );
        assert_eq!(
            FilesLocation::parse("s3://b").unwrap(),
            FilesLocation::Bucket {
                bucket: "b".into(),
                prefix: String::new()
            }
        );
        for bad in ["/data", "s3://", "s3:///p", "s3://b/../x", "gs://b"] {
            assert!(FilesLocation::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bucket_error_is_told_by_its_cause() {
        let body = "<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist.</Message></Error>";
        let error = object_store::Error::Generic {
            store: "S3",
            source: Box::new(std::io::Error::other(body)),
        };
        assert_eq!(root_cause(&error), "The specified bucket does not exist");
        let refused = object_store::Error::Generic {
            store: "S3",
            source: Box::new(std::io::Error::other("Connection refused")),
        };
        assert_eq!(root_cause(&refused), "Connection refused");
    }

    #[test]
    fn emptying_a_directory_removes_links_not_what_they_name() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("kept"), "k").unwrap();
        std::fs::create_dir_all(dir.path().join("sub/deeper")).unwrap();
        std::fs::create_dir(dir.path().join("lost+found")).unwrap();
        std::fs::write(dir.path().join("sub/deeper/a"), "a").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("sub/out")).unwrap();
        empty_directory(dir.path()).unwrap();
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["lost+found"]);
        assert!(outside.path().join("kept").exists());
    }

    #[test]
    fn a_scan_reads_only_regular_files_within_the_quota_and_no_links() {
        let dir = tempfile::tempdir().unwrap();
        let staging = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        std::fs::write(dir.path().join("a.txt"), "hello").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).unwrap();
        let _socket = std::os::unix::net::UnixListener::bind(dir.path().join("socket")).unwrap();
        let first = scan(
            "s",
            dir.path(),
            &Manifest::default(),
            1024,
            staging.path(),
            "n",
        )
        .unwrap();
        let paths: Vec<&String> = first.manifest.files.keys().collect();
        assert_eq!(paths, ["a.txt"]);
        let hello = &first.manifest.files["a.txt"];
        assert_eq!(hello.size, 5);
        assert_eq!(
            hello.hash,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(first.staged.len(), 1);
        assert_eq!(
            first.manifest.node.as_deref(),
            Some("n"),
            "the writer is named"
        );
        // Unchanged: nothing read again.
        let second = scan("s", dir.path(), &first.manifest, 1024, staging.path(), "n").unwrap();
        assert_eq!(second.manifest, first.manifest);
        assert!(second.staged.is_empty());
        // More than the quota is refused, not cut.
        assert!(matches!(
            scan(
                "s",
                dir.path(),
                &Manifest::default(),
                4,
                staging.path(),
                "n"
            ),
            Err(FilesError::OverQuota { .. })
        ));
    }
}
