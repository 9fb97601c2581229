//! The local environment's PostgreSQL: started on the first deploy (or
//! `dev`), left running between deploys, stopped by `down`.
//!
//! Nothing can be pulled on some machines, so by default it is the host's
//! PostgreSQL binaries (through testkit, detached so the server outlives
//! xtask), with the cluster in `target/local/<env>/postgres/data`. When a
//! `postgres:16-alpine` image is already on this machine a container is used
//! instead, with its data in a named volume. Either way it listens on
//! 127.0.0.1 only, and the app containers (on the host's network) reach it
//! there. Which kind an environment uses is decided once and kept in
//! `database.json`, with the port, so the data is found again.
//!
//! Either kind asks for a password (scram-sha-256, made at random, kept 0600
//! in `target/local/<env>/postgres/password`): with `trust`, any local user
//! would be its superuser.
//!
//! The host server runs with `fsync=off` (testkit's setting): fine for a
//! development database, but a machine crash can corrupt it; `down --volumes`
//! starts over.

use std::{
    fs,
    net::{TcpListener, TcpStream},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use xshell::{Shell, cmd};

use super::{Target, shown};
use crate::{
    image::{
        docker::{image_exists, run_read},
        postgres::POSTGRES_IMAGE,
    },
    support::{ctx::Ctx, ui},
};

/// The port of the default environment's database, when free: fixed, so a
/// `psql` command line or a GUI connection keeps working across restarts.
const LOCAL_DATABASE_PORT: u16 = 54329;

/// How the app reaches the database.
#[derive(Debug, Clone)]
pub struct Database {
    /// As the superuser, who owns the schema: for migrations.
    pub url: String,
    /// The service's own role, data rights only (no DDL): `migrate` creates
    /// it (`APP_DB_ROLE`), the app containers connect as it (`app_url`).
    pub app_role: String,
    pub app_role_password: String,
    port: u16,
    database: String,
    /// Started by this call (it was not running).
    pub started: bool,
}

impl Database {
    fn new(ctx: &Ctx, target: &Target, port: u16, started: bool) -> Result<Database> {
        let app_role_password =
            ctx.effect("<app role password>".to_owned(), || kept_password(&app_password_path(target)))?;
        Ok(Database {
            url: url(target, port),
            app_role: format!("{}_app", database_name(target)),
            app_role_password,
            port,
            database: database_name(target),
            started,
        })
    }

    /// The service's URL: its own role, not the owner.
    pub fn app_url(&self) -> String {
        format!("postgres://{}:{}@127.0.0.1:{}/{}", self.app_role, self.app_role_password, self.port, self.database)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Host,
    Container,
}

/// `database.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    kind: Kind,
    port: u16,
}

/// Starts the database unless it runs; returns its URL either way.
pub fn ensure_running(ctx: &Ctx, target: &Target) -> Result<Database> {
    let state = read_state(target);
    let kind = match &state {
        Some(state) => state.kind,
        None if image_exists(&ctx.sh, POSTGRES_IMAGE) => Kind::Container,
        None => Kind::Host,
    };
    match kind {
        Kind::Host => ensure_host(ctx, target, state.map(|state| state.port)),
        Kind::Container => ensure_container(ctx, target, state.map(|state| state.port)),
    }
}

/// One line for `status`.
pub fn describe(ctx: &Ctx, target: &Target) -> String {
    let data_dir = shown(&ctx.root, &data_dir(target));
    match read_state(target).map(|state| state.kind) {
        None => "not created yet".to_owned(),
        Some(Kind::Host) => match host_server(target) {
            Some((pid, port)) => {
                format!(
                    "PostgreSQL (host binaries), pid {pid}, 127.0.0.1:{port}, password in {}, data in {data_dir}",
                    shown(&ctx.root, &password_path(target))
                )
            }
            None => format!("PostgreSQL (host binaries), stopped, data in {data_dir}"),
        },
        Some(Kind::Container) => {
            let name = container_name(target);
            let running = container_running(&ctx.sh, &name);
            format!(
                "{POSTGRES_IMAGE} container {name}, {}, volume {}",
                if running { "running" } else { "stopped" },
                volume_name(target)
            )
        }
    }
}

/// Stops the server of either kind; the data stays.
pub fn stop(ctx: &Ctx, target: &Target) -> Result<()> {
    if let Some((pid, port)) = host_server(target)
        && !ctx.would(format_args!("stop: PostgreSQL (pid {pid}) on 127.0.0.1:{port}"))
    {
        ui::info(&format!("stopping PostgreSQL (pid {pid}) on 127.0.0.1:{port}"));
        if !testkit::stop_postgres(pid, Duration::from_secs(15)) {
            bail!("PostgreSQL (pid {pid}) did not stop");
        }
    }
    let name = container_name(target);
    if container_running(&ctx.sh, &name) {
        run_read(ctx, cmd!(ctx.sh, "docker stop {name}"))?;
    }
    Ok(())
}

/// Deletes the data of either kind (the server is stopped first).
pub fn remove_data(ctx: &Ctx, target: &Target) -> Result<()> {
    let sh = &ctx.sh;
    let directory = target.state_dir.join("postgres");
    if directory.exists() && !ctx.would(format_args!("delete: {}", shown(&ctx.root, &directory))) {
        ui::info(&format!("deleting the database's data in {}", shown(&ctx.root, &directory)));
        fs::remove_dir_all(&directory).with_context(|| format!("deleting {}", directory.display()))?;
    }
    let name = container_name(target);
    if container_exists(sh, &name) {
        run_read(ctx, cmd!(sh, "docker rm --force {name}"))?;
    }
    let volume = volume_name(target);
    let volume_exists =
        cmd!(sh, "docker volume inspect {volume}").quiet().ignore_stdout().ignore_stderr().run().is_ok();
    if volume_exists {
        run_read(ctx, cmd!(sh, "docker volume rm {volume}"))?;
    }
    let _ = ctx.effect((), || {
        let _ = fs::remove_file(state_path(target));
        Ok(())
    });
    Ok(())
}

fn ensure_host(ctx: &Ctx, target: &Target, recorded_port: Option<u16>) -> Result<Database> {
    if let Some((pid, port)) = host_server(target) {
        ui::detail(&format!("PostgreSQL (pid {pid}) runs on 127.0.0.1:{port}"));
        return Database::new(ctx, target, port, false);
    }
    let port = choose_port(target, recorded_port);
    let data_dir = data_dir(target);
    if ctx.would(format_args!(
        "start: PostgreSQL from the host's binaries on 127.0.0.1:{port}, data in {}",
        shown(&ctx.root, &data_dir)
    )) {
        return Database::new(ctx, target, port, true);
    }
    let fresh = !data_dir.join("PG_VERSION").exists();
    ui::info(&format!(
        "starting PostgreSQL from the host's binaries on 127.0.0.1:{port} ({} {})",
        if fresh { "new cluster in" } else { "data in" },
        shown(&ctx.root, &data_dir)
    ));
    let started = Instant::now();
    let options = testkit::PostgresOptions {
        data_dir: Some(data_dir.clone()),
        port: Some(port),
        listen_addresses: Some("127.0.0.1".to_owned()),
        tls: None,
    };
    let postgres =
        testkit::Postgres::try_start_with(options).context("starting PostgreSQL for the local environment")?;
    let database = database_name(target);
    let exists = postgres.psql("postgres", &format!("SELECT 1 FROM pg_database WHERE datname = '{database}'"));
    if exists.is_empty() {
        postgres.create_database(&database);
    }
    let detached = postgres.detach();
    write_state(target, &State { kind: Kind::Host, port })?;
    ui::info(&format!(
        "PostgreSQL (pid {}) ready in {}",
        detached.pid,
        crate::support::time::format_duration(started.elapsed())
    ));
    Database::new(ctx, target, port, true)
}

fn ensure_container(ctx: &Ctx, target: &Target, recorded_port: Option<u16>) -> Result<Database> {
    let sh = &ctx.sh;
    let name = container_name(target);
    if container_running(sh, &name)
        && let Some(port) = recorded_port
    {
        return Database::new(ctx, target, port, false);
    }
    let port = match recorded_port {
        Some(port) if container_exists(sh, &name) => {
            run_read(ctx, cmd!(sh, "docker start {name}"))?;
            port
        }
        _ => {
            if container_exists(sh, &name) {
                run_read(ctx, cmd!(sh, "docker rm --force {name}"))?;
            }
            let port = choose_port(target, recorded_port);
            let (volume, database, port_text) = (volume_name(target), database_name(target), port.to_string());
            let (app_label, environment_label) =
                (format!("{}={}", super::containers::LABEL_APP, target.app_name), environment_label(target));
            ui::info(&format!("starting {POSTGRES_IMAGE} as {name} on 127.0.0.1:{port} (data in volume {volume})"));
            let password = ctx.effect(String::new(), || container_password(target))?;
            run_read(
                ctx,
                cmd!(
                    sh,
                    "docker run --detach --name {name} --network host --label {app_label} --label {environment_label} --label com.example.xtask.role=database --env POSTGRES_PASSWORD --env POSTGRES_INITDB_ARGS=--auth=scram-sha-256 --env POSTGRES_DB={database} --env PGPORT={port_text} --volume {volume}:/var/lib/postgresql/data {POSTGRES_IMAGE} -c listen_addresses=127.0.0.1"
                )
                // Off docker's command line: `--env POSTGRES_PASSWORD` passes this.
                .env("POSTGRES_PASSWORD", &password),
            )?;
            port
        }
    };
    if ctx.would(format_args!("wait: for pg_isready in {name}")) {
        return Database::new(ctx, target, port, true);
    }
    let port_text = port.to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    while cmd!(sh, "docker exec {name} pg_isready --host 127.0.0.1 --port {port_text} --username postgres")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("{name} did not accept connections within 60s (see `docker logs {name}`)");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    write_state(target, &State { kind: Kind::Container, port })?;
    Database::new(ctx, target, port, true)
}

/// The recorded port when it is free, else the default environment's fixed
/// port, else any free one.
fn choose_port(target: &Target, recorded_port: Option<u16>) -> u16 {
    let free = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
    match recorded_port {
        Some(port) if free(port) => port,
        _ if target.environment == "local" && free(LOCAL_DATABASE_PORT) => LOCAL_DATABASE_PORT,
        _ => testkit::free_port(),
    }
}

/// The host server's pid and port from its `postmaster.pid`, when it runs
/// and answers.
fn host_server(target: &Target) -> Option<(u32, u16)> {
    let text = fs::read_to_string(data_dir(target).join("postmaster.pid")).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    let pid: u32 = lines.first()?.trim().parse().ok()?;
    let port: u16 = lines.get(3)?.trim().parse().ok()?;
    let answers = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).is_ok();
    (crate::support::process::process_running(pid) && answers).then_some((pid, port))
}

