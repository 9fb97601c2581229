//! `cargo xtask dev`: the live-development loop. The app runs from source
//! (a debug build, started as its own process) against the local
//! environment's database, and is rebuilt and restarted whenever a file
//! under app/src or app/migrations, or app/Cargo.toml or app/build.rs,
//! changes.
//!
//! Changes are found by polling modification times every 500 ms: no
//! file-watching crate, and it behaves the same on every file system. The
//! running app keeps serving while the new build compiles; it is stopped
//! (SIGTERM, a short drain) only when there is a binary to replace it, and a
//! build that fails leaves it running. Migrations run at the app's start
//! (RUN_MIGRATIONS_ON_START), so a new migration file applies on save.

use std::{
    collections::BTreeMap,
    fs,
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Result;
use clap::Args;

use super::{Target, containers, database};
use crate::{
    config::DockerEnv,
    http,
    support::{
        cleanup,
        ctx::Ctx,
        daemon::{Daemon, Launch, Output},
        exec::cargo,
        ui,
    },
};

/// What is watched, relative to the project root.
const WATCHED: [&str; 4] = ["app/src", "app/migrations", "app/Cargo.toml", "app/build.rs"];
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// The app's drain on a restart: nobody waits on a development server.
const DRAIN_SECONDS: u64 = 2;

/// Run the app from source against the local database; rebuild and restart
/// it on every change under app/
#[derive(Debug, Args)]
pub struct Dev {
    /// Port to serve on (default: the environment's host_port + 1, or a
    /// free one)
    #[arg(long)]
    pub port: Option<u16>,
}

impl Dev {
    pub fn run(self, ctx: &Ctx, env: &DockerEnv) -> Result<()> {
        let target = Target::new(ctx, env);
        let port = self.port.unwrap_or_else(|| {
            let next = target.host_port.wrapping_add(1);
            if next > 1024 && TcpListener::bind(("127.0.0.1", next)).is_ok() { next } else { testkit::free_port() }
        });
        let database = database::ensure_running(ctx, &target)?;
        if ctx.would(format_args!("run: {}", build_command(ctx))) {
            // The loop after the first build is planned with it.
            ui::plan(&format!(
                "would start: {} with PORT={port} BIND_ADDR=127.0.0.1 RUN_MIGRATIONS_ON_START=true and the local DATABASE_URL",
                app_binary(ctx).display()
            ));
            ui::plan(&format!(
                "would watch: {} (every {}ms), rebuilding and restarting on changes",
                WATCHED.join(", "),
                POLL_INTERVAL.as_millis()
            ));
            return Ok(());
        }
        // A database started for this session is stopped with it, unless a
        // deployed release uses it by then.
        let _stop_database = database.started.then(|| {
            let (target, global) = (target.clone(), ctx.global.clone());
            cleanup::register("stop the database started by dev", move || {
                let Ok(ctx) = Ctx::new(global) else { return };
                let in_use = containers::list(&ctx.sh, &target).is_ok_and(|list| list.iter().any(|c| c.running));
                if !in_use {
                    let _ = database::stop(&ctx, &target);
                }
            })
        });
        // The app is a daemon (`support::daemon`) that this session holds:
        // it is stopped on Ctrl-C, before the database.
        let session = Session { ctx, port, database_url: database.url };
        session.run()
    }
}

/// `cargo build -p app`, without the variables of the `cargo run` that
/// started xtask.
fn build_command(ctx: &Ctx) -> xshell::Cmd<'_> {
    let build = cargo(&ctx.sh).args(["build", "-p", "app"]);
    if ui::verbosity() == ui::Verbosity::Quiet { build.arg("--quiet") } else { build }
}

struct Session<'a> {
    ctx: &'a Ctx,
    port: u16,
    database_url: String,
}

