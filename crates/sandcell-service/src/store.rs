//! The SQLite database: users with their hashed API keys, session metadata,
//! conversations and notebooks.
//!
//! One file, one connection behind a mutex, used from `spawn_blocking` so the async
//! threads never wait on the disk. The schema moves forward by [`MIGRATIONS`], counted in
//! `PRAGMA user_version`; a feature that needs tables of its own appends a migration and
//! talks to the database through [`Store::call`].

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

/// The name of the single user of a loopback server that has no API keys.
pub const LOCAL_USER: &str = "local";

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

/// A user: the holder of one API key, or the local user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub name: String,
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
    pub async fn call<T, F>(&self, work: F) -> Result<T, StoreError>
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
    pub fn call_blocking<T>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut connection = self
            .connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        work(&mut connection)
    }

    /// Gives user `name` the key whose hash is `key_hash`, creating the user if needed.
    pub async fn set_user_key(&self, name: &str, key_hash: Vec<u8>) -> Result<User, StoreError> {
        let name = name.to_owned();
        self.call(move |c| {
            let changed = c.execute(
                "INSERT INTO users (name, key_hash, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET key_hash = excluded.key_hash
                 WHERE users.key_hash IS NULL",
                params![name, key_hash, now()],
            )?;
            if changed == 0 {
                return Err(StoreError::KeyExists(name));
            }
            let id = c.query_row("SELECT id FROM users WHERE name = ?1", [&name], |r| {
                r.get(0)
            })?;
            Ok(User { id, name })
        })
        .await
    }

    pub async fn user_by_key_hash(&self, key_hash: Vec<u8>) -> Result<Option<User>, StoreError> {
        self.call(move |c| {
            Ok(c.query_row(
                "SELECT id, name FROM users WHERE key_hash = ?1",
                [key_hash],
                |r| {
                    Ok(User {
                        id: r.get(0)?,
                        name: r.get(1)?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    pub async fn has_keys(&self) -> Result<bool, StoreError> {
        self.call(|c| {
            Ok(c.query_row(
                "SELECT EXISTS (SELECT 1 FROM users WHERE key_hash IS NOT NULL)",
                [],
                |r| r.get(0),
            )?)
        })
        .await
    }

    /// The user every request is made as on a loopback server without keys.
    pub async fn local_user(&self) -> Result<User, StoreError> {
        self.call(|c| {
            c.execute(
                "INSERT INTO users (name, key_hash, created_at) VALUES (?1, NULL, ?2)
                 ON CONFLICT(name) DO NOTHING",
                params![LOCAL_USER, now()],
            )?;
            let id = c.query_row("SELECT id FROM users WHERE name = ?1", [LOCAL_USER], |r| {
                r.get(0)
            })?;
            Ok(User {
                id,
                name: LOCAL_USER.into(),
            })
        })
        .await
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

    /// The conversation whose code runs in session `id`, if one does.
    pub async fn conversation_of_session(&self, id: &str) -> Result<Option<String>, StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            Ok(c.query_row(
                "SELECT id FROM conversations WHERE session_id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?)
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

/// Conversations.
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
                params![
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
            let mut statement = c.prepare(&format!(
                "{SELECT_CONVERSATION} WHERE user_id = ?1 ORDER BY updated_at DESC, id"
            ))?;
            let rows = statement.query_map([user_id], conversation_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
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
            Ok(c.query_row(
                &format!("{SELECT_CONVERSATION} WHERE user_id = ?1 AND id = ?2"),
                params![user_id, id],
                conversation_row,
            )
            .optional()?)
        })
        .await
    }

    /// A conversation's records (JSON), in order.
    pub async fn conversation_records(&self, id: &str) -> Result<Vec<String>, StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            let mut statement = c.prepare(
                "SELECT record FROM conversation_records WHERE conversation_id = ?1 ORDER BY seq",
            )?;
            let rows = statement.query_map([id], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
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
            let transaction = c.transaction()?;
            let now = now();
            transaction.execute(
                "INSERT INTO conversation_records (conversation_id, seq, kind, record, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, seq, kind, record, now],
            )?;
            transaction.execute(
                "UPDATE conversations SET updated_at = ?2 WHERE id = ?1",
                params![id, now],
            )?;
            Ok(transaction.commit()?)
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
                params![id, title, model],
            )?;
            Ok(())
        })
        .await
    }

    /// Deletes a conversation and its records (its session stays).
    pub async fn delete_conversation(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            c.execute("DELETE FROM conversations WHERE id = ?1", [id])?;
            Ok(())
        })
        .await
    }
}

impl Store {
    pub async fn insert_notebook(&self, record: NotebookRecord) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO notebooks (id, user_id, title, session_id, cells, created_at, updated_at, revision)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
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
            let mut statement = c.prepare(
                "SELECT id, user_id, title, session_id, '', created_at, updated_at, revision FROM notebooks
                 WHERE user_id = ?1 ORDER BY updated_at DESC, id",
            )?;
            let rows = statement.query_map([user_id], notebook_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
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
            Ok(c.query_row(
                "SELECT id, user_id, title, session_id, cells, created_at, updated_at, revision FROM notebooks
                 WHERE user_id = ?1 AND id = ?2",
                params![user_id, id],
                notebook_row,
            )
            .optional()?)
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
            let revision: Option<u64> = c
                .query_row(
                    "UPDATE notebooks SET title = ?3, session_id = ?4, cells = ?5, updated_at = ?6,
                         revision = revision + 1
                     WHERE user_id = ?1 AND id = ?2 AND (?7 IS NULL OR revision = ?7)
                     RETURNING revision",
                    params![
                        record.user_id,
                        record.id,
                        record.title,
                        record.session_id,
                        record.cells,
                        record.updated_at,
                        expected
                    ],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(revision) = revision {
                return Ok(NotebookSave::Saved(revision));
            }
            let exists = c
                .query_row(
                    "SELECT 1 FROM notebooks WHERE user_id = ?1 AND id = ?2",
                    params![record.user_id, record.id],
                    |_| Ok(()),
                )
                .optional()?
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
            Ok(c.query_row(
                "SELECT 1 FROM notebooks WHERE user_id = ?1 AND session_id = ?2",
                params![user_id, session_id],
                |_| Ok(()),
            )
            .optional()?
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
                params![user_id, id],
            )? > 0)
        })
        .await
    }
}

fn notebook_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<NotebookRecord> {
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

const SELECT_CONVERSATION: &str =
    "SELECT id, user_id, session_id, title, model, created_at, updated_at FROM conversations";

fn conversation_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ConversationRecord> {
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

    #[tokio::test]
    async fn a_user_gets_one_key_and_is_found_by_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        assert!(!store.has_keys().await.unwrap());
        let local = store.local_user().await.unwrap();
        assert_eq!(store.local_user().await.unwrap(), local);
        // The local user can be given a key (its sessions go with it)…
        let keyed = store.set_user_key(LOCAL_USER, vec![1; 32]).await.unwrap();
        assert_eq!(keyed, local);
        // …but a user with a key keeps it.
        assert!(matches!(
            store.set_user_key(LOCAL_USER, vec![2; 32]).await,
            Err(StoreError::KeyExists(_))
        ));
        let alice = store.set_user_key("alice", vec![3; 32]).await.unwrap();
        assert_ne!(alice.id, local.id);
        assert!(store.has_keys().await.unwrap());
        assert_eq!(
            store.user_by_key_hash(vec![3; 32]).await.unwrap(),
            Some(alice)
        );
        assert_eq!(store.user_by_key_hash(vec![2; 32]).await.unwrap(), None);
    }
}
