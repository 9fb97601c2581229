//! The app's containers in a local environment: migrations, starting a
//! release, the health gate, logs, stopping.
//!
//! Containers use the host's network and listen on a free port of 127.0.0.1
//! (`PORT`, `BIND_ADDR`): the database is on 127.0.0.1 too, nothing is
//! published, and two releases run side by side during a switch. Labels say
//! which app, environment and port a container belongs to, so `down` and
//! `status` find them without any state file.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use xshell::{Cmd, Shell};

use super::Target;
use crate::http;
use crate::{
    image::docker::{remove_container_on_exit, run_read},
    support::{ctx::Ctx, ui},
};

pub const LABEL_APP: &str = "com.example.xtask.app";
pub const LABEL_ENVIRONMENT: &str = "com.example.xtask.environment";
const LABEL_ROLE: &str = "com.example.xtask.role";
const LABEL_PORT: &str = "com.example.xtask.port";
const LABEL_IMAGE: &str = "com.example.xtask.image";
const LABEL_RELEASE: &str = "com.example.xtask.release";

/// How long a stopped container may finish its in-flight requests
/// (`SHUTDOWN_DRAIN_SECONDS`); `docker stop` waits a little longer before
/// SIGKILL, so a clean drain always wins.
pub const DRAIN_SECONDS: u64 = 10;
pub const STOP_TIMEOUT_SECONDS: u64 = DRAIN_SECONDS + 5;
/// One proxy (`proxy/server.rs`) stands between clients and the containers.
pub const TRUSTED_PROXY_HOPS: usize = 1;

/// An app container of the environment, running or not.
#[derive(Debug, Clone)]
pub struct AppContainer {
    pub name: String,
    pub port: u16,
    pub image: String,
    pub running: bool,
    /// Docker's words: `Up 3 minutes`, `Exited (0) 2 seconds ago`.
    pub status: String,
}

/// A release's container, to be started.
#[derive(Debug, Clone)]
pub struct AppContainerSpec {
    pub name: String,
    pub image_id: String,
    pub port: u16,
    pub database_url: String,
    /// The ledger's `started_at` of the release.
    pub release: String,
}

/// The environment's app containers (not its database), oldest first.
pub fn list(sh: &Shell, target: &Target) -> Result<Vec<AppContainer>> {
    let format = format!(
        "{{{{.Names}}}}\t{{{{.Label \"{LABEL_PORT}\"}}}}\t{{{{.Label \"{LABEL_IMAGE}\"}}}}\t{{{{.State}}}}\t{{{{.Status}}}}"
    );
    let output = sh
        .cmd("docker")
        .args(["ps", "--all", "--no-trunc", "--format", &format])
        .args(label_filters(target))
        .quiet()
        .read()
        .with_context(|| format!("listing the app containers of {}", target.environment))?;
    let mut containers: Vec<AppContainer> = output
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let [name, port, image, state, status] = fields[..] else { return None };
            Some(AppContainer {
                name: name.to_owned(),
                port: port.parse().unwrap_or(0),
                image: image.to_owned(),
                running: state == "running",
                status: status.to_owned(),
            })
        })
        .collect();
    // `docker ps` lists the newest first.
    containers.reverse();
    Ok(containers)
}

/// `docker run --detach ...` for a release.
pub fn run_command<'a>(sh: &'a Shell, target: &Target, spec: &AppContainerSpec) -> Cmd<'a> {
    sh.cmd("docker")
        .args(["run", "--detach", "--name", &spec.name, "--network", "host"])
        .args(labels(target))
        .args(["--label", &format!("{LABEL_ROLE}=app")])
        .args(["--label", &format!("{LABEL_PORT}={}", spec.port)])
        .args(["--label", &format!("{LABEL_IMAGE}={}", spec.image_id)])
        .args(["--label", &format!("{LABEL_RELEASE}={}", spec.release)])
        .args(["--env", &format!("PORT={}", spec.port), "--env", "BIND_ADDR=127.0.0.1"])
        // The value comes from docker's own environment: the database
        // password stays off the command line that `ps` and our logs show.
        .args(["--env", "DATABASE_URL"])
        .env("DATABASE_URL", &spec.database_url)
        .args(["--env", &format!("SHUTDOWN_DRAIN_SECONDS={DRAIN_SECONDS}")])
        // The environment's proxy appends the client to X-Forwarded-For, so
        // the app's write rate limit must read the client from there, not
        // take every request for the proxy's 127.0.0.1.
        .args(["--env", &format!("TRUSTED_PROXY_HOPS={TRUSTED_PROXY_HOPS}")])
        .args(target.app_env.iter().flat_map(|(name, value)| ["--env".to_owned(), format!("{name}={value}")]))
        .args(["--stop-timeout", &STOP_TIMEOUT_SECONDS.to_string()])
        .arg(&spec.image_id)
}

