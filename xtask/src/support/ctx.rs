//! The context every task runs in: the shell rooted at the project, the
//! global flags, the project's `.env`, and the one place where `--dry-run`
//! turns a command into a printed line. Below the command line: nothing
//! here knows the tasks.

use std::{path::PathBuf, process::ExitStatus};

use anyhow::{Context, Result};
use clap::Args;
use xshell::{Cmd, Shell};

use crate::support::{
    exec::{SpawnOptions, spawn_and_wait, spawn_with_progress, success_status},
    fs::{project_root, read_dotenv},
    ui,
};

/// Flags every task understands.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Environment to act on (see deploy.toml)
    #[arg(long = "env", global = true, env = "XTASK_ENV", default_value = "local")]
    pub environment: String,
    /// Answer yes to every confirmation (for CI)
    #[arg(long, global = true)]
    pub yes: bool,
    /// Print the commands and API calls a task would make; change nothing
    #[arg(long, global = true)]
    pub dry_run: bool,
    /// Show every command as it runs
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub verbose: bool,
    /// Only print errors and final results
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Machine-readable output: every line on stdout is a JSON object
    /// (NDJSON): messages, steps, results, and a last `task` event
    #[arg(long, global = true)]
    pub json: bool,
}

impl GlobalArgs {
    /// How much the console shows (`--quiet`, `--verbose`).
    pub fn verbosity(&self) -> ui::Verbosity {
        if self.quiet {
            ui::Verbosity::Quiet
        } else if self.verbose {
            ui::Verbosity::Verbose
        } else {
            ui::Verbosity::Normal
        }
    }
}

/// Handed to every task's `run`.
pub struct Ctx {
    pub sh: Shell,
    pub root: PathBuf,
    pub global: GlobalArgs,
    /// Variables from the project's `.env`, if any. Read into a map instead
    /// of the process environment: setting variables once threads exist
    /// (the Ctrl-C handler is one) is unsound.
    pub dotenv: Vec<(String, String)>,
}

impl Ctx {
    pub fn new(global: GlobalArgs) -> Result<Ctx> {
        let sh = Shell::new().context("creating a shell")?;
        let root = project_root();
        sh.change_dir(&root);
        let dotenv = read_dotenv(&root.join(".env"))?;
        Ok(Ctx { sh, root, global, dotenv })
    }

    /// A setting from the process environment, else from `.env`.
    pub fn env_var(&self, name: &str) -> Option<String> {
        std::env::var(name)
            .ok()
            .filter(|value| !value.is_empty())
            .or_else(|| self.dotenv.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone()))
    }

    /// True under `--dry-run`. Tasks do not branch on it: they ask
    /// [`Ctx::would`] (which prints the plan line and decides in one place),
    /// [`Ctx::effect`], or run commands through [`Ctx::run`] and its kin.
    pub fn dry_run(&self) -> bool {
        self.global.dry_run
    }

    /// The one place where `--dry-run` turns an effect into its plan: under
    /// `--dry-run` prints `would <what>` on stdout and returns true (the
    /// caller skips the effect); otherwise returns false and prints nothing.
    ///
    /// `what` starts with its verb: "run: docker build ...", "write
    /// target/x", "call: ecs.update_service ...".
    #[must_use]
    pub fn would(&self, what: impl std::fmt::Display) -> bool {
        if self.dry_run() {
            ui::plan(&format!("would {what}"));
        }
        self.dry_run()
    }

    /// A task that plans its steps up front (`ci`): under `--dry-run`
    /// prints the whole plan, as the task describes it, and returns true.
    #[must_use]
    pub fn print_plan(&self, plan: &str) -> bool {
        if self.dry_run() {
            ui::plan(plan.trim_end());
        }
        self.dry_run()
    }

    /// An effect whose result the rest of the task uses: under `--dry-run`
    /// it is skipped and `planned` stands in for its result (a placeholder
    /// password, no lock, an empty history). Its plan line, if any, is
    /// printed by a [`Ctx::would`] nearby.
    pub fn effect<T>(&self, planned: T, effect: impl FnOnce() -> Result<T>) -> Result<T> {
        if self.dry_run() { Ok(planned) } else { effect() }
    }

    /// Says a change succeeded; a dry run changed nothing and says nothing.
    pub fn success(&self, message: &str) {
        if !self.dry_run() {
            ui::success(message);
        }
    }

    /// Registers `action` to run on Ctrl-C and when the guard drops; a dry
    /// run made nothing to clean up and registers nothing.
    pub fn on_cleanup(
        &self,
        description: impl Into<String>,
        action: impl FnOnce() + Send + 'static,
    ) -> Option<crate::support::cleanup::CleanupGuard> {
        (!self.dry_run()).then(|| crate::support::cleanup::register(description, action))
    }

    /// Runs a command that changes something; with `--dry-run` it is only
    /// printed. Its output streams to the terminal.
    pub fn run(&self, cmd: Cmd<'_>) -> Result<()> {
        if self.would(format_args!("run: {cmd}")) {
            return Ok(());
        }
        ui::detail(&format!("$ {cmd}"));
        cmd.quiet().run()?;
        Ok(())
    }

    /// Runs a long command as a child we can stop: on Ctrl-C (or SIGTERM)
    /// its whole process group is terminated before xtask exits, so no
    /// `cargo test` or `docker build` is left running behind us.
    pub fn run_interruptible(&self, description: &str, cmd: Cmd<'_>) -> Result<ExitStatus> {
        if self.would(format_args!("run: {cmd}")) {
            return Ok(success_status());
        }
        ui::detail(&format!("$ {cmd}"));
        spawn_and_wait(description, cmd)
    }

    /// `run_interruptible` for a long step whose output matters only when
    /// it fails: shown as `ui::progress` (a spinner on a terminal).
    pub fn run_with_progress(&self, description: &str, cmd: Cmd<'_>) -> Result<ExitStatus> {
        if self.would(format_args!("run: {cmd}")) {
            return Ok(success_status());
        }
        ui::detail(&format!("$ {cmd}"));
        spawn_with_progress(description, cmd, SpawnOptions::default())
    }
}
