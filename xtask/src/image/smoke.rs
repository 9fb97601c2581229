//! The smoke test of a runtime image (`cargo xtask build-image --smoke`, or
//! on its own as the hidden `cargo xtask smoke-image`): run it against a
//! throwaway Postgres, ask `/healthz`, `/readyz` and `/version` (which must
//! name the expected commit), stop it with SIGTERM and require exit code 0
//! within the drain time.
//!
//! The container uses the host's network: the app listens on a free port of
//! 127.0.0.1, and reaches the host's Postgres through `localhost`, which also
//! proves that name resolution works in a scratch image (static glibc has
//! its `files` and `dns` lookups built in since 2.34).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;
use xshell::cmd;

use crate::{
    config::AppConfig,
    http,
    image::{
        build_args::AppIdentity,
        docker::{remove_container_on_exit, run_read},
        postgres::HostPostgres,
        source::Source,
    },
    support::{cleanup, ctx::Ctx, ui},
};

/// How long the app may drain after SIGTERM in the smoke test, and how long
/// `docker stop` waits before it sends SIGKILL (which would show as 137).
const DRAIN_SECONDS: u64 = 10;
const STOP_TIMEOUT_SECONDS: u64 = 30;

/// Run an image against a throwaway Postgres: /healthz, /readyz, /version, a
/// clean SIGTERM stop
#[derive(Debug, Args)]
pub struct SmokeImage {
    /// The image (default: `<app>:git-<sha12>[-dirty]` of the working tree)
    #[arg(long)]
    pub image: Option<String>,
    /// The commit `/version` must report (default: HEAD)
    #[arg(long)]
    pub expect_sha: Option<String>,
}

impl SmokeImage {
    pub fn run(self, ctx: &Ctx, app: &AppConfig) -> Result<()> {
        let (image, expected_sha) = match (self.image, self.expect_sha) {
            (Some(image), Some(sha)) => (image, sha),
            (image, sha) => {
                let source = Source::read(&ctx.sh)?;
                let app = AppIdentity::load(&ctx.root, app)?;
                (
                    image.unwrap_or_else(|| format!("{}:{}", app.name, source.commit_tag())),
                    sha.unwrap_or(source.git_sha),
                )
            }
        };
        let report = smoke(ctx, &image, &expected_sha)?;
        // A dry run ran nothing: its report is a placeholder, not a result.
        ctx.effect((), || {
            ui::result(&serde_json::to_string(&report)?);
            Ok(())
        })
    }
}

/// What the smoke test saw.
#[derive(Debug, Clone, Serialize)]
pub struct SmokeReport {
    pub image: String,
    /// Seconds from `docker run` to the first healthy `/healthz`.
    pub ready_seconds: f64,
    pub git_sha: String,
    /// Seconds `docker stop` took (SIGTERM to exit).
    pub stop_seconds: f64,
    pub exit_code: i64,
}

pub fn smoke(ctx: &Ctx, image: &str, expected_sha: &str) -> Result<SmokeReport> {
    ui::step(&format!("smoke test of {image}"));
    let running = RunningImage::start(ctx, image)?;
    if ctx.would(format_args!(
        "check: GET http://127.0.0.1:PORT/healthz, /readyz, and /version reports git_sha {expected_sha}"
    )) {
        running.stop(ctx)?;
        return Ok(SmokeReport {
            image: image.to_owned(),
            ready_seconds: 0.0,
            git_sha: expected_sha.to_owned(),
            stop_seconds: 0.0,
            exit_code: 0,
        });
    }
    let timeout = Duration::from_secs(10);
    let readyz = http::get(running.port, "/readyz", timeout)?;
    if readyz.status != 200 {
        bail!("/readyz answered {}: the image cannot use the database; its log:\n{}", readyz.status, running.logs(ctx));
    }
    let version = http::get(running.port, "/version", timeout)?;
    let git_sha = http::version_sha(&version)?;
    if git_sha != expected_sha {
        bail!("/version answered {}; expected git_sha {expected_sha}", version.body);
    }
    let ready_seconds = running.ready_seconds;
    let stopped = running.stop(ctx)?;
    ui::success(&format!(
        "{image}: healthy after {ready_seconds:.1}s, /version reports {}, stopped cleanly in {:.1}s",
        &git_sha[..git_sha.len().min(12)],
        stopped.stop_seconds
    ));
    Ok(SmokeReport {
        image: image.to_owned(),
        ready_seconds,
        git_sha,
        stop_seconds: stopped.stop_seconds,
        exit_code: stopped.exit_code,
    })
}

/// An image running against a throwaway Postgres on 127.0.0.1, healthy:
/// what the smoke test asks and the functional tests of `cargo xtask ci`
/// run against. The container and the database are removed when it drops
/// (and on Ctrl-C); `stop` also checks that it drains and exits 0 on SIGTERM.
pub struct RunningImage {
    pub image: String,
    /// The app's port on 127.0.0.1 (0 under `--dry-run`).
    pub port: u16,
    /// Seconds from `docker run` to the first healthy `/healthz`.
    pub ready_seconds: f64,
    name: String,
    // Declared before the database: the container goes first.
    _remove_container: Option<cleanup::CleanupGuard>,
    _postgres: Option<HostPostgres>,
}

