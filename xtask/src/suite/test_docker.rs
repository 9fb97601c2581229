//! `cargo xtask test-docker`: the test suite inside the build environment.
//!
//! It builds the Dockerfile's `test` stage (the app's tests compiled in the
//! same image, toolchain and flags as the release binary) and runs it against
//! a throwaway PostgreSQL. No Postgres image can be pulled here, so by default
//! the server is the host's (testkit, from the local binaries) and the test
//! container shares the host's network, reaching it on 127.0.0.1. When a
//! `postgres:16-alpine` image is present locally, a sidecar container on a
//! private network is used instead, which needs nothing from the host.
//!
//! Containers, the network and the server's data are removed afterwards, on
//! failure and on Ctrl-C too: each is registered with `cleanup`, containers
//! run with `--rm` and are also removed by name.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use xshell::cmd;

use crate::{
    image::{
        AppIdentity, BuildKit, CONTAINER_TEST_COMMAND, DockerBuild, Offline, crates_build_arg, image_exists, image_id,
        prepare_build, remove_if_untagged, run_read,
    },
    support::{cleanup, ctx::Ctx, ui},
};

/// The sidecar image, used only when it is already on this machine.
pub const POSTGRES_IMAGE: &str = "postgres:16-alpine";

/// Build the test stage and run the test suite in a container against a
/// throwaway Postgres
#[derive(Debug, Args)]
pub struct TestDocker {
    #[command(flatten)]
    pub offline: Offline,
    /// Where the tests' Postgres runs: `host` (the local binaries, reached
    /// over the host network), `container` (postgres:16-alpine on a private
    /// network) or `auto` (the container when that image is present)
    #[arg(long, value_enum, default_value_t = PostgresMode::Auto)]
    pub postgres: PostgresMode,
    /// Extra arguments for `cargo test` in the container (after `--`)
    #[arg(last = true)]
    pub cargo_test_args: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PostgresMode {
    Auto,
    Host,
    Container,
}

impl TestDocker {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let app = AppIdentity::load(&ctx.root)?;
        let buildkit = BuildKit::find(&ctx.sh)?;
        let offline = prepare_build(ctx, self.offline.enabled)?;
        let image = format!("{}-test:latest", app.name);
        let previous = image_exists(&ctx.sh, &image).then(|| image_id(&ctx.sh, &image).ok()).flatten();
        ui::step(&format!("building the test stage as {image}"));
        let build = DockerBuild {
            context: ctx.root.clone(),
            stage: "test".to_owned(),
            build_args: crates_build_arg(offline).into_iter().collect(),
            offline,
            no_cache: false,
            iidfile: None,
            tags: vec![image.clone()],
        };
        build.run(ctx, &buildkit)?;
        // The test image is large; the one it replaces is ours to remove.
        if let Some(previous) = previous.filter(|_| !ctx.dry_run()) {
            remove_if_untagged(&ctx.sh, &previous);
        }

        let mode = match self.postgres {
            PostgresMode::Auto if image_exists(&ctx.sh, POSTGRES_IMAGE) => PostgresMode::Container,
            PostgresMode::Auto => PostgresMode::Host,
            chosen => chosen,
        };
        let mut command: Vec<String> = CONTAINER_TEST_COMMAND.iter().map(|word| word.to_string()).collect();
        command.extend(self.cargo_test_args.iter().cloned());
        // Tests that start a server of their own (PostgreSQL's binaries and
        // the openssl CLI, which the build image does not have) run on the
        // host, in tier 1; the container shares one server through
        // DATABASE_URL.
        if !command.iter().any(|word| word == "--") {
            command.push("--".to_owned());
        }
        for test in HOST_ONLY_APP_TESTS {
            command.extend(["--skip".to_owned(), test.to_owned()]);
        }
        let started = Instant::now();
        match mode {
            PostgresMode::Container => run_with_sidecar(ctx, &app.name, &image, &command)?,
            _ => run_with_host_postgres(ctx, &app.name, &image, &command)?,
        }
        ui::success(&format!(
            "the test suite passed in a container ({})",
            crate::support::time::format_duration(started.elapsed())
        ));
        Ok(())
    }
}

/// App tests that need host tools the build image lacks; tier 1 runs them.
const HOST_ONLY_APP_TESTS: [&str; 1] =
    ["database::the_app_verifies_the_server_certificate_and_the_server_requires_tls"];

fn run_with_host_postgres(ctx: &Ctx, app_name: &str, image: &str, command: &[String]) -> Result<()> {
    let sh = &ctx.sh;
    let postgres = HostPostgres::start_unless_dry_run(ctx)?;
    // With the host's network the container's 127.0.0.1 is the host's, where
    // the throwaway server listens; nothing is published or exposed.
    let database_url =
        postgres.as_ref().map_or("postgres://postgres:PASSWORD@127.0.0.1:PORT/postgres".to_owned(), |postgres| {
            postgres.url("127.0.0.1")
        });
    let name = format!("{app_name}-test-{}", std::process::id());
    let _remove_container = remove_container_on_exit(ctx, &name);
    // `--env NAME` without a value passes the client's variable: the
    // password stays off docker's command line.
    let run =
        cmd!(sh, "docker run --rm --name {name} --network host --env DATABASE_URL --env CI=true {image} {command...}")
            .env("DATABASE_URL", &database_url);
    ui::step(&format!("running the tests in {name}"));
    let status = ctx.run_interruptible("the test container", run)?;
    if !status.success() {
        bail!("the test suite failed in the container ({status})");
    }
    Ok(())
}

