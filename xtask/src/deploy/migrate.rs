//! `cargo xtask migrate`: the database migrations of an image, on their own.
//! The same image runs them as `app migrate`; its exit code is the verdict.

use anyhow::Result;
use clap::Args;

use crate::{config::Target, support::ctx::Ctx};

/// Run the database migrations (`app migrate`) of an image against an environment
#[derive(Debug, Args)]
pub struct Migrate {
    /// The image whose migrations run (default: what the environment runs now)
    #[arg(long)]
    pub image: Option<String>,
}

impl Migrate {
    pub fn run(self, ctx: &Ctx, target: &Target) -> Result<()> {
        match target {
            Target::Docker(env) => crate::local::migrate(ctx, env, self.image.as_deref()),
            Target::Aws(env) => crate::aws::migrations::run_migrations(ctx, env, self.image.as_deref()),
        }
    }
}
