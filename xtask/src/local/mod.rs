//! The `local` environment: the app on this machine's Docker engine, behind a
//! stable URL, with zero-downtime switches between releases.
//!
//! Three long-lived pieces make an environment, all owned by xtask and found
//! again through files under `target/local/<environment>/`:
//!
//! - a PostgreSQL server (`database`): the host's binaries, or a
//!   `postgres:16-alpine` container when that image is on this machine; its
//!   data survives redeploys and `down` (not `down --volumes`);
//! - the app containers (`containers`), each on a free port of 127.0.0.1
//!   with the host's network, labelled with the environment;
//! - a small TCP proxy (`proxy`) on `host_port` from deploy.toml, which sends
//!   every new connection to the port named in the `upstream` file.
//!
//! A release (`release`) starts the new container next to the old one, waits
//! for its `/readyz`, rewrites the upstream file, and only then stops the old
//! container with SIGTERM, so it drains its in-flight requests. Every attempt
//! goes into the release ledger (`releases.jsonl`), which `status` shows and
//! `rollback` reads.

mod containers;
mod database;
pub mod dev;
pub mod load;
pub mod proxy;
pub mod release;

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::{
    config::{AppConfig, DockerEnv},
    deploy::request::{DeployRequest, ImageSpec, Refresh},
    ledger::{self, LedgerStore, ReleaseKind},
    support::{ctx::Ctx, ui},
};

use release::{ImageChoice, ReleaseRequest};

/// The longest a local release waits for its container's `/readyz`. The app
/// is ready in about a second; `--timeout` defaults to ECS's 15 minutes,
/// which would only make a broken local release hang.
pub const HEALTH_TIMEOUT_CAP: Duration = Duration::from_secs(120);

/// `cargo xtask deploy` to a docker environment: a release of the request's
/// image beside the live one, switched to when ready.
pub fn deploy(ctx: &Ctx, env: &DockerEnv, request: &DeployRequest) -> Result<()> {
    let target = Target::new(ctx, env);
    let image = match &request.image {
        ImageSpec::Given(reference) => ImageChoice::Reference(reference.clone()),
        ImageSpec::Build { clean, offline } => ImageChoice::BuildWorkingTree {
            mode: crate::image::build_args::BuildMode {
                offline: *offline || crate::image::offline::offline_setting(ctx) == Some(true),
                incremental: !clean,
            },
        },
    };
    let request = ReleaseRequest {
        kind: ReleaseKind::Deploy,
        image,
        migrate: request.migrations != Refresh::Skip,
        smoke: request.smoke.is_some(),
        health_timeout: request.timeout.min(HEALTH_TIMEOUT_CAP),
        force: request.force_rollout,
    };
    release::release(ctx, &target, &request)?;
    Ok(())
}

pub fn rollback(ctx: &Ctx, env: &DockerEnv, timeout: Duration) -> Result<()> {
    let target = Target::new(ctx, env);
    let history = target.ledger().history(&target.environment, usize::MAX)?;
    let Some(live) = ledger::live_release(&history) else {
        bail!("nothing was deployed to {} yet: there is no release to roll back from", target.environment);
    };
    let Some(previous) = ledger::rollback_target(&history) else {
        bail!(
            "{} has no successful release before the live one ({} from {}) that ran another image: nothing to roll back to",
            target.environment,
            short_id(&live.image),
            live.started_at
        );
    };
    ui::step(&format!(
        "rolling {} back to the release of {} (git {}, image {})",
        target.environment,
        previous.started_at,
        short_sha(&previous.git_sha),
        short_id(&previous.image)
    ));
    let request = ReleaseRequest {
        kind: ReleaseKind::Rollback,
        image: ImageChoice::Pinned { id: previous.image.clone(), git_sha: previous.git_sha.clone() },
        // The old image's migrate is a no-op on a schema it already knows
        // (it ignores newer migrations), but it recreates the schema of a
        // database emptied by `down --volumes`.
        migrate: true,
        smoke: true,
        health_timeout: timeout.min(HEALTH_TIMEOUT_CAP),
        // The rollback target runs another image than the live release.
        force: false,
    };
    release::release(ctx, &target, &request)?;
    Ok(())
}

pub fn status(ctx: &Ctx, env: &DockerEnv, limit: usize) -> Result<()> {
    let target = Target::new(ctx, env);
    let mut ledger = target.ledger();
    let history = ledger.history(&target.environment, limit.max(1))?;
    let containers = containers::list(&ctx.sh, &target)?;
    let upstream_port = proxy::upstream_port(&target);
    ui::result(&format!("environment: {} (docker)", target.environment));
    ui::result(&format!("url: {}", target.url()));
    match ledger::live_release(&history) {
        Some(live) => {
            let serving = live.runs_as.as_deref().and_then(|name| containers.iter().find(|c| c.name == name));
            let state = match serving {
                Some(container) if container.running => "running".to_owned(),
                Some(container) => format!("not running: {}", container.status),
                None => "its container is gone (`cargo xtask down`?)".to_owned(),
            };
            ui::result(&format!(
                "live: {} (git {}, image {}, container {}, {state})",
                live.started_at,
                short_sha(&live.git_sha),
                short_id(&live.image),
                live.runs_as.as_deref().unwrap_or("?")
            ));
        }
        None => ui::result("live: nothing deployed yet (`cargo xtask deploy`)"),
    }
    match proxy::running_pid(&target) {
        Some(pid) => ui::result(&format!(
            "proxy: pid {pid}, 127.0.0.1:{} -> {}",
            target.host_port,
            upstream_port.map_or("nothing yet".to_owned(), |port| format!("127.0.0.1:{port}"))
        )),
        None => ui::result("proxy: not running"),
    }
    ui::result(&format!("database: {}", database::describe(ctx, &target)));
    if !containers.is_empty() {
        ui::result("containers:");
        for container in &containers {
            let serving = if container.running && Some(container.port) == upstream_port { "  <- serving" } else { "" };
            ui::result(&format!(
                "  {}  127.0.0.1:{}  {}  {}{serving}",
                container.name,
                container.port,
                short_id(&container.image),
                container.status
            ));
        }
    }
    ui::result(&format!("releases (newest first, {}):", shown(&ctx.root, ledger.path())));
    if history.is_empty() {
        ui::result("  none");
    }
    for line in ledger::format_history(&history) {
        ui::result(&format!("  {line}"));
    }
    Ok(())
}

