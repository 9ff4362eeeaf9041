//! The SQLite database: users with their hashed API keys, session metadata,
//! conversations, notebooks, and the OpenAI door's files, containers and responses.
//!
//! Every SQL statement of sandcell is in this module, behind typed methods of [`Store`]
//! that take and return plain Rust values, one file per area: `users.rs`,
//! `conversations.rs`, `notebooks.rs`, `files.rs`, `containers.rs`, `responses.rs`, and
//! this file for sessions and for a user's objects read or deleted by id
//! ([`OwnedTable`]). Nothing outside the module knows SQL or `rusqlite`, so another
//! database is another implementation of this module. Statements that must hold
//! together are one method, which holds the connection while they run, in one
//! transaction where they change several rows.
//!
//! One file, one connection behind a mutex, used from `spawn_blocking` so the async
//! threads never wait on the disk. The schema moves forward by [`MIGRATIONS`], counted in
//! `PRAGMA user_version`; a feature that needs tables of its own appends a migration and
//! the methods that use them.

mod containers;
mod conversations;
mod files;
mod notebooks;
mod responses;
mod users;

pub use containers::{ContainerFile, ContainerRecord, FileSource};
pub use conversations::ConversationRecord;
pub use files::StoredFile;
pub use notebooks::{NotebookRecord, NotebookSave};
pub use users::{User, LOCAL_USER};

use crate::limits::SessionLimits;
use rusqlite::{params, Connection, OptionalExtension};
use sandcell_session::Allowlist;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Each entry takes the schema from version N (its index) to N + 1. Append only: a
/// database already at version N never runs the first N entries again.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        -- SHA-256 of the user's API key; NULL for the local user of a loopback server.
        key_hash BLOB UNIQUE,
        created_at TEXT NOT NULL
    );
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id),
        created_at TEXT NOT NULL,
        last_used_at TEXT NOT NULL,
        memory_mib INTEGER NOT NULL,
        processes INTEGER NOT NULL,
        timeout_secs REAL NOT NULL,
        file_size_mib INTEGER NOT NULL,
        disk_quota_mib INTEGER NOT NULL
    );
    CREATE INDEX sessions_by_user ON sessions(user_id, created_at);
",
    "
    -- A conversation runs its code in one session and goes when the session goes.
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id),
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        title TEXT NOT NULL,
        model TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX conversations_by_user ON conversations(user_id, updated_at);
    CREATE INDEX conversations_by_session ON conversations(session_id);
    -- Its messages, tool calls and their outputs, in order: one transcript record each
    -- (JSON, the format of `sandcell chat`'s JSON Lines), `kind` being its type.
    CREATE TABLE conversation_records (
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        record TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (conversation_id, seq)
    ) WITHOUT ROWID;
",
    "
    -- A notebook as its person left it: cells (JSON: each with its source, outputs and
    -- execution count) and the session it runs in, which may have gone since.
    CREATE TABLE notebooks (
        id TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id),
        title TEXT NOT NULL,
        session_id TEXT,
        cells TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX notebooks_by_user ON notebooks(user_id, updated_at);
",
    "
    -- The OpenAI door's files: a user's uploads kept outside any session (`files/ID`).
    -- Times are Unix seconds, as that door shows them.
    CREATE TABLE files (
        id TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id),
        filename TEXT NOT NULL,
        purpose TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX files_by_user ON files(user_id, created_at);
    -- A container is a session with a name and an idle expiry; it goes with its session.
    CREATE TABLE containers (
        id TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id),
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        expires_minutes INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        last_active_at INTEGER NOT NULL
    );
    CREATE INDEX containers_by_user ON containers(user_id, created_at);
    CREATE INDEX containers_by_session ON containers(session_id);
    -- The ids of a container's files (paths in its /mnt/data), `source` user or assistant.
    CREATE TABLE container_files (
        id TEXT PRIMARY KEY,
        container_id TEXT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
        path TEXT NOT NULL,
        source TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        UNIQUE (container_id, path)
    );
    -- A response: one turn of the interpreter loop in a container (JSON, the core's
    -- `ResponseRecord`), chained to earlier ones by its previous response's id.
    CREATE TABLE responses (
        id TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id),
        created_at INTEGER NOT NULL,
        body TEXT NOT NULL
    );
    -- A chat's history (a hash the door makes of its messages) -> the response that ended
    -- it, so that a request repeating that history goes on in the same container.
    CREATE TABLE chat_threads (
        user_id INTEGER NOT NULL REFERENCES users(id),
        key TEXT NOT NULL,
        response_id TEXT NOT NULL,
        PRIMARY KEY (user_id, key)
    ) WITHOUT ROWID;