/// How a running image stopped.
pub struct Stopped {
    pub stop_seconds: f64,
    pub exit_code: i64,
}

impl RunningImage {
    /// Starts `image` and waits up to 30s for its `/healthz`.
    pub fn start(ctx: &Ctx, image: &str) -> Result<RunningImage> {
        let sh = &ctx.sh;
        let postgres = HostPostgres::start_unless_dry_run(ctx)?;
        let port = ctx.effect(0, || Ok(testkit::free_port()))?;
        // Unique per start: `cargo xtask ci` runs one after the smoke test.
        let name = format!("xtask-smoke-{}-{port}", std::process::id());
        let database_url = postgres
            .as_ref()
            .map_or("postgres://postgres:PASSWORD@localhost:PG_PORT/postgres".to_owned(), |postgres| {
                postgres.url("localhost")
            });
        let (port_text, drain) = (port.to_string(), DRAIN_SECONDS.to_string());
        let remove_container = remove_container_on_exit(ctx, &name);
        let started = Instant::now();
        run_read(
            ctx,
            cmd!(
                sh,
                "docker run --detach --name {name} --network host --env PORT={port_text} --env BIND_ADDR=127.0.0.1 --env DATABASE_URL --env RUN_MIGRATIONS_ON_START=true --env SHUTDOWN_DRAIN_SECONDS={drain} {image}"
            )
            // `--env DATABASE_URL` passes this value: the password stays off
            // docker's command line.
            .env("DATABASE_URL", &database_url),
        )?;
        let mut running = RunningImage {
            image: image.to_owned(),
            port,
            ready_seconds: 0.0,
            name,
            _remove_container: remove_container,
            _postgres: postgres,
        };
        running.ready_seconds = ctx.effect(0.0, || running.wait_until_healthy(ctx, started))?;
        Ok(running)
    }

    /// Waits up to 30s after `started` for `/healthz` to answer 200; returns
    /// the seconds it took.
    fn wait_until_healthy(&self, ctx: &Ctx, started: Instant) -> Result<f64> {
        let (port, image) = (self.port, &self.image);
        let deadline = started + Duration::from_secs(30);
        loop {
            if http::get(port, "/healthz", Duration::from_secs(2)).is_ok_and(|answer| answer.status == 200) {
                break;
            }
            let running_state = ctx
                .sh
                .cmd("docker")
                .args(["inspect", "--format", "{{.State.Running}}", &self.name])
                .quiet()
                .read()
                .unwrap_or_default();
            if running_state.trim() != "true" {
                bail!("{image} exited before it answered /healthz; its log:\n{}", self.logs(ctx));
            }
            if Instant::now() > deadline {
                bail!("{image} did not answer /healthz with 200 within 30s; its log:\n{}", self.logs(ctx));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(started.elapsed().as_secs_f64())
    }

    /// The container's last 40 log lines.
    pub fn logs(&self, ctx: &Ctx) -> String {
        let name = &self.name;
        cmd!(ctx.sh, "docker logs --tail 40 {name}").quiet().ignore_status().output().map_or(String::new(), |output| {
            format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
        })
    }

    /// SIGTERM, then exit code 0 within the drain time is required; the
    /// container and the database are removed either way.
    pub fn stop(self, ctx: &Ctx) -> Result<Stopped> {
        let sh = &ctx.sh;
        let (name, image) = (&self.name, &self.image);
        let stop_timeout = STOP_TIMEOUT_SECONDS.to_string();
        let stop = cmd!(sh, "docker stop --time {stop_timeout} {name}");
        if ctx.would(format_args!("run: {stop}")) {
            let _ = ctx.would(format_args!("check: exit code 0, then run: docker rm {name}"));
            return Ok(Stopped { stop_seconds: 0.0, exit_code: 0 });
        }
        let stopping = Instant::now();
        run_read(ctx, stop)?;
        let stop_seconds = stopping.elapsed().as_secs_f64();
        let exit_code = sh.cmd("docker").args(["inspect", "--format", "{{.State.ExitCode}}", name]).quiet().read()?;
        let exit_code: i64 =
            exit_code.trim().parse().with_context(|| format!("docker inspect printed {exit_code:?}"))?;
        if exit_code != 0 {
            bail!(
                "{image} exited with {exit_code} after SIGTERM (137 means it was killed after {STOP_TIMEOUT_SECONDS}s); its log:\n{}",
                self.logs(ctx)
            );
        }
        if stop_seconds > DRAIN_SECONDS as f64 + 5.0 {
            bail!("{image} took {stop_seconds:.1}s to stop, more than its {DRAIN_SECONDS}s drain time");
        }
        run_read(ctx, cmd!(sh, "docker rm {name}"))?;
        Ok(Stopped { stop_seconds, exit_code })
    }
}
