//! Users and their API keys: who a request comes from.
//!
//! A key is 32 random bytes; the database keeps only its SHA-256. A plain fast hash is
//! enough here because the secret has 256 bits of entropy: there is no dictionary to try
//! and no way to search the key space, which is what slow salted password hashes guard
//! against. Requests are matched by looking the hash up, so no comparison of secrets
//! runs in the server at all (and so none can leak timing).

use crate::error::ServiceError;
use crate::store::{Store, StoreError, User};
use sha2::{Digest, Sha256};
use std::fmt::Write;

/// Every key starts with this, so a leaked one is easy to recognise.
const KEY_PREFIX: &str = "sandcell_";

/// How requests are authenticated; decided when the server starts.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Every request needs `Authorization: Bearer KEY`; each key is one user.
    Keys,
    /// A loopback server with no keys: every request is this one user's.
    Local(User),
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("a key's name must be 1 to 64 characters, without control characters")]
    InvalidName,
    #[error("no random numbers for a new key: {0}")]
    Random(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Creates an API key for user `name` (a new user, or one without a key yet) and returns
/// it: it is shown this once; only its hash is stored.
pub async fn create_key(store: &Store, name: &str) -> Result<String, KeyError> {
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(KeyError::InvalidName);
    }
    let secret = random_hex(32).map_err(|e| KeyError::Random(e.to_string()))?;
    let key = format!("{KEY_PREFIX}{secret}");
    store.set_user_key(name, hash_key(&key)).await?;
    Ok(key)
}

/// `bytes` random bytes from the operating system, in hex: keys and session ids.
pub fn random_hex(bytes: usize) -> Result<String, getrandom::Error> {
    let mut random = vec![0u8; bytes];
    getrandom::fill(&mut random)?;
    Ok(random.iter().fold(String::new(), |mut hex, byte| {
        let _ = write!(hex, "{byte:02x}");
        hex
    }))
}

pub fn hash_key(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

impl Auth {
    /// The user a request comes from, given the key it presented (if any). Each door
    /// reads the key from its own protocol (an `Authorization` header, a transport's
    /// metadata) and asks here.
    pub async fn user(&self, store: &Store, key: Option<&str>) -> Result<User, ServiceError> {
        match self {
            Self::Local(user) => Ok(user.clone()),
            Self::Keys => {
                let key = key.ok_or_else(|| {
                    ServiceError::Unauthorized(
                        "This server needs an API key: send it as `Authorization: Bearer KEY`."
                            .into(),
                    )
                })?;
                store
                    .user_by_key_hash(hash_key(key))
                    .await
                    .map_err(|e| ServiceError::internal("The user database cannot be read", &e))?
                    .ok_or_else(|| {
                        ServiceError::Unauthorized(
                            "This API key is not known to this server.".into(),
                        )
                    })
            }
        }
    }
}
