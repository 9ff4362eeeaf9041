//! The Python environment sandcell sessions run in.
//!
//! For: locating sandcell's data directory (XDG, or `SANDCELL_HOME`), creating a virtual
//! environment from the host's `python3` with the pinned package set of
//! `python/requirements.txt`, and describing it ([`EnvInfo`]) so the sandbox can expose
//! exactly the directories it needs. Setting up is idempotent: a stamp records what was
//! installed, and a second run only checks it.
//!
//! Not for: running Python code or anything about sessions (see `sandcell-session`).

mod error;
mod home;
mod setup;

pub use error::PyenvError;
pub use home::Home;
pub use setup::{EnvInfo, Environment, Package, SetupProgress};

/// The pinned package set, as shipped in the repository.
pub const REQUIREMENTS: &str = include_str!("../../../python/requirements.txt");
