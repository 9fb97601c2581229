//! `cargo xtask sandbox up|down|status`: an offline rehearsal of the AWS
//! path on this machine.
//!
//! `up` starts, in the background and on loopback only: moto (the AWS
//! emulator) on a free port, with the environment's Terraform state bucket
//! created in it; a real registry on the address deploy.toml gives as the
//! environment's `registry`, accepting exactly the login moto's ECR hands
//! out; and a small sync process that tells moto's ECR about every image
//! pushed to the registry (see `sync`). It then prints the standard AWS
//! variables as `export` lines, so `eval "$(cargo xtask sandbox up)"` points
//! every other task (infra, push) at the sandbox through the same variables
//! they use for real AWS. This module is the only code that knows the
//! endpoint is an emulator.
//!
//! What `up` started is recorded in `target/sandbox/<env>/state.json`
//! (pid, address, log, command line of each process); `down` stops exactly
//! those processes, and only while their command line still matches, so a
//! reused pid is never signalled.
//!
//! One module per concern: `environment` (which sandbox), `state` (the
//! state file), `plan` (what `up` will start, as values), `up`, `down`,
//! `status`, `registry` (its login and configuration), `sync` (the
//! registry-to-ECR bridge) and `http` (the bare HTTP they speak).

mod down;
mod environment;
mod http;
mod plan;
mod registry;
mod state;
mod status;
mod sync;
mod up;

use anyhow::Result;
use clap::{Args, Subcommand};

use self::environment::SandboxEnvironment;
pub use self::sync::SyncArgs;
use crate::{config::ConfigOnce, support::ctx::Ctx};

/// Start, stop or inspect the sandbox: an AWS emulator and a registry on this machine
#[derive(Debug, Args)]
pub struct Sandbox {
    #[command(subcommand)]
    pub action: SandboxAction,
}

#[derive(Debug, Subcommand)]
pub enum SandboxAction {
    /// Start the sandbox in the background; prints `export` lines: eval "$(cargo xtask sandbox up)"
    Up(Up),
    /// Stop what `up` started
    Down(Down),
    /// Show each component with its address; exit non-zero unless all are up
    Status,
    /// (internal) Copy images pushed to the sandbox registry into the sandbox's ECR
    #[command(hide = true)]
    Sync(SyncArgs),
}

#[derive(Debug, Args)]
pub struct Up {}

#[derive(Debug, Args)]
pub struct Down {
    /// Also delete the sandbox's directory (registry storage and logs)
    #[arg(long)]
    pub purge: bool,
}

impl Sandbox {
    /// `env` is what `--env` names (see `environment::sandbox_name`).
    pub fn run(self, ctx: &Ctx, config: &ConfigOnce, env: &str) -> Result<()> {
        let sandbox = || SandboxEnvironment::load(ctx, config.get()?, &environment::sandbox_name(env));
        match self.action {
            SandboxAction::Up(up) => up.run(ctx, &sandbox()?),
            SandboxAction::Down(down) => down.run(ctx, &sandbox()?),
            SandboxAction::Status => status::status(&sandbox()?),
            SandboxAction::Sync(sync) => sync.run(ctx),
        }
    }
}

/// Credentials moto accepts (it accepts any); fixed so the exports are stable.
const ACCESS_KEY_ID: &str = "test";
const SECRET_ACCESS_KEY: &str = "test";

/// Under `--dry-run` prints every step of a plan (`would start moto: ...`)
/// and returns true: the caller skips them all. Otherwise prints nothing.
fn would_all(ctx: &Ctx, steps: &[String]) -> bool {
    let mut planned = false;
    for step in steps {
        planned = ctx.would(step);
    }
    planned
}