/// The app's URL of the database, password included: testkit's password
/// file of the host cluster, or the container's (`container_password`).
fn url(target: &Target, port: u16) -> String {
    let password = fs::read_to_string(password_path(target)).map(|text| text.trim().to_owned()).unwrap_or_default();
    testkit::database_url("127.0.0.1", port, &password, &database_name(target))
}

/// `postgres/password` (0600) beside the host cluster's data; the container
/// kind keeps its password there too.
fn password_path(target: &Target) -> PathBuf {
    testkit::password_file(&data_dir(target))
}

/// The container's superuser password, made once (0600) and kept with the
/// environment's state.
fn container_password(target: &Target) -> Result<String> {
    kept_password(&password_path(target))
}

/// `postgres/app-password` (0600): the service role's password.
fn app_password_path(target: &Target) -> PathBuf {
    target.state_dir.join("postgres/app-password")
}

/// The password kept at `path`, made (random, 0600) the first time.
fn kept_password(path: &std::path::Path) -> Result<String> {
    if let Ok(text) = fs::read_to_string(path) {
        return Ok(text.trim().to_owned());
    }
    let password = testkit::random_password();
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::support::fs::write_atomic(path, format!("{password}\n").as_bytes(), 0o600)?;
    Ok(password)
}

/// The app's database: `guestbook` (identifier-safe).
fn database_name(target: &Target) -> String {
    target.app_name.replace('-', "_")
}