/// Stop the local environment: app containers, proxy and database (the
/// database keeps its data unless --volumes)
#[derive(Debug, Args)]
pub struct Down {
    /// Also delete the database's data (the release history is kept)
    #[arg(long)]
    pub volumes: bool,
}

impl Down {
    pub fn run(self, ctx: &Ctx, env: &DockerEnv) -> Result<()> {
        down(ctx, &Target::new(ctx, env), self.volumes)
    }
}

/// Stops everything of one environment; stopping what is not running is
/// fine, so `down` can run any number of times.
pub fn down(ctx: &Ctx, target: &Target, volumes: bool) -> Result<()> {
    let _lock = target.lock(ctx)?;
    ui::step(&format!("stopping the {} environment", target.environment));
    for container in containers::list(&ctx.sh, target)? {
        containers::stop_and_remove(ctx, &container.name)?;
    }
    proxy::stop(ctx, target)?;
    database::stop(ctx, target)?;
    if volumes {
        database::remove_data(ctx, target)?;
    }
    ctx.success(&format!(
        "{} is down{}",
        target.environment,
        if volumes { " and its database data is deleted" } else { "; its database data is kept" }
    ));
    Ok(())
}

/// One docker environment of deploy.toml, and where its state lives.
#[derive(Debug, Clone)]
pub struct Target {
    pub app_name: String,
    /// `[app]` of deploy.toml (the image's identity).
    pub app: AppConfig,
    pub environment: String,
    /// The stable URL's port (the proxy listens there).
    pub host_port: u16,
    /// `target/local/<environment>`: state files, the proxy's log, the
    /// database's data and the release ledger.
    pub state_dir: PathBuf,
    /// Settings added to the environment of the app containers, after (and
    /// so over) the ones every container gets; empty but for benchmarks.
    pub app_env: Vec<(String, String)>,
}

impl Target {
    /// The environment's state under `target/local/<name>`.
    pub fn new(ctx: &Ctx, env: &DockerEnv) -> Target {
        Target {
            app_name: env.app_name.clone(),
            app: env.app.clone(),
            environment: env.name.clone(),
            host_port: env.host_port,
            state_dir: ctx.root.join("target/local").join(&env.name),
            app_env: Vec::new(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.host_port)
    }

    pub fn ledger_path(&self) -> PathBuf {
        self.state_dir.join("releases.jsonl")
    }

    pub fn ledger(&self) -> ledger::FileLedger {
        ledger::FileLedger::new(self.ledger_path())
    }

    fn file(&self, name: &str) -> PathBuf {
        self.state_dir.join(name)
    }

    /// One task at a time per environment: two deploys at once would each
    /// stop the other's container. Not taken in dry-run, which changes
    /// nothing.
    pub fn lock(&self, ctx: &Ctx) -> Result<Option<fs::File>> {
        ctx.effect(None, || self.take_lock().map(Some))
    }

    fn take_lock(&self) -> Result<fs::File> {
        fs::create_dir_all(&self.state_dir).with_context(|| format!("creating {}", self.state_dir.display()))?;
        let path = self.file("lock");
        let file = fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        if file.try_lock().is_err() {
            ui::info(&format!("waiting for another xtask task on {} to finish ({})", self.environment, path.display()));
            file.lock().with_context(|| format!("locking {}", path.display()))?;
        }
        Ok(file)
    }
}

/// `sha256:0123456789ab` from an image ID (other references unchanged).
pub fn short_id(image: &str) -> &str {
    match image.strip_prefix("sha256:") {
        Some(hex) => &image[..("sha256:".len() + hex.len().min(12))],
        None => image,
    }
}

pub fn short_sha(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// A path as shown to people: relative to the project when inside it.
fn shown(root: &Path, path: &Path) -> String {
    path.strip_prefix(root).unwrap_or(path).display().to_string()
}

/// `cargo xtask migrate` on a local environment: `app migrate` from the
/// image (default: the live release's) against the local database.
pub fn migrate(ctx: &Ctx, env: &DockerEnv, image: Option<&str>) -> Result<()> {
    let target = Target::new(ctx, env);
    let image = match image {
        Some(image) => image.to_owned(),
        None => {
            let history = target.ledger().history(&target.environment, usize::MAX)?;
            ledger::live_release(&history)
                .map(|live| live.image.clone())
                .with_context(|| format!("nothing runs in {} yet: pass --image, or deploy first", target.environment))?
        }
    };
    let database = database::ensure_running(ctx, &target)?;
    ui::step(&format!("running the migrations of {} on {}", short_id(&image), target.environment));
    let version = containers::migrate(ctx, &target, &image, &database)?;
    ui::success(&format!(
        "migrations applied{}",
        version.map(|v| format!(" (schema version {v})")).unwrap_or_default()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_forms() {
        assert_eq!(short_id("sha256:0123456789abcdef0123"), "sha256:0123456789ab");
        assert_eq!(short_id("guestbook:git-abc"), "guestbook:git-abc");
        assert_eq!(short_sha("0123456789abcdef"), "0123456789ab");
        assert_eq!(short_sha("unknown"), "unknown");
    }
}
