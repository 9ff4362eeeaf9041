//! Embeds what the session runtime installs at run time, so that `sandcell` stays one
//! binary: the Python package in `python/sandcell_runtime/`, and the sandbox library
//! `libsandcell_enter.so`, built here from the `sandcell-enter` crate (a nested cargo
//! build into its own target directory, because cargo cannot depend on a cdylib).

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir
        .parent()
        .and_then(Path::parent)
        .expect("crates/<name> lies two levels below the workspace root");
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));

    embed_python_package(&workspace.join("python/sandcell_runtime"), &out_dir);
    build_enter_library(workspace, &out_dir);
}

fn embed_python_package(package: &Path, out_dir: &Path) {
    println!("cargo:rerun-if-changed={}", package.display());
    let mut names: Vec<String> = std::fs::read_dir(package)
        .expect("python/sandcell_runtime exists")
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".py"))
        .collect();
    names.sort();
    let mut code = String::from("/// The runtime's Python files: (name, content).\npub const PYTHON_FILES: &[(&str, &str)] = &[\n");
    for name in names {
        let path = package.join(&name);
        println!("cargo:rerun-if-changed={}", path.display());
        writeln!(
            code,
            "    ({name:?}, include_str!({:?})),",
            path.display().to_string()
        )
        .expect("writing to a String");
    }
    code.push_str("];\n");
    std::fs::write(out_dir.join("python_files.rs"), code).expect("OUT_DIR is writable");
}

fn build_enter_library(workspace: &Path, out_dir: &Path) {
    for dir in [
        "crates/sandcell-enter",
        "crates/sandcell-sandbox",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }
    let target_dir = out_dir.join("enter");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--offline", "-p", "sandcell-enter"])
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        // The outer build's wrappers (clippy, coverage) and flags are not for this library.
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .expect("cargo can be run from a build script");
    assert!(status.success(), "building sandcell-enter failed");
    let library = target_dir.join("release/libsandcell_enter.so");
    println!("cargo:rustc-env=SANDCELL_ENTER_SO={}", library.display());
}