impl Session<'_> {
    fn run(&self) -> Result<()> {
        let url = format!("http://127.0.0.1:{}", self.port);
        let mut app: Option<Daemon> = None;
        let mut first = true;
        loop {
            let before_build = snapshot(&self.ctx.root);
            let started = Instant::now();
            let status = self.ctx.run_interruptible("cargo build -p app", build_command(self.ctx))?;
            if cleanup::interrupted() {
                return Ok(());
            }
            let build_time = started.elapsed();
            if status.success() {
                if let Some(old) = app.take() {
                    old.stop();
                }
                let child = self.start()?;
                let ready = self.wait_healthy(&url);
                app = Some(child);
                if first {
                    ui::result(&format!("url: {url}"));
                    ui::info(&format!(
                        "built in {}; watching {} (Ctrl-C stops)",
                        crate::support::time::format_duration(build_time),
                        WATCHED.join(", ")
                    ));
                    first = false;
                } else {
                    ui::success(&format!(
                        "rebuilt in {} and restarted on {url}",
                        crate::support::time::format_duration(build_time)
                    ));
                }
                if let Err(err) = ready {
                    ui::warn(&format!("{err:#}"));
                }
            } else {
                ui::error(&format!(
                    "the build failed after {}{}; fix it and save to try again",
                    crate::support::time::format_duration(build_time),
                    if app.is_some() { " (the previous build keeps running)" } else { "" }
                ));
            }
            let changed = self.wait_for_change(before_build, &mut app);
            ui::step(&format!("{changed} changed: rebuilding"));
        }
    }

    fn start(&self) -> Result<Daemon> {
        let binary = app_binary(self.ctx);
        let mut command = Command::new(&binary);
        command
            .current_dir(&self.ctx.root)
            .env("DATABASE_URL", &self.database_url)
            .env("PORT", self.port.to_string())
            .env("BIND_ADDR", "127.0.0.1")
            .env("RUN_MIGRATIONS_ON_START", "true")
            .env("SHUTDOWN_DRAIN_SECONDS", DRAIN_SECONDS.to_string());
        // Its output is the session's: the app's log is what a developer
        // watches. Stopped with SIGTERM, its drain and a little more.
        Daemon::start(Launch {
            name: "the app",
            command,
            output: Output::Inherit,
            stop_grace: Duration::from_secs(DRAIN_SECONDS + 3),
        })
    }

    /// Up to 30 s for `/healthz`; the app's own log says why it is not.
    fn wait_healthy(&self, url: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if http::get(self.port, "/healthz", Duration::from_secs(1)).is_ok_and(|answer| answer.status == 200) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        anyhow::bail!("{url}/healthz did not answer 200 within 30s (see the app's output above)")
    }

    /// Polls until a watched file changes; returns what changed. Says once
    /// when the app exits on its own meanwhile.
    fn wait_for_change(&self, before: Snapshot, app: &mut Option<Daemon>) -> String {
        loop {
            std::thread::sleep(POLL_INTERVAL);
            if let Some(status) = app.as_mut().and_then(Daemon::exited) {
                ui::warn(&format!("the app exited ({status}); waiting for a change to rebuild and start it"));
                *app = None;
            }
            let now = snapshot(&self.ctx.root);
            if let Some(changed) = first_difference(&before, &now) {
                return changed;
            }
        }
    }
}

/// Modification time and size of every watched file.
type Snapshot = BTreeMap<PathBuf, (SystemTime, u64)>;

fn snapshot(root: &Path) -> Snapshot {
    let mut files = Snapshot::new();
    for watched in WATCHED {
        collect(root, &root.join(watched), &mut files);
    }
    files
}

fn collect(root: &Path, path: &Path, files: &mut Snapshot) {
    let Ok(metadata) = fs::metadata(path) else { return };
    if metadata.is_dir() {
        let Ok(entries) = fs::read_dir(path) else { return };
        for entry in entries.flatten() {
            collect(root, &entry.path(), files);
        }
    } else if let Ok(modified) = metadata.modified() {
        files.insert(path.strip_prefix(root).unwrap_or(path).to_path_buf(), (modified, metadata.len()));
    }
}

/// The first file added, removed or changed between two snapshots.
fn first_difference(before: &Snapshot, after: &Snapshot) -> Option<String> {
    let changed = after.iter().find(|(path, stamp)| before.get(*path) != Some(stamp)).map(|(path, _)| path);
    let removed = before.keys().find(|path| !after.contains_key(*path));
    changed.or(removed).map(|path| path.display().to_string())
}

/// `target/debug/app`, or under CARGO_TARGET_DIR when that is set.
fn app_binary(ctx: &Ctx) -> PathBuf {
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .map(|dir| if dir.is_absolute() { dir } else { ctx.root.join(dir) })
        .unwrap_or_else(|| ctx.root.join("target"));
    target_dir.join("debug/app")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_the_changed_added_or_removed_file() {
        let time = SystemTime::UNIX_EPOCH;
        let before: Snapshot =
            [(PathBuf::from("app/src/a.rs"), (time, 1)), (PathBuf::from("app/src/b.rs"), (time, 2))].into();
        assert_eq!(first_difference(&before, &before), None);
        let mut touched = before.clone();
        touched.insert(PathBuf::from("app/src/b.rs"), (time + Duration::from_secs(1), 2));
        assert_eq!(first_difference(&before, &touched).as_deref(), Some("app/src/b.rs"));
        let mut added = before.clone();
        added.insert(PathBuf::from("app/migrations/0002_x.sql"), (time, 3));
        assert_eq!(first_difference(&before, &added).as_deref(), Some("app/migrations/0002_x.sql"));
        let mut removed = before.clone();
        removed.remove(&PathBuf::from("app/src/a.rs"));
        assert_eq!(first_difference(&before, &removed).as_deref(), Some("app/src/a.rs"));
    }

    #[test]
    fn the_snapshot_sees_the_app_sources() {
        let files = snapshot(&crate::support::fs::project_root());
        assert!(files.contains_key(Path::new("app/src/main.rs")), "{:?}", files.keys().collect::<Vec<_>>());
        assert!(files.contains_key(Path::new("app/Cargo.toml")));
        assert!(files.keys().any(|path| path.starts_with("app/migrations")));
    }
}
