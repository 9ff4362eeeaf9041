//! The Python environment sandcell sessions run in.
//!
//! For: locating sandcell's data directory (XDG, or `SANDCELL_HOME`), creating a virtual
//! environment from the host's `python3` with the pinned package set of
//! `python/requirements.txt`, and describing it ([`EnvInfo`]) so the sandbox can expose
//! exactly the directories it needs. Setting up is idempotent: a stamp records what the
//! environment is (the interpreter's version, build and real path, and the requirements'
//! hash, never the path the interpreter was found at) and names its directory,
//! `envs/<name>/`. A different stamp builds a new environment beside the others, so
//! running sessions keep the one they started with; see `store.rs` for when old ones go.
//! Operator-defined environments are layers on top of it ([`Layer`], `layer.rs`).
//!
//! Not for: running Python code or anything about sessions (see `sandcell-session`).

mod error;
mod home;
mod layer;
mod setup;
mod stamp;
mod store;

pub use error::PyenvError;
pub use home::Home;
pub use layer::{Layer, LayerSpec};
pub use setup::{EnvInfo, Environment, Package, SetupProgress};
pub use stamp::EnvSpec;

/// The pinned package set, as shipped in the repository.
pub const REQUIREMENTS: &str = include_str!("../../../python/requirements.txt");
