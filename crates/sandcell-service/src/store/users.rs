//! Users: the holders of API keys (by their hashes), and the local user.

use super::sql::{values, Row};
use super::{now, Store, StoreError};

/// The name of the single user of a loopback server that has no API keys.
pub const LOCAL_USER: &str = "local";

/// A user: the holder of one API key, or the local user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub name: String,
}

impl Store {
    /// Gives user `name` the key whose hash is `key_hash`, creating the user if needed.
    pub async fn set_user_key(&self, name: &str, key_hash: Vec<u8>) -> Result<User, StoreError> {
        let name = name.to_owned();
        self.call(move |c| {
            let row = c.query_first(
                "INSERT INTO users (name, key_hash, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET key_hash = excluded.key_hash
                 WHERE users.key_hash IS NULL
                 RETURNING id",
                &values![&name, key_hash, now()],
            )?;
            match row {
                Some(row) => Ok(User {
                    id: row.get(0)?,
                    name,
                }),
                None => Err(StoreError::KeyExists(name)),
            }
        })
        .await
    }

    pub async fn user_by_key_hash(&self, key_hash: Vec<u8>) -> Result<Option<User>, StoreError> {
        self.call(move |c| {
            c.query_first(
                "SELECT id, name FROM users WHERE key_hash = ?1",
                &values![key_hash],
            )?
            .map(|r| user_row(&r))
            .transpose()
        })
        .await
    }

    pub async fn has_keys(&self) -> Result<bool, StoreError> {
        self.call(|c| {
            Ok(c.query_first(
                "SELECT 1 FROM users WHERE key_hash IS NOT NULL LIMIT 1",
                &[],
            )?
            .is_some())
        })
        .await
    }

    /// The user every request is made as on a loopback server without keys.
    pub async fn local_user(&self) -> Result<User, StoreError> {
        self.call(|c| {
            // The no-op update makes the row come back whether it is new or not.
            let row = c.query_one(
                "INSERT INTO users (name, key_hash, created_at) VALUES (?1, NULL, ?2)
                 ON CONFLICT(name) DO UPDATE SET name = excluded.name
                 RETURNING id, name",
                &values![LOCAL_USER, now()],
            )?;
            user_row(&row)
        })
        .await
    }
}

fn user_row(r: &Row) -> Result<User, StoreError> {
    Ok(User {
        id: r.get(0)?,
        name: r.get(1)?,
    })
}
