//! The database: users with their hashed API keys, session metadata, conversations,
//! notebooks, and the OpenAI door's files, containers and responses. In one SQLite file
//! (the default, `sqlite.rs`) or in PostgreSQL, shared by several nodes (`postgres.rs`).
//!
//! Every SQL statement of sandcell is in this module, behind typed methods of [`Store`]
//! that take and return plain Rust values, one file per area: `users.rs`,
//! `sessions.rs`, `nodes.rs` (the nodes of a cluster and which runs each session), `mcp.rs`
//! (MCP sessions any node can take up),
//! `conversations.rs`, `notebooks.rs`, `files.rs`, `containers.rs`,
//! `responses.rs`, and this file for a user's objects read or deleted by id
//! ([`OwnedTable`]). Nothing outside the module knows SQL. Each statement is written once,
//! in the SQL both databases understand, and runs on a [`Db`](sql::Db) (`sql.rs`), which
//! carries it to the one in use. Statements that must hold together are one method, in one
//! transaction where they change several rows.
//!
//! The methods run on a blocking thread (`spawn_blocking`), so the async threads never
//! wait on a disk or a network. The schema moves forward by each database's list of
//! migrations; a feature that needs tables of its own appends an entry to both lists and
//! the methods that use them.

mod containers;
mod conversations;
mod files;
mod mcp;
mod nodes;
mod notebooks;
mod postgres;
mod responses;
mod sessions;
mod sql;
mod sqlite;
#[cfg(test)]
mod tests;
mod users;

pub use containers::{ContainerFile, ContainerRecord, FileSource};
pub use conversations::ConversationRecord;
pub use files::StoredFile;
pub use nodes::{Claim, InSession, Owner};
pub use notebooks::{NotebookRecord, NotebookSave};
pub use sessions::SessionRecord;
pub use users::{User, LOCAL_USER};

use sql::{values, Db};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database {path} cannot be used: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot connect to the database {database}: {message}")]
    Connect { database: String, message: String },
    #[error("the database {database} has schema version {found}, newer than this sandcell knows ({known}); use a newer sandcell")]
    TooNew {
        database: String,
        found: i64,
        known: usize,
    },
    #[error("a user named {0:?} already has an API key")]
    KeyExists(String),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database error: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("no connection to the database: {0}")]
    Pool(String),
    #[error("the database holds {found} in column {index} where sandcell expects {expected}")]
    Column {
        index: usize,
        found: &'static str,
        expected: &'static str,
    },
    #[error("the database gave no row where one is always made")]
    NoRow,
    #[error("the database task stopped: {0}")]
    Task(String),
}

/// The database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    database: Arc<Database>,
}

enum Database {
    Sqlite(Mutex<rusqlite::Connection>),
    Postgres(postgres::Postgres),
}

/// Which database the store is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseLocation {
    /// `sandcell.db` in the data directory.
    Local,
    /// A PostgreSQL server, by its `postgres://` URL.
    Postgres(String),
}

impl DatabaseLocation {
    /// `local` (or nothing: an unset variable given empty), or a `postgres://` (or
    /// `postgresql://`) URL.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "local" || text.is_empty() {
            Ok(Self::Local)
        } else if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Ok(Self::Postgres(text.to_owned()))
        } else {
            Err(format!(
                "{text:?} is not a database: give `local` or a postgres://USER:PASSWORD@HOST/DATABASE URL"
            ))
        }
    }
}

impl Store {
    /// Opens (or creates) the SQLite database file and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let connection = sqlite::open(path)?;
        Ok(Self {
            database: Arc::new(Database::Sqlite(Mutex::new(connection))),
        })
    }

    /// Opens the database at `location` (`sqlite_file` when local) and brings its schema up
    /// to date.
    pub async fn open_at(
        location: &DatabaseLocation,
        sqlite_file: &Path,
    ) -> Result<Self, StoreError> {
        let (location, sqlite_file) = (location.clone(), sqlite_file.to_path_buf());
        tokio::task::spawn_blocking(move || match location {
            DatabaseLocation::Local => Self::open(&sqlite_file),
            DatabaseLocation::Postgres(url) => Ok(Self {
                database: Arc::new(Database::Postgres(postgres::Postgres::connect(&url)?)),
            }),
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Where the database is, for messages (a PostgreSQL URL without its password).
    pub fn shown(&self) -> String {
        match &*self.database {
            Database::Sqlite(connection) => connection
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .path()
                .unwrap_or("SQLite")
                .to_owned(),
            Database::Postgres(postgres) => postgres.shown().to_owned(),
        }
    }

    /// Runs `work` with a connection on a blocking thread.
    async fn call<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Db) -> Result<T, StoreError> + Send + 'static,
    {
        let database = self.database.clone();
        tokio::task::spawn_blocking(move || database.run(work))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Runs `work` with a connection, waiting on this thread: for callers that cannot await
    /// (a transcript writing through as it grows), with work of a few milliseconds.
    fn call_blocking<T: Send>(
        &self,
        work: impl FnOnce(&mut Db) -> Result<T, StoreError> + Send,
    ) -> Result<T, StoreError> {
        match &*self.database {
            Database::Sqlite(_) => self.database.run(work),
            // PostgreSQL's statements wait on the pool's runtime, which a thread of another
            // runtime may not do: they wait on a thread of their own.
            Database::Postgres(_) => std::thread::scope(|scope| {
                scope
                    .spawn(|| self.database.run(work))
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            }),
        }
    }
}

impl Database {
    fn run<T>(&self, work: impl FnOnce(&mut Db) -> Result<T, StoreError>) -> Result<T, StoreError> {
        match self {
            Self::Sqlite(connection) => {
                let mut connection = connection
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                // A method that panicked mid-transaction left it open; end it first.
                if !connection.is_autocommit() {
                    connection.execute_batch("ROLLBACK")?;
                }
                work(&mut Db::Sqlite(&mut connection))
            }
            Self::Postgres(postgres) => postgres.with_connection(work),
        }
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
            c.query_first(&sql, &values![user_id, id])?
                .map(|r| r.get(0))
                .transpose()
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
        self.call(move |c| Ok(c.execute(&sql, &values![user_id, id])? > 0))
            .await
    }
}

/// The current time as the database stores it: RFC 3339, UTC, milliseconds.
pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}
