//! Bakes the git commit and the build time into the binary for `/version`.
//!
//! Image builds pass `GIT_SHA` and `SOURCE_DATE_EPOCH` explicitly: there is no
//! `.git` inside the Docker build context, and a fixed epoch keeps the binary
//! reproducible. Local builds fall back to `git rev-parse HEAD` and the current
//! time. We deliberately do not rerun on every change under `.git` (that would
//! rebuild the crate after every `git fetch`); only HEAD and the branch ref it
//! points to are watched, so a local commit or checkout shows the right sha.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

#[path = "src/rfc3339.rs"]
mod rfc3339;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=GIT_SHA");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-env-changed=APP_BUILD_EPOCH");

    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));

    let git_sha = match non_empty_env("GIT_SHA") {
        Some(sha) => sha,
        None => {
            watch_git_head(&manifest_dir);
            git_head_sha(&manifest_dir).unwrap_or_else(|| "unknown".to_owned())
        }
    };

    // APP_BUILD_EPOCH first: the image build passes the commit time under
    // this name, because SOURCE_DATE_EPOCH in cargo's environment makes every
    // crate built with the cc crate (ring, under rustls and sqlx) rebuild
    // whenever it changes, which is every commit.
    let epoch = match non_empty_env("APP_BUILD_EPOCH").or_else(|| non_empty_env("SOURCE_DATE_EPOCH")) {
        // The reproducible-builds spec asks tools to fail on a malformed value
        // rather than silently fall back to the wall clock.
        Some(raw) => raw
            .trim()
            .parse::<i64>()
            .unwrap_or_else(|_| panic!("SOURCE_DATE_EPOCH={raw:?} is not a whole number of seconds since 1970-01-01")),
        None => SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0),
    };

    println!("cargo:rustc-env=APP_GIT_SHA={git_sha}");
    println!("cargo:rustc-env=APP_BUILD_TIME={}", rfc3339::format_unix_utc(epoch));
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Asks git for the commit; `None` when git is missing, this is not a
/// checkout, or the repository has no commits yet.
fn git_head_sha(dir: &Path) -> Option<String> {
    let output = Command::new("git").args(["rev-parse", "HEAD"]).current_dir(dir).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let sha = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (!sha.is_empty()).then_some(sha)
}

/// Emits `rerun-if-changed` for `HEAD` and the ref it points to.
fn watch_git_head(start: &Path) {
    let Some(git_dir) = find_git_dir(start) else {
        return;
    };
    let head = git_dir.join("HEAD");
    if !head.exists() {
        return;
    }
    println!("cargo:rerun-if-changed={}", head.display());

    let Ok(contents) = std::fs::read_to_string(&head) else {
        return;
    };
    // A detached HEAD holds the sha itself, so watching HEAD is enough.
    let Some(reference) = contents.trim().strip_prefix("ref: ") else {
        return;
    };
    // Linked worktrees keep branch refs in the main repository's git dir.
    let common_dir = std::fs::read_to_string(git_dir.join("commondir"))
        .map(|c| git_dir.join(c.trim()))
        .unwrap_or_else(|_| git_dir.clone());
    let ref_file = common_dir.join(reference);
    if ref_file.exists() {
        println!("cargo:rerun-if-changed={}", ref_file.display());
    } else if let Some(parent) = ref_file.ancestors().skip(1).find(|p| p.is_dir()) {
        // A branch without commits has no ref file yet; watching its directory
        // notices the first commit creating it.
        println!("cargo:rerun-if-changed={}", parent.display());
    }
    // `git gc` moves refs into packed-refs.
    let packed = common_dir.join("packed-refs");
    if packed.exists() {
        println!("cargo:rerun-if-changed={}", packed.display());
    }
}

/// Walks up from `start` to the nearest `.git`, following the `gitdir:`
/// indirection used by worktrees and submodules.
fn find_git_dir(start: &Path) -> Option<PathBuf> {
    for dir in start.ancestors() {
        let candidate = dir.join(".git");
        if candidate.is_dir() {
            return Some(candidate);
        }
        if candidate.is_file() {
            let contents = std::fs::read_to_string(&candidate).ok()?;
            let target = contents.trim().strip_prefix("gitdir: ")?;
            return Some(dir.join(target));
        }
    }
    None
}
