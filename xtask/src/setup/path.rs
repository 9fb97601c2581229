//! The project's tools first on PATH: every xtask puts the `bin` folders of
//! its Python environments and of its cargo tools before the system's, so
//! tasks, tests and the sandbox all use the pinned versions.

use std::path::PathBuf;

use super::{
    cargo_tools::cargo_tools_root,
    python::{ISOLATED_PYTHON_TOOLS, isolated_environment, python_environment},
};

/// Puts the project's tools first on this process's PATH, so every child
/// (cargo test, the sandbox, a test's moto) finds the pinned versions.
/// Called first thing in `main`, while the process has one thread.
pub fn put_tools_on_path() {
    // The isolated environments come last: their python must not shadow
    // the project environment's.
    let bins = [python_environment().join("bin"), cargo_tools_root().join("bin")]
        .into_iter()
        .chain(ISOLATED_PYTHON_TOOLS.iter().map(|&(_, command)| isolated_environment(command).join("bin")));
    let path = std::env::var_os("PATH").unwrap_or_default();
    let present: Vec<PathBuf> = std::env::split_paths(&path).collect();
    let missing: Vec<PathBuf> = bins.filter(|bin| !present.contains(bin)).collect();
    if missing.is_empty() {
        return;
    }
    let joined = std::env::join_paths(missing.into_iter().chain(present));
    if let Ok(joined) = joined {
        // SAFETY: main calls this before it starts any thread, so nothing
        // reads the environment concurrently.
        unsafe { std::env::set_var("PATH", joined) };
    }
}
