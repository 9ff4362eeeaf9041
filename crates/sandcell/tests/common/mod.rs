//! Running the real `sandcell` binary from tests.
#![allow(dead_code)] // each test binary uses a different subset

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

/// The binary under test: `$SANDCELL_BIN` (used when the tests run as another user
/// from a copy), else the one cargo built.
pub fn sandcell() -> Command {
    let binary = std::env::var_os("SANDCELL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_sandcell")));
    Command::new(binary)
}

/// Runs `sandcell run --json ARGS…` and returns one parsed object per cell.
pub fn run_json(args: &[&str]) -> (Vec<Value>, Output) {
    let output = sandcell()
        .arg("run")
        .arg("--json")
        .args(args)
        .output()
        .expect("sandcell runs");
    let cells = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| {
                panic!(
                    "not JSON ({e}): {line}\nstderr: {}",
                    String::from_utf8_lossy(&output.stderr)
                )
            })
        })
        .collect();
    (cells, output)
}

/// The `text/plain` of a cell's first result.
pub fn first_text(cell: &Value) -> &str {
    cell["results"][0]["text/plain"]
        .as_str()
        .unwrap_or_else(|| panic!("no text/plain result in {cell}"))
}

/// Parses what a cell printed on stdout as JSON (isolation checks report that way).
pub fn printed_json(cell: &Value) -> Value {
    let stdout = cell["stdout"].as_str().unwrap_or_default();
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("cell did not print JSON ({e}): {cell}"))
}

/// Points `command` at a package index that never answers, failing at once: building a
/// configured environment then fails with pip's reason.
pub fn with_unreachable_index(command: &mut Command) -> &mut Command {
    command
        .env("PIP_INDEX_URL", "http://127.0.0.1:9/simple/")
        .env("PIP_RETRIES", "0")
        .env("PIP_TIMEOUT", "5")
}

/// Asserts that `output`'s error line says that the environment `name` could not be
/// built because of its requirement `requirement`.
pub fn assert_build_failed(output: &Output, name: &str, requirement: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let error = stderr
        .lines()
        .find(|line| line.starts_with("sandcell: error:"))
        .unwrap_or_else(|| panic!("an error line: {stderr}"));
    assert!(
        error.contains(&format!("the environment {name} could not be built"))
            && error.contains(requirement),
        "{error}"
    );
}
