//! The store in one SQLite file (the default): one connection behind a mutex, the schema
//! moved forward by [`MIGRATIONS`], counted in `PRAGMA user_version`.

use super::StoreError;
use rusqlite::Connection;
use std::path::Path;

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
    "
    -- The nodes of a cluster sharing this database, by the id each keeps in its data
    -- directory: the address other nodes forward requests to, and its last heartbeat (Unix
    -- milliseconds, written every few seconds); a node whose heartbeat is old is gone.
    CREATE TABLE nodes (
        id TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        heartbeat_ms BIGINT NOT NULL
    );
    -- The node running the session's Python process (NULL: stopped), and the fencing
    -- epoch, raised by every claim: a node that lost the session cannot act for it.
    ALTER TABLE sessions ADD COLUMN owner TEXT;
    ALTER TABLE sessions ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
",
    "
    -- MCP sessions over Streamable HTTP (the client's `initialize`, JSON), so that any node
    -- can take up a session another node began; `created_at` in Unix seconds.
    CREATE TABLE mcp_sessions (
        id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        created_at BIGINT NOT NULL
    );
",
];

/// Opens (or creates) the database file and brings its schema up to date.
pub(super) fn open(path: &Path) -> Result<Connection, StoreError> {
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
    Ok(connection)
}

fn migrate(connection: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let version: i64 = connection.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = MIGRATIONS.len();
    let start = usize::try_from(version).unwrap_or(usize::MAX);
    if start > known {
        return Err(StoreError::TooNew {
            database: path.display().to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_run_once_and_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        drop(open(&path).unwrap());
        // Opening again finds the schema current and changes nothing.
        drop(open(&path).unwrap());
        let c = Connection::open(&path).unwrap();
        let version: i64 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        assert!(matches!(
            open(&path),
            Err(StoreError::TooNew { found: 99, .. })
        ));
    }
}
