//! The whole command line. Each task is a flags struct with
//! `run(self, ctx)`, so the parsed flags are the task.

use clap::{Parser, Subcommand};

use crate::{
    aws::{infra, push},
    bench, completions,
    config::{ConfigOnce, Target},
    deploy::{self, migrate, promote},
    image::{build, builder, smoke},
    local, sandbox, secrets,
    setup::{self, doctor},
    suite::{ci, functional, test_docker, test_local},
    support::ctx::Ctx,
};

/// Test, build, ship and operate the service: `cargo xtask <task>`.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: crate::support::ctx::GlobalArgs,
    #[command(subcommand)]
    pub task: Task,
}

#[derive(Debug, Subcommand)]
pub enum Task {
    /// Ship the app to an environment (default: local Docker): build, push, migrate, roll out, verify
    Deploy(deploy::Deploy),
    /// Show the live release of an environment and the last attempts
    Status(deploy::Status),
    /// Return an environment to its last successful release
    Rollback(deploy::Rollback),
    /// Show who holds an AWS environment's deploy lock (holder, host, age) and break it
    Unlock(deploy::Unlock),
    /// Give the exact image (digest) live in one environment to the next, without rebuilding
    Promote(promote::Promote),
    /// Run the database migrations of an image against an environment (exit code is the verdict)
    Migrate(migrate::Migrate),
    /// Stop a local environment: its app containers, proxy and database (data kept unless --volumes)
    Down(local::Down),
    /// Run the app from source against the local database; rebuild and restart it on every change
    Dev(local::dev::Dev),
    /// The stable URL's proxy of a local environment (started in the background by `deploy`)
    #[command(hide = true)]
    LocalProxy(local::proxy::LocalProxy),
    /// Tier 1, while editing: fmt, clippy, unit tests, the app's tests (throwaway Postgres), the fast task runner tests, terraform
    TestLocal(test_local::TestLocal),
    /// The full suite (what CI runs): tier 1, then the end-to-end tests against Docker, Terraform and the sandbox
    TestAll(test_local::TestAll),
    /// Check the tools and services the tasks need, with a fix for each missing one
    Doctor(doctor::Doctor),
    /// Install what the tasks and tests need: Debian packages, a project-local Python environment (pinned)
    Setup(setup::Setup),
    /// Plan, apply or destroy an AWS environment's infrastructure (Terraform stages in order)
    Infra(infra::Infra),
    /// Start, stop or inspect the sandbox: an AWS emulator and a registry on this machine
    Sandbox(sandbox::Sandbox),
    /// Make the Dockerfile's base images locally from Debian packages and this machine's Rust toolchain (offline builds)
    BuilderImage(builder::BuilderImage),
    /// Build the runtime image: tagged by commit and branch, labelled, reproducible (--offline for no network)
    BuildImage(build::BuildImage),
    /// Build the test stage and run the test suite in a container against a throwaway Postgres
    TestDocker(test_docker::TestDocker),
    /// Run an image against a throwaway Postgres: /healthz, /readyz, /version, a clean SIGTERM stop
    #[command(hide = true)]
    SmokeImage(smoke::SmokeImage),
    /// Push the image built for this commit to ECR, check its digest and gate on its scan
    Push(push::Push),
    /// What CI runs: test-all, build-image, test-docker, functional tests of the image; on main deploy and test again
    Ci(ci::Ci),
    /// Test every route of a running app at any base URL, and its page in headless Chromium
    FunctionalTest(functional::FunctionalTest),
    /// Run benchmarks and print their figures next to their goals
    Bench(bench::Bench),
    /// Encrypt, decrypt, edit, rekey and check the Terraform secrets file (secrets.tfvars.enc)
    Secrets(secrets::Secrets),
    /// Same as `secrets encrypt` (the name CI pipelines use)
    EncryptSecrets(secrets::Encrypt),
    /// Same as `secrets decrypt` (the name CI pipelines use)
    DecryptSecrets(secrets::Decrypt),
    /// Install the git pre-commit hook that refuses decrypted secrets
    InstallHooks(secrets::InstallHooks),
    /// Print a completion script for `cargo xtask` (bash, zsh or fish) on stdout
    Completions(completions::Completions),
}

impl Task {
    /// Runs the task. `deploy.toml` is read here, at most once, and only by
    /// the tasks that need it (setup and secrets work with a broken one);
    /// the environment `--env` names is resolved here, once, into the
    /// [`Target`] the task acts on.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let once = ConfigOnce::new(&ctx.root);
        let config = || once.get();
        let env = ctx.global.environment.as_str();
        let target = || config()?.target(env);
        let aws_env = || config()?.aws_env(env);
        let docker_env = || match target()? {
            Target::Docker(docker) => Ok(docker),
            Target::Aws(_) => anyhow::bail!("{env} is not a docker environment in {}", config()?.path.display()),
        };
        match self {
            Task::TestLocal(task) => task.run(ctx),
            Task::TestAll(task) => task.run(ctx),
            Task::Doctor(task) => task.run(&once, env),
            Task::Setup(task) => task.run(ctx),
            Task::Deploy(task) => task.run(ctx, &target()?),
            Task::Status(task) => task.run(ctx, &target()?),
            Task::Rollback(task) => task.run(ctx, &target()?),
            Task::Unlock(task) => task.run(ctx, &target()?),
            Task::Promote(task) => task.run(ctx, config()?),
            Task::Migrate(task) => task.run(ctx, &target()?),
            Task::Down(task) => task.run(ctx, &docker_env()?),
            Task::Dev(task) => task.run(ctx, &docker_env()?),
            Task::LocalProxy(task) => task.run(ctx),
            Task::Infra(task) => task.run(ctx, &aws_env()?),
            Task::Sandbox(task) => task.run(ctx, &once, env),
            Task::BuilderImage(task) => task.run(ctx),
            Task::BuildImage(task) => task.run(ctx, &config()?.app),
            Task::TestDocker(task) => task.run(ctx, &config()?.app),
            Task::SmokeImage(task) => task.run(ctx, &config()?.app),
            Task::Push(task) => task.run(ctx, &aws_env()?),
            Task::Ci(task) => task.run(ctx, config()?, env),
            Task::FunctionalTest(task) => task.run(ctx),
            Task::Bench(task) => task.run(ctx, &once),
            Task::Secrets(task) => task.run(ctx),
            Task::EncryptSecrets(task) => task.run(ctx),
            Task::DecryptSecrets(task) => task.run(ctx),
            Task::InstallHooks(task) => task.run(ctx),
            Task::Completions(task) => task.run(ctx),
        }
    }
}
