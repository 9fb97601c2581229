//! `cargo xtask test-local`: every check a change must pass, on this
//! machine: formatting, clippy with warnings denied, the workspace tests
//! against a real Postgres, and Terraform formatting and validation.
//!
//! Every step runs even after one fails, so one run shows everything that
//! needs fixing; the summary at the end has a line and a time per step.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Instant,
};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use xshell::cmd;

use crate::{
    cleanup,
    ui::{self, Outcome, SummaryRow},
    util::{Ctx, cargo, require_tool},
};

/// Run every check: fmt, clippy, the workspace tests, terraform
#[derive(Debug, Args)]
pub struct TestLocal {
    /// Run only these steps (repeatable); default: all
    #[arg(long = "step", value_enum)]
    pub steps: Vec<Step>,
    /// Extra arguments for `cargo test` (after `--`), e.g. `-- -p app`
    #[arg(last = true)]
    pub cargo_test_args: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Step {
    Fmt,
    Clippy,
    Test,
    TerraformFmt,
    TerraformValidate,
}

impl Step {
    const ALL: [Step; 5] = [Step::Fmt, Step::Clippy, Step::Test, Step::TerraformFmt, Step::TerraformValidate];

    fn name(self) -> &'static str {
        match self {
            Step::Fmt => "cargo fmt --check",
            Step::Clippy => "cargo clippy -D warnings",
            Step::Test => "cargo test --workspace",
            Step::TerraformFmt => "terraform fmt -check",
            Step::TerraformValidate => "terraform validate",
        }
    }
}

impl TestLocal {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let steps = if self.steps.is_empty() { Step::ALL.to_vec() } else { self.steps.clone() };
        let mut rows = Vec::new();
        for step in steps {
            if crate::cleanup::interrupted() {
                break;
            }
            ui::step(step.name());
            let started = Instant::now();
            let outcome = match self.run_step(ctx, step) {
                Ok(outcome) => outcome,
                Err(err) => {
                    ui::error(&format!("{}: {err:#}", step.name()));
                    Outcome::Failed(format!("{err:#}").lines().next().unwrap_or_default().to_owned())
                }
            };
            rows.push(SummaryRow { name: step.name().to_owned(), outcome, duration: started.elapsed() });
        }
        ui::print_summary("test-local summary", &rows);
        let failed: Vec<_> =
            rows.iter().filter(|row| matches!(row.outcome, Outcome::Failed(_))).map(|row| row.name.as_str()).collect();
        if !failed.is_empty() {
            bail!("{} step(s) failed: {}", failed.len(), failed.join(", "));
        }
        Ok(())
    }

    fn run_step(&self, ctx: &Ctx, step: Step) -> Result<Outcome> {
        let sh = &ctx.sh;
        match step {
            Step::Fmt => {
                // rustfmt colours its diff whenever TERM is set, pipe or not.
                let color = if ui::color() { "auto" } else { "never" };
                checked(ctx, "cargo fmt", cargo(sh).args(["fmt", "--all", "--check", "--", "--color", color]))
            }
            Step::Clippy => checked(
                ctx,
                "cargo clippy",
                cargo(sh).args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]),
            ),
            Step::Test => self.run_tests(ctx),
            Step::TerraformFmt => {
                if terraform_roots(&ctx.root).is_empty() {
                    return Ok(Outcome::Skipped("infra/ has no Terraform code yet".to_owned()));
                }
                let terraform = require_tool("terraform", TERRAFORM_HINT)?;
                checked(ctx, "terraform fmt", cmd!(sh, "{terraform} fmt -check -recursive -diff infra"))
            }
            Step::TerraformValidate => {
                let roots = terraform_roots(&ctx.root);
                if roots.is_empty() {
                    return Ok(Outcome::Skipped("infra/ has no Terraform code yet".to_owned()));
                }
                let terraform = require_tool("terraform", TERRAFORM_HINT)?;
                for root in roots {
                    let _dir = sh.push_dir(&root);
                    // A data dir of its own: validation must not disturb (or
                    // be disturbed by) the backend an `infra` task set up.
                    let name = root.file_name().unwrap_or_default().to_string_lossy().into_owned();
                    let _data_dir = sh.push_env("TF_DATA_DIR", ctx.root.join("target/terraform-validate").join(name));
                    // No backend: validation needs providers, not state.
                    checked(ctx, "terraform init", cmd!(sh, "{terraform} init -backend=false -input=false -no-color"))?;
                    checked(ctx, "terraform validate", cmd!(sh, "{terraform} validate -no-color"))?;
                }
                Ok(Outcome::Passed)
            }
        }
    }

    fn run_tests(&self, ctx: &Ctx) -> Result<Outcome> {
        let extra = &self.cargo_test_args;
        let (database_url, _postgres_guard) = match ctx.env_var("DATABASE_URL") {
            Some(url) => {
                ui::info("using DATABASE_URL from the environment or .env");
                (url, None)
            }
            _ if ctx.dry_run() => {
                println!("would start: a throwaway Postgres from the local binaries");
                ("postgres://postgres@127.0.0.1:PORT/postgres".to_owned(), None)
            }
            _ => {
                let (url, guard) = start_throwaway_postgres()?;
                (url, Some(guard))
            }
        };
        // Extra arguments that pick packages replace `--workspace`.
        let picks_packages = extra.iter().any(|arg| arg == "-p" || arg.starts_with("--package"));
        let scope: &[&str] = if picks_packages { &[] } else { &["--workspace"] };
        // --no-fail-fast: one failing test binary must not hide the others.
        let cmd =
            cargo(&ctx.sh).args(["test", "--no-fail-fast"]).args(scope).args(extra).env("DATABASE_URL", &database_url);
        let outcome = checked(ctx, "cargo test", cmd);
        // `_postgres_guard` drops here: the server stops, its directory goes.
        outcome
    }
}

