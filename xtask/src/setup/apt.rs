//! Debian packages: the prerequisites apt-get installs, how each is found
//! (a command on PATH, PostgreSQL's `initdb`, Groovy with its Java), and
//! the install itself, with sudo when not root.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Result, bail};

use super::{
    probe::quiet_success,
    report::{How, Item, Report, State},
    run,
};
use crate::support::{ctx::Ctx, ui};

pub(super) fn apt(name: &'static str, purpose: &'static str, packages: &'static [&'static str], state: State) -> Item {
    Item { name, purpose, state, how: How::Apt(packages) }
}

pub(super) fn command(name: &str) -> State {
    match which::which(name) {
        Ok(path) => State::Present(path.display().to_string()),
        Err(_) => State::Missing,
    }
}

pub(super) fn postgres() -> State {
    let mut search: Vec<PathBuf> =
        std::env::var_os("PATH").map(|path| std::env::split_paths(&path).collect()).unwrap_or_default();
    if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
        search.extend(entries.flatten().map(|entry| entry.path().join("bin")));
    }
    match search.iter().map(|dir| dir.join("initdb")).find(|path| path.is_file()) {
        Some(initdb) => State::Present(initdb.display().to_string()),
        None => State::Missing,
    }
}

/// Groovy's launcher needs a Java runtime at Debian's default-java link.
pub(super) fn groovy() -> State {
    match (which::which("groovy"), Path::new("/usr/lib/jvm/default-java/bin/java").exists()) {
        (Ok(path), true) => State::Present(path.display().to_string()),
        _ => State::Missing,
    }
}

pub(super) fn install_apt(ctx: &Ctx, report: &Report, packages: &[&str]) -> Result<()> {
    if which::which("apt-get").is_err() {
        report.print_missing();
        bail!(
            "this system has no apt-get: install the packages above with its package manager, then run `cargo xtask setup`"
        );
    }
    let sudo: &[&str] = if running_as_root() {
        &[]
    } else if which::which("sudo").is_ok() && quiet_success(Command::new("sudo").args(["-n", "true"])) {
        &["sudo", "-n"]
    } else {
        report.print_missing();
        bail!("installing needs root, and sudo asks for a password: run `{}`", report.one_command());
    };
    ui::step(&format!("installing Debian packages: {} (apt-get)", packages.join(" ")));
    let update = ctx.sh.cmd(sudo.first().copied().unwrap_or("apt-get"));
    let update = if sudo.is_empty() { update } else { update.args(&sudo[1..]).arg("apt-get") };
    let install = ctx.sh.cmd(sudo.first().copied().unwrap_or("apt-get"));
    let install = if sudo.is_empty() { install } else { install.args(&sudo[1..]).arg("apt-get") };
    run(ctx, "apt-get update", update.args(["update", "-q"]).env("DEBIAN_FRONTEND", "noninteractive"))?;
    run(
        ctx,
        "apt-get install",
        install
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
