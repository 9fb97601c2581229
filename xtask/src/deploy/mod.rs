//! `cargo xtask deploy`, `status`, `rollback`, `unlock`: the flags every
//! environment kind shares, converted to requests (`request.rs`) and
//! dispatched by the environment's kind to the local Docker path (`local`)
//! or the ECS path (`aws::deploy`, `aws::operate`).

pub mod migrate;
pub mod migrations;
pub mod promote;
pub mod request;

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;

use crate::{
    aws::scan::ScanGate,
    config::Target,
    support::{ctx::Ctx, time::parse_duration},
};
use request::{DeployRequest, ImageSpec, Origin, ROLLOUT_TIMEOUT, Refresh, SMOKE_TIMEOUT};

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
    #[arg(long, default_value = SMOKE_TIMEOUT, value_parser = parse_duration)]
    pub smoke_timeout: Duration,
    /// For protected environments without a terminal: the environment name,
    /// typed back (with --yes)
    #[arg(long, value_name = "ENV")]
    pub confirm_env: Option<String>,
    /// Give up waiting for the rollout after this long (e.g. 90s, 15m)
    #[arg(long, default_value = ROLLOUT_TIMEOUT, value_parser = parse_duration)]
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
    pub fn run(self, ctx: &Ctx, target: &Target) -> Result<()> {
        match target {
            Target::Docker(env) => {
                bail!("{} is a docker environment: its lock is a file lock, released when its holder exits", env.name)
            }
            Target::Aws(env) => crate::aws::operate::unlock(ctx, env),
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
    #[arg(long, default_value = ROLLOUT_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,
}

impl Deploy {
    /// The request these flags make.
    pub fn request(self) -> DeployRequest {
        let refresh = |skip: bool, force: bool| match (skip, force) {
            (true, _) => Refresh::Skip,
            (false, true) => Refresh::Always,
            (false, false) => Refresh::IfChanged,
        };
        DeployRequest {
            image: match self.image {
                Some(image) => ImageSpec::Given(image),
                None => ImageSpec::Build { clean: self.clean_build, offline: self.offline },
            },
            origin: Origin::Checkout,
            allow_dirty: self.allow_dirty,
            infra: refresh(self.skip_infra, self.force_infra),
            migrations: refresh(self.skip_migrate, self.force_migrate),
            force_rollout: self.force,
            smoke: (!self.skip_smoke).then_some(self.smoke_timeout),
            confirm_env: self.confirm_env,
            timeout: self.timeout,
            gate: self.gate,
        }
    }

    pub fn run(self, ctx: &Ctx, target: &Target) -> Result<()> {
        deploy(ctx, target, &self.request())
    }
}

/// A deploy to an environment of either kind (`deploy`, and `ci` on main).
pub fn deploy(ctx: &Ctx, target: &Target, request: &DeployRequest) -> Result<()> {
    match target {
        Target::Docker(env) => {
            // The README's first command works on a fresh machine: what
            // a local deploy needs is installed first (announced).
            crate::setup::ensure(ctx, crate::setup::Need::LocalDeploy)?;
            crate::local::deploy(ctx, env, request)
        }
        Target::Aws(env) => crate::aws::deploy::deploy(ctx, env, request).map(|report| report.print(ctx)),
    }
}

impl Status {
    pub fn run(self, ctx: &Ctx, target: &Target) -> Result<()> {
        match target {
            Target::Docker(env) => crate::local::status(ctx, env, self.limit),
            Target::Aws(env) => crate::aws::operate::status(ctx, env, self.limit),
        }
    }
}

impl Rollback {
    pub fn run(self, ctx: &Ctx, target: &Target) -> Result<()> {
        match target {
            Target::Docker(env) => crate::local::rollback(ctx, env, self.timeout),
            Target::Aws(env) => crate::aws::operate::rollback(ctx, env, self.timeout),
        }
    }
}