fn data_dir(target: &Target) -> PathBuf {
    target.state_dir.join("postgres/data")
}

fn container_name(target: &Target) -> String {
    format!("{}-{}-postgres", target.app_name, target.environment)
}

fn volume_name(target: &Target) -> String {
    format!("{}-{}-pgdata", target.app_name, target.environment)
}

fn environment_label(target: &Target) -> String {
    format!("{}={}", super::containers::LABEL_ENVIRONMENT, target.environment)
}

fn container_exists(sh: &Shell, name: &str) -> bool {
    cmd!(sh, "docker container inspect {name}").quiet().ignore_stdout().ignore_stderr().run().is_ok()
}

fn container_running(sh: &Shell, name: &str) -> bool {
    sh.cmd("docker")
        .args(["container", "inspect", "--format", "{{.State.Running}}", name])
        .quiet()
        .ignore_stderr()
        .read()
        .is_ok_and(|running| running.trim() == "true")
}

fn state_path(target: &Target) -> PathBuf {
    target.state_dir.join("database.json")
}

fn read_state(target: &Target) -> Option<State> {
    serde_json::from_str(&fs::read_to_string(state_path(target)).ok()?).ok()
}

fn write_state(target: &Target, state: &State) -> Result<()> {
    fs::create_dir_all(&target.state_dir).with_context(|| format!("creating {}", target.state_dir.display()))?;
    crate::support::fs::write_atomic(&state_path(target), &serde_json::to_vec_pretty(state)?, 0o644)
}
