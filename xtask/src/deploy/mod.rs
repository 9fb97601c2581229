//! `cargo xtask deploy`, `status` and `rollback`: the flags every
//! environment kind shares, and the dispatch to the local Docker path
//! (`local`) or the ECS path (`ecs_deploy`).

pub mod migrate;
pub mod promote;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;

use crate::{
    aws::push::ScanGate,
    config::{Config, EnvironmentKind},
    support::{ctx::Ctx, time::parse_duration},
};

/// Build, push, migrate and roll out the app to an environment
#[derive(Debug, Clone, Args)]
pub struct Deploy {
    /// Deploy this image (tag, ID or `repo@sha256:...`) instead of building one
    #[arg(long)]
    pub image: Option<String>,
    /// Compile the image from scratch, as `build-image` and CI do (byte-for-byte
    /// reproducible), instead of incrementally from the last build's state
    #[arg(long, conflicts_with = "image")]
    pub clean_build: bool,
    /// Allow uncommitted changes outside the `local` environment
    #[arg(long)]
    pub allow_dirty: bool,
    /// Skip applying the infrastructure even when its inputs changed
    #[arg(long)]
    pub skip_infra: bool,
    /// Plan the infrastructure even when its inputs are unchanged since the
    /// last successful release
    #[arg(long, conflicts_with = "skip_infra")]
    pub force_infra: bool,
    /// Skip the database migrations
    #[arg(long)]
    pub skip_migrate: bool,
    /// Run the migrations even when the last deploy applied these same ones
    /// to this database (AWS environments; `local` always runs them)
    #[arg(long, conflicts_with = "skip_migrate")]
    pub force_migrate: bool,
    /// Roll out even when the environment already runs this exact image (a
    /// new container locally, a new deployment of the same revision on ECS)
    #[arg(long)]
    pub force: bool,
    /// Skip the smoke check of /version after the rollout
    #[arg(long)]
    pub skip_smoke: bool,
    /// How long the smoke check retries before it fails (and rolls back)
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub smoke_timeout: Duration,
    /// For protected environments without a terminal: the environment name,
    /// typed back (with --yes)
    #[arg(long, value_name = "ENV")]
    pub confirm_env: Option<String>,
    /// Give up waiting for the rollout after this long (e.g. 90s, 15m)
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Build the image offline (see build-image --offline)
    #[arg(long = "offline", env = "XTASK_OFFLINE", value_parser = clap::builder::BoolishValueParser::new())]
    pub offline: bool,
    #[command(flatten)]
    pub gate: ScanGate,
}

/// Show who holds an AWS environment's deploy lock, and break it
#[derive(Debug, Args)]
pub struct Unlock {}

impl Unlock {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        match environment_kind(ctx)? {
            EnvironmentKind::Docker => {
                bail!(
                    "{} is a docker environment: its lock is a file lock, released when its holder exits",
                    ctx.global.environment
                )
            }
            EnvironmentKind::Aws => crate::aws::deploy::unlock(ctx),
        }
    }
}

/// Show the live release of an environment and the last few attempts
#[derive(Debug, Clone, Args)]
pub struct Status {
    /// How many releases to list
    #[arg(long, default_value_t = 10)]
    pub limit: usize,
}

/// Return to the last successful release (not simply the previous one)
#[derive(Debug, Clone, Args)]
pub struct Rollback {
    /// Give up waiting for the rollout after this long
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    pub timeout: Duration,
}

impl Deploy {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        match environment_kind(ctx)? {
            EnvironmentKind::Docker => {
                // The README's first command works on a fresh machine: what
                // a local deploy needs is installed first (announced).
                crate::setup::ensure(ctx, crate::setup::Need::LocalDeploy)?;
                crate::local::deploy(ctx, &self)
            }
            EnvironmentKind::Aws => crate::aws::deploy::deploy(ctx, &self),
        }
    }
}

impl Status {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        match environment_kind(ctx)? {
            EnvironmentKind::Docker => crate::local::status(ctx, &self),
            EnvironmentKind::Aws => crate::aws::deploy::status(ctx, &self),
        }
    }
}

impl Rollback {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        match environment_kind(ctx)? {
            EnvironmentKind::Docker => crate::local::rollback(ctx, &self),
            EnvironmentKind::Aws => crate::aws::deploy::rollback(ctx, &self),
        }
    }
}

fn environment_kind(ctx: &Ctx) -> Result<EnvironmentKind> {
    let config = Config::load(&ctx.root)?;
    Ok(config.environment(&ctx.global.environment)?.kind)
}
