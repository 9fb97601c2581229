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

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use xshell::cmd;

use crate::{
    config::AppConfig,
    image::{
        CONTAINER_TEST_COMMAND,
        build_args::{AppIdentity, crates_build_arg},
        docker::{image_exists, image_id, remove_container_on_exit, remove_if_untagged, run_read},
        docker_build::{BuildKit, DockerBuild},
        offline::{Offline, prepare_build},
        postgres::{HostPostgres, POSTGRES_IMAGE},
    },
    support::{ctx::Ctx, ui},
};

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

/// What a run of the test stage is asked for: the flags' value, and what
/// `ci` builds.
#[derive(Debug, Clone)]
pub struct TestDockerRequest {
    pub offline: bool,
    pub postgres: PostgresMode,
    /// Extra arguments for `cargo test` in the container.
    pub cargo_test_args: Vec<String>,
}

impl TestDocker {
    pub fn request(self) -> TestDockerRequest {
        TestDockerRequest {
            offline: self.offline.enabled,
            postgres: self.postgres,
            cargo_test_args: self.cargo_test_args,
        }
    }

    pub fn run(self, ctx: &Ctx, app: &AppConfig) -> Result<()> {
        self.request().run(ctx, app)
    }
}

impl TestDockerRequest {
    pub fn run(&self, ctx: &Ctx, app: &AppConfig) -> Result<()> {
        let app = AppIdentity::load(&ctx.root, app)?;
        let buildkit = BuildKit::find(&ctx.sh)?;
        let offline = prepare_build(ctx, self.offline)?;
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
        if let Some(previous) = previous {
            ctx.effect((), || {
                remove_if_untagged(&ctx.sh, &previous);
                Ok(())
            })?;
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
    let _remove_network = {
        let network = network.clone();
        ctx.on_cleanup(format!("remove the network {network}"), move || {
            let _ = std::process::Command::new("docker")
                .args(["network", "rm", &network])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        })
    };
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
    if ctx.would(format_args!("wait for: {}", ready())) {
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