const TERRAFORM_HINT: &str = "install Terraform >= 1.11: https://developer.hashicorp.com/terraform/install";

/// Starts a throwaway Postgres that is stopped and deleted when the guard
/// drops, and also when xtask is interrupted.
fn start_throwaway_postgres() -> Result<(String, cleanup::CleanupGuard)> {
    let started = Instant::now();
    let postgres = crate::util::start_postgres(testkit::PostgresOptions::default())
        .context("starting a throwaway Postgres (set DATABASE_URL to use your own)")?;
    let url = postgres.url();
    ui::info(&format!(
        "started a throwaway Postgres on 127.0.0.1:{} in {} (pid {}, data {})",
        postgres.port(),
        ui::format_duration(started.elapsed()),
        postgres.pid(),
        postgres.data_dir().display()
    ));
    let slot = Arc::new(Mutex::new(Some(postgres)));
    let guard = cleanup::register("stop the throwaway Postgres", move || {
        if let Some(postgres) = slot.lock().unwrap_or_else(|poison| poison.into_inner()).take() {
            postgres.stop();
        }
    });
    Ok((url, guard))
}

/// Runs a step's command; a non-zero exit is a failed step.
fn checked(ctx: &Ctx, description: &str, cmd: xshell::Cmd<'_>) -> Result<Outcome> {
    let status = ctx.run_with_progress(description, cmd)?;
    if !status.success() {
        bail!("{description} failed ({status})");
    }
    Ok(Outcome::Passed)
}

/// Terraform root modules under infra/ (directories holding .tf files,
/// skipping `.terraform` caches and nested modules under `modules/`).
pub fn terraform_roots(root: &Path) -> Vec<PathBuf> {
    let infra = root.join("infra");
    let mut roots = Vec::new();
    let Ok(entries) = std::fs::read_dir(&infra) else { return roots };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if !path.is_dir() || name == "modules" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        let has_tf = std::fs::read_dir(&path)
            .map(|files| files.flatten().any(|file| file.path().extension().is_some_and(|ext| ext == "tf")))
            .unwrap_or(false);
        if has_tf {
            roots.push(path);
        }
    }
    roots.sort();
    roots
}
