//! Users: the holders of API keys (by their hashes), and the local user.

use super::{now, Store, StoreError};
use rusqlite::{params, OptionalExtension};

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
}

#[cfg(test)]
mod tests {
    use super::*;

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