fn run_with_sidecar(ctx: &Ctx, app_name: &str, image: &str, command: &[String]) -> Result<()> {
    let sh = &ctx.sh;
    let pid = std::process::id();
    let network = format!("{app_name}-test-{pid}");
    let database = format!("{app_name}-test-db-{pid}");
    let tests = format!("{app_name}-test-{pid}");
    run_read(ctx, cmd!(sh, "docker network create {network}"))?;
    let _remove_network = (!ctx.dry_run()).then(|| {
        let network = network.clone();
        cleanup::register(format!("remove the network {network}"), move || {
            let _ = std::process::Command::new("docker")
                .args(["network", "rm", &network])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        })
    });
    // Declared after the network so it is removed first.
    let _remove_database = remove_container_on_exit(ctx, &database);
    let postgres_image = POSTGRES_IMAGE;
    let password = testkit::random_password();
    run_read(
        ctx,
        cmd!(
            sh,
            "docker run --detach --rm --name {database} --network {network} --env POSTGRES_PASSWORD --env POSTGRES_INITDB_ARGS=--auth=scram-sha-256 {postgres_image}"
        )
        .env("POSTGRES_PASSWORD", &password),
    )?;
    wait_for_sidecar(ctx, &database)?;
    let database_url = testkit::database_url(&database, 5432, &password, "postgres");
    let _remove_tests = remove_container_on_exit(ctx, &tests);
    let run = cmd!(
        sh,
        "docker run --rm --name {tests} --network {network} --env DATABASE_URL={database_url} --env CI=true {image} {command...}"
    );
    ui::step(&format!("running the tests in {tests} against {database}"));
    let status = ctx.run_interruptible("the test container", run)?;
    if !status.success() {
        bail!("the test suite failed in the container ({status})");
    }
    Ok(())
}

fn wait_for_sidecar(ctx: &Ctx, container: &str) -> Result<()> {
    let sh = &ctx.sh;
    let ready = || cmd!(sh, "docker exec {container} pg_isready --host 127.0.0.1 --username postgres");
    if ctx.dry_run() {
        println!("would wait for: {}", ready());
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if ready().quiet().ignore_stdout().ignore_stderr().run().is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!("{container} did not accept connections within 60s")
}

/// `docker rm -f NAME` when the guard drops or xtask is interrupted; `--rm`
/// alone is not enough when the docker CLI itself is killed.
pub fn remove_container_on_exit(ctx: &Ctx, name: &str) -> Option<cleanup::CleanupGuard> {
    if ctx.dry_run() {
        return None;
    }
    let name = name.to_owned();
    Some(cleanup::register(format!("remove the container {name}"), move || {
        let _ = std::process::Command::new("docker")
            .args(["rm", "--force", &name])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }))
}

/// A throwaway PostgreSQL from the host's binaries on 127.0.0.1, stopped and
/// deleted when dropped and when xtask is interrupted.
pub struct HostPostgres {
    pub port: u16,
    password: String,
    _stop: cleanup::CleanupGuard,
}

impl HostPostgres {
    /// `start`, or with `--dry-run` only the line saying it would.
    pub fn start_unless_dry_run(ctx: &Ctx) -> Result<Option<HostPostgres>> {
        if ctx.dry_run() {
            println!("would start: a throwaway Postgres from the local binaries on 127.0.0.1");
            return Ok(None);
        }
        HostPostgres::start().map(Some)
    }

    pub fn start() -> Result<HostPostgres> {
        let started = Instant::now();
        let options = testkit::PostgresOptions {
            // A container on the host's network reaches this address; a
            // container on a bridge network would need the bridge's.
            listen_addresses: Some("127.0.0.1".to_owned()),
            ..Default::default()
        };
        let postgres = testkit::Postgres::try_start_with(options).context("starting a throwaway Postgres")?;
        let port = postgres.port();
        let password = postgres.password().to_owned();
        ui::info(&format!(
            "started a throwaway Postgres on 127.0.0.1:{port} in {}",
            crate::support::time::format_duration(started.elapsed())
        ));
        let slot = std::sync::Mutex::new(Some(postgres));
        let stop = cleanup::register("stop the throwaway Postgres", move || {
            if let Some(postgres) = slot.lock().unwrap_or_else(|poison| poison.into_inner()).take() {
                postgres.stop();
            }
        });
        Ok(HostPostgres { port, password, _stop: stop })
    }

    /// The server's URL as seen from `host` (a container on the host's
    /// network says 127.0.0.1 or localhost).
    pub fn url(&self, host: &str) -> String {
        testkit::database_url(host, self.port, &self.password, "postgres")
    }
}
