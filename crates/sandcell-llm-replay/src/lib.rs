//! A local HTTP server that plays a language-model provider in tests.
//!
//! For: tests of whatever talks to a provider (the agent loop, the web app) without a
//! network or a key. One server speaks all four protocols sandcell uses, each at its real
//! path (`/v1/chat/completions`, `/v1/responses`, `/v1/messages`, `/api/chat`), and
//! answers each `POST` with the next step of a [`Script`]: a streamed turn generated in
//! the wire format of the path that was hit (text, then calls to the `python` tool whose
//! arguments arrive in many small pieces), a recorded body replayed byte for byte, an
//! error status, or a fault (a delay, a stream cut off mid-body, invalid JSON).
//! `GET /_requests` lists what the client sent. Usable in-process ([`ReplayServer`]) or
//! as the `sandcell-llm-replay` binary, for tests in other languages.
//!
//! Not for: judging requests (it records them; tests assert on them), model listing,
//! authentication, or standing in for a provider anywhere but in tests.

mod json;
mod render;
mod script;
mod server;

pub use script::{Answer, PythonCall, Reply, Script, ScriptError, Step};
pub use server::{RecordedRequest, ReplayError, ReplayServer};

/// The responses recorded from the real services, kept with `sandcell-llm`'s tests: the
/// fixture directory for scripts that replay them.
pub fn recorded_fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sandcell-llm/tests/fixtures")
}
