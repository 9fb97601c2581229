//! `cargo xtask migrate`: the database migrations of an image, on their own.
//! The same image runs them as `app migrate`; its exit code is the verdict.

use anyhow::Result;
use clap::Args;

use crate::{
    config::{Config, EnvironmentKind},
    util::Ctx,
};

/// Run the database migrations (`app migrate`) of an image against an environment
#[derive(Debug, Args)]
pub struct Migrate {
    /// The image whose migrations run (default: what the environment runs now)
    #[arg(long)]
    pub image: Option<String>,
}

impl Migrate {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let config = Config::load(&ctx.root)?;
        match config.environment(&ctx.global.environment)?.kind {
            EnvironmentKind::Docker => crate::local::migrate(ctx, self.image.as_deref()),
            EnvironmentKind::Aws => crate::ecs_deploy::run_migrations(ctx, self.image.as_deref()),
        }
    }
}