/// Runs `IMAGE migrate` against the database; its exit code is the
/// verdict. Returns the schema version it reports.
pub fn migrate(
    ctx: &Ctx,
    target: &Target,
    image_id: &str,
    database: &super::database::Database,
) -> Result<Option<String>> {
    let sh = &ctx.sh;
    let name = format!("{}-{}-migrate-{}", target.app_name, target.environment, unique_suffix());
    let command = sh
        .cmd("docker")
        .args(["run", "--rm", "--name", &name, "--network", "host"])
        .args(labels(target))
        .args(["--label", &format!("{LABEL_ROLE}=migrate")])
        // As the owner, creating or updating the service's own role. Values
        // through docker's environment, never its command line.
        .args(["--env", "DATABASE_URL", "--env", "APP_DB_ROLE", "--env", "APP_DB_ROLE_PASSWORD"])
        .env("DATABASE_URL", &database.url)
        .env("APP_DB_ROLE", &database.app_role)
        .env("APP_DB_ROLE_PASSWORD", &database.app_role_password)
        .args([image_id, "migrate"]);
    if ctx.would(format_args!("run: {command}")) {
        return Ok(None);
    }
    ui::detail(&format!("$ {command}"));
    let _remove = remove_container_on_exit(ctx, &name);
    let started = Instant::now();
    let output = command.quiet().ignore_status().output().context("running the migrations")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    for line in stdout.lines() {
        ui::info(&format!("  {line}"));
    }
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        bail!(
            "the migrations failed ({}); the old release keeps serving. Their output:\n{}",
            output.status,
            lines[lines.len().saturating_sub(20)..].join("\n")
        );
    }
    ui::detail(&format!("migrations took {}", crate::support::time::format_duration(started.elapsed())));
    Ok(stdout.lines().find_map(|line| line.strip_prefix("database schema is at version ")).map(str::to_owned))
}

/// Waits until the container answers `/readyz` with 200. Fails early when
/// it exits, and after `timeout`; says every few seconds what it waits for.
pub fn wait_ready(ctx: &Ctx, name: &str, port: u16, timeout: Duration) -> Result<Duration> {
    let url = format!("http://127.0.0.1:{port}/readyz");
    if ctx.would(format_args!("wait: up to {}s for {url} ({name}) to answer 200", timeout.as_secs())) {
        return Ok(Duration::ZERO);
    }
    ui::info(&format!("waiting up to {}s for {url} ({name}) to answer 200", timeout.as_secs()));
    let started = Instant::now();
    let mut last_answer;
    let mut last_state_check = started;
    let mut last_report = started;
    loop {
        match http::get(port, "/readyz", Duration::from_secs(2)) {
            Ok(response) if response.status == 200 => return Ok(started.elapsed()),
            Ok(response) => last_answer = format!("{} {}", response.status, response.body.trim()),
            Err(err) => last_answer = format!("{err:#}"),
        }
        if last_state_check.elapsed() >= Duration::from_secs(1) {
            last_state_check = Instant::now();
            let state = inspect(&ctx.sh, name, "{{.State.Status}} {{.State.ExitCode}}")?;
            if let Some(code) = state.strip_prefix("exited ").or_else(|| state.strip_prefix("dead ")) {
                bail!("{name} exited with code {code} before it was ready");
            }
        }
        if started.elapsed() > timeout {
            bail!("{name} was not ready within {}s (last answer: {last_answer})", timeout.as_secs());
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            ui::info(&format!("  still waiting for {name} ({}s): {last_answer}", started.elapsed().as_secs()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The last lines of a container's output (stdout and stderr).
pub fn logs_tail(sh: &Shell, name: &str, lines: usize) -> String {
    let output = sh.cmd("docker").args(["logs", "--tail", &lines.to_string(), name]).quiet().ignore_status().output();
    match output {
        Ok(output) => format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)),
        Err(err) => format!("(no logs: {err})"),
    }
}

/// SIGTERM, up to the stop timeout for the drain, then removal. A container
/// that is already gone is fine.
pub fn stop_and_remove(ctx: &Ctx, name: &str) -> Result<()> {
    let sh = &ctx.sh;
    let timeout = STOP_TIMEOUT_SECONDS.to_string();
    if ctx.would(format_args!("run: docker stop --time {timeout} {name}")) {
        let _ = ctx.would(format_args!("run: docker rm --force {name}"));
        return Ok(());
    }
    if inspect(sh, name, "{{.State.Running}}").is_ok_and(|running| running == "true") {
        ui::info(&format!("stopping {name} (SIGTERM; it drains its in-flight requests, up to {DRAIN_SECONDS}s)"));
        run_read(ctx, sh.cmd("docker").args(["stop", "--time", &timeout, name]))?;
        let exit_code = inspect(sh, name, "{{.State.ExitCode}}").unwrap_or_default();
        if exit_code != "0" {
            ui::warn(&format!(
                "{name} exited with code {exit_code} after SIGTERM (137: killed after {STOP_TIMEOUT_SECONDS}s); its last lines:\n{}",
                logs_tail(sh, name, 20)
            ));
        }
    }
    remove(ctx, name);
    Ok(())
}

/// `docker rm --force`, quietly: used on the way out of a failure too.
pub fn remove(ctx: &Ctx, name: &str) {
    if ctx.would(format_args!("run: docker rm --force {name}")) {
        return;
    }
    ui::detail(&format!("$ docker rm --force {name}"));
    let _ = ctx.sh.cmd("docker").args(["rm", "--force", name]).quiet().ignore_stdout().ignore_stderr().run();
}

/// A short, practically unique suffix for container names.
pub fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{:08x}", (nanos.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(40)) as u32)
}

fn inspect(sh: &Shell, name: &str, format: &str) -> Result<String> {
    let output = sh
        .cmd("docker")
        .args(["container", "inspect", "--format", format, name])
        .quiet()
        .ignore_stderr()
        .read()
        .with_context(|| format!("inspecting the container {name}"))?;
    Ok(output.trim().to_owned())
}

fn labels(target: &Target) -> Vec<String> {
    vec![
        "--label".to_owned(),
        format!("{LABEL_APP}={}", target.app_name),
        "--label".to_owned(),
        format!("{LABEL_ENVIRONMENT}={}", target.environment),
    ]
}

fn label_filters(target: &Target) -> Vec<String> {
    vec![
        "--filter".to_owned(),
        format!("label={LABEL_APP}={}", target.app_name),
        "--filter".to_owned(),
        format!("label={LABEL_ENVIRONMENT}={}", target.environment),
        "--filter".to_owned(),
        format!("label={LABEL_ROLE}=app"),
    ]
}