",
    "
    -- A container that expired (its session and files deleted), kept a while so that
    -- retrieving it says `expired` (rather than that there is no such container): its last
    -- state (JSON, the core's `ContainerInfo`) and when it expired (Unix seconds).
    CREATE TABLE expired_containers (
        id TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id),
        expired_at INTEGER NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX expired_containers_by_time ON expired_containers(expired_at);
",
    "
    -- How many times a notebook was saved: a save names the revision it changes, so that
    -- one page cannot overwrite what another saved since it read the notebook.
    ALTER TABLE notebooks ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
",
    "
    -- The session's network allowlist, its entries separated by spaces; empty: no network.
    ALTER TABLE sessions ADD COLUMN allow_net TEXT NOT NULL DEFAULT '';
",
    "
    -- The configured environment the session runs in; NULL: the base environment.
    ALTER TABLE sessions ADD COLUMN environment TEXT;
",
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database {path} cannot be used: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("the database {path} has schema version {found}, newer than this sandcell knows ({known}); use a newer sandcell")]
    TooNew {
        path: PathBuf,
        found: i64,
        known: usize,
    },
    #[error("a user named {0:?} already has an API key")]
    KeyExists(String),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the database task stopped: {0}")]
    Task(String),
}

/// What the database keeps about a session.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    pub id: String,
    pub user_id: i64,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub last_used_at: String,
    pub limits: SessionLimits,
    /// What the session may reach; empty: no network.
    pub network: Allowlist,
    /// The configured environment it runs in; `None`: the base environment.
    pub environment: Option<String>,
}

/// An allowlist as `insert_session` wrote it. Entries were read before they were
/// stored; one that no longer reads (an older sandcell's syntax) is left out, so the
/// session gets less network, never more.
fn stored_allowlist(text: &str) -> Allowlist {
    let entries = text.split_whitespace().filter(|entry| {
        let readable = entry.parse::<sandcell_session::NetEntry>().is_ok();
        if !readable {
            tracing::warn!("a session's network entry {entry:?} cannot be read; it is left out");
        }
        readable
    });
    Allowlist::parse(&entries.collect::<Vec<_>>()).unwrap_or_default()
}

/// The database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    connection: Arc<Mutex<Connection>>,
}

impl Store {
    /// Opens (or creates) the database file and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open_error = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut connection = Connection::open(path).map_err(open_error)?;
        // WAL lets `sandcell serve --create-key` write while a server reads; the busy
        // timeout makes the two wait for each other instead of failing.
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(open_error)?;
        // In WAL mode, NORMAL syncs at checkpoints rather than at every commit: a crash of
        // sandcell loses nothing committed (only a crash of the machine can lose the last
        // few), and an execution's bookkeeping does not wait for the disk.
        connection
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_error)?;
        connection
            .pragma_update(None, "foreign_keys", true)
            .map_err(open_error)?;
        connection
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_error)?;
        migrate(&mut connection, path)?;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    /// Runs `work` with the connection on a blocking thread.
    async fn call<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let connection = self.connection.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while the lock was held leaves no half-done work behind: every
            // multi-statement change runs in a transaction.
            let mut connection = connection
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            work(&mut connection)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Runs `work` with the connection on this thread: for callers that cannot await
    /// (a transcript writing through as it grows), with work of a few milliseconds.
    fn call_blocking<T>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut connection = self
            .connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        work(&mut connection)
    }

    pub async fn insert_session(&self, record: SessionRecord) -> Result<(), StoreError> {
        self.call(move |c| {
            let l = &record.limits;
            c.execute(
                "INSERT INTO sessions (id, user_id, created_at, last_used_at, memory_mib,
                     processes, timeout_secs, file_size_mib, disk_quota_mib, allow_net,
                     environment)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    record.id,
                    record.user_id,
                    record.created_at,
                    record.last_used_at,
                    l.memory_mib,
                    l.processes,
                    l.timeout_secs,
                    l.file_size_mib,
                    l.disk_quota_mib,
                    record.network.to_strings().join(" "),
                    record.environment
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// Every session of every user, oldest first.
    pub async fn sessions(&self) -> Result<Vec<SessionRecord>, StoreError> {
        self.call(|c| {
            let mut statement = c.prepare(
                "SELECT id, user_id, created_at, last_used_at, memory_mib, processes,
                        timeout_secs, file_size_mib, disk_quota_mib, allow_net, environment
                 FROM sessions ORDER BY created_at, id",
            )?;
            let rows = statement.query_map([], |r| {
                Ok(SessionRecord {
                    id: r.get(0)?,
                    user_id: r.get(1)?,
                    created_at: r.get(2)?,
                    last_used_at: r.get(3)?,
                    limits: SessionLimits {
                        memory_mib: r.get(4)?,
                        processes: r.get(5)?,
                        timeout_secs: r.get(6)?,
                        file_size_mib: r.get(7)?,
                        disk_quota_mib: r.get(8)?,
                    },
                    network: stored_allowlist(&r.get::<_, String>(9)?),
                    environment: r.get(10)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    pub async fn touch_session(&self, id: &str, at: String) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            c.execute(
                "UPDATE sessions SET last_used_at = ?2 WHERE id = ?1",
                params![id, at],
            )?;
            Ok(())
        })
        .await
    }

    /// Which conversation each session that has one belongs to: session id → conversation id.
    pub async fn conversation_sessions(
        &self,
    ) -> Result<std::collections::HashMap<String, String>, StoreError> {
        self.call(|c| {
            let mut statement = c.prepare("SELECT session_id, id FROM conversations")?;
            let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    pub async fn delete_session(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            c.execute("DELETE FROM sessions WHERE id = ?1", [id])?;
            Ok(())
        })
        .await
    }
}

/// The tables whose rows are a user's own objects, named by id (`/v1`'s responses, and the
/// records of expired containers).
#[derive(Debug, Clone, Copy)]
pub enum OwnedTable {
    Responses,
    ExpiredContainers,
}

impl OwnedTable {
    fn name(self) -> &'static str {
        match self {
            Self::Responses => "responses",
            Self::ExpiredContainers => "expired_containers",
        }
    }
}

impl Store {
    /// The `body` (JSON) of row `id` of `table` if it is the user's.
    pub async fn owned_body(
        &self,
        table: OwnedTable,
        user_id: i64,
        id: &str,
    ) -> Result<Option<String>, StoreError> {
        let id = id.to_owned();
        let sql = format!(
            "SELECT body FROM {} WHERE user_id = ?1 AND id = ?2",
            table.name()
        );
        self.call(move |c| {
            Ok(c.query_row(&sql, params![user_id, id], |r| r.get(0))
                .optional()?)
        })
        .await
    }

    /// Deletes row `id` of `table` if it is the user's; whether there was one.
    pub async fn delete_owned(
        &self,
        table: OwnedTable,
        user_id: i64,
        id: &str,
    ) -> Result<bool, StoreError> {
        let id = id.to_owned();
        let sql = format!(
            "DELETE FROM {} WHERE user_id = ?1 AND id = ?2",
            table.name()
        );
        self.call(move |c| Ok(c.execute(&sql, params![user_id, id])? > 0))
            .await
    }
}

fn migrate(connection: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let version: i64 = connection.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = MIGRATIONS.len();
    let start = usize::try_from(version).unwrap_or(usize::MAX);
    if start > known {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found: version,
            known,
        });
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(start) {
        // The schema change and its version number land together or not at all.
        let transaction = connection.transaction()?;
        transaction.execute_batch(migration)?;
        transaction.pragma_update(None, "user_version", index + 1)?;
        transaction.commit()?;
    }
    Ok(())
}

/// The current time as the database stores it: RFC 3339, UTC, milliseconds.
pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_run_once_and_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        drop(Store::open(&path).unwrap());
        // Opening again finds the schema current and changes nothing.
        drop(Store::open(&path).unwrap());
        let c = Connection::open(&path).unwrap();
        let version: i64 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::TooNew { found: 99, .. })
        ));
    }
}
