//! The test tiers, as the design describes them:
//! - `cargo xtask test-local` (tier 1, seconds when warm): formatting,
//!   clippy with warnings denied, every unit test, the app's integration
//!   tests against a throwaway Postgres, the task runner's tests that need
//!   no Docker, Terraform or emulator (the `tests` test binary), and
//!   Terraform formatting and validation; the tests that start moto (the
//!   emulator; their names say `moto`) wait for test-all, and so does the
//!   `xtask-aws` crate (its lints and tests): tier 1 never compiles the
//!   AWS SDK, the everyday path's largest build, as the task runner itself
//!   never does for tasks that do not talk to AWS;
//! - `cargo xtask test-docker` (tier 2, in its own module);
//! - `cargo xtask test-all` (the full suite, what CI runs): tier 1, then the
//!   task runner's end-to-end tests against Docker, Terraform and the
//!   sandbox (the `e2e` test binary), several at a time, with the moto
//!   tests and the doc tests; before them, clippy and the tests of
//!   `xtask-aws`. The end-to-end tests spend most of their time waiting (Terraform's fixed waits, container health checks),
//!   and each has its own sandbox, environment and ports.
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

use crate::support::{
    cleanup,
    ctx::Ctx,
    exec::{cargo, require_tool},
    steps::{OnFailure, Steps},
    ui::{self, Outcome},
};

/// Tier 1: fmt, clippy, unit tests, the app's and the task runner's fast tests, terraform
#[derive(Debug, Args)]
pub struct TestLocal {
    /// Run only these steps (repeatable); default: all of tier 1
    #[arg(long = "step", value_enum)]
    pub steps: Vec<Step>,
    /// Extra arguments for `cargo test` (after `--`), e.g. `-- -p app`
    #[arg(last = true)]
    pub cargo_test_args: Vec<String>,
}

/// The full suite: tier 1, then the task runner's end-to-end tests (Docker, Terraform, the sandbox)
#[derive(Debug, Args)]
pub struct TestAll {
    /// End-to-end tests run at once (default: XTASK_TEST_THREADS or 6)
    #[arg(long)]
    pub test_threads: Option<usize>,
}

impl TestAll {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        test_all(ctx, self.test_threads)
    }
}

/// The full suite; `test_threads` end-to-end tests at once (default:
/// XTASK_TEST_THREADS or 6). `ci` runs it too.
pub fn test_all(ctx: &Ctx, test_threads: Option<usize>) -> Result<()> {
    crate::setup::ensure(ctx, crate::setup::Need::Everything)?;
    let threads = match (test_threads, ctx.env_var("XTASK_TEST_THREADS")) {
        (Some(threads), _) => threads,
        (None, Some(value)) => {
            value.parse().with_context(|| format!("XTASK_TEST_THREADS={value:?} is not a number"))?
        }
        (None, None) => E2E_THREADS,
    };
    let mut steps = Step::TIER_1.to_vec();
    steps.extend([Step::AwsPath, Step::EndToEnd]);
    let suite = TestLocal { steps, cargo_test_args: Vec::new() };
    suite.run_steps(ctx, "test-all summary", threads)
}

/// End-to-end tests at once. They mostly wait (for containers, rollouts,
/// Terraform), so more of them than this machine's 2 cores pays: the e2e
/// step took 12 min at 4 and 9 min 34 s at 6 (test-all, warm, 41 of 41).
const E2E_THREADS: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Step {
    Fmt,
    Clippy,
    Test,
    TerraformFmt,
    TerraformValidate,
    /// Clippy and the tests of `xtask-aws` (only in test-all by default).
    AwsPath,
    /// The task runner's end-to-end tests (only in test-all by default).
    EndToEnd,
}

impl Step {
    const TIER_1: [Step; 5] = [Step::Fmt, Step::Clippy, Step::Test, Step::TerraformFmt, Step::TerraformValidate];

    fn name(self) -> &'static str {
        match self {
            Step::Fmt => "cargo fmt --check",
            Step::Clippy => "cargo clippy -D warnings",
            Step::Test => "cargo test (unit, app, fast task runner tests)",
            Step::TerraformFmt => "terraform fmt -check",
            Step::TerraformValidate => "terraform validate",
            Step::AwsPath => "xtask-aws (the AWS SDK path): clippy and tests",
            Step::EndToEnd => "cargo test: end-to-end (e2e), moto and doc tests",
        }
    }
}

impl TestLocal {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        crate::setup::ensure(ctx, crate::setup::Need::QuickTests)?;
        let steps = if self.steps.is_empty() { Step::TIER_1.to_vec() } else { self.steps.clone() };
        TestLocal { steps, ..self }.run_steps(ctx, "test-local summary", E2E_THREADS)
    }

    fn run_steps(&self, ctx: &Ctx, title: &str, e2e_threads: usize) -> Result<()> {
        let mut steps = Steps::new(title, OnFailure::Continue);
        for step in self.steps.iter().copied() {
            steps.check(step.name(), || self.run_step(ctx, step, e2e_threads));
        }
        Ok(steps.finish()?)
    }

    fn run_step(&self, ctx: &Ctx, step: Step, e2e_threads: usize) -> Result<Outcome> {
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
                cargo(sh).args([
                    "clippy",
                    "--workspace",
                    "--exclude",
                    AWS_CRATE,
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ]),
            ),
            Step::AwsPath => {
                // Both run, as every step does: a lint must not hide a test.
                let lints = checked(
                    ctx,
                    "cargo clippy",
                    cargo(sh).args(["clippy", "-p", AWS_CRATE, "--all-targets", "--", "-D", "warnings"]),
                );
                let tests = checked(ctx, "cargo test", cargo(sh).args(["test", "--no-fail-fast", "-p", AWS_CRATE]));
                lints.and(tests)
            }
            Step::Test => self.run_tests(ctx, Tier::Fast),
            Step::EndToEnd => self.run_tests(ctx, Tier::EndToEnd { threads: e2e_threads }),
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
                let terraform_version =
                    cmd!(sh, "{terraform} version").quiet().ignore_stderr().read().unwrap_or_default();
                let mut unchanged = Vec::new();
                for root in roots {
                    let _dir = sh.push_dir(&root);
                    // A data dir of its own: validation must not disturb (or
                    // be disturbed by) the backend an `infra` task set up.
                    let name = root.file_name().unwrap_or_default().to_string_lossy().into_owned();
                    let data_dir = ctx.root.join("target/terraform-validate").join(&name);
                    // Validation is a function of the configuration and
                    // Terraform's version: a root validated as it is now is
                    // not validated again (8 s of a warm tier 1 here).
                    let stamp_path = data_dir.join("validated");
                    let stamp = validation_stamp(&root, &terraform_version)?;
                    // A dry run shows every root's commands, validated or not.
                    let validated =
                        ctx.effect(false, || Ok(std::fs::read_to_string(&stamp_path).is_ok_and(|seen| seen == stamp)))?;
                    if validated {
                        unchanged.push(name);
                        continue;
                    }
                    let _data_dir = sh.push_env("TF_DATA_DIR", &data_dir);
                    // No backend: validation needs providers, not state.
                    checked(ctx, "terraform init", cmd!(sh, "{terraform} init -backend=false -input=false -no-color"))?;
                    checked(ctx, "terraform validate", cmd!(sh, "{terraform} validate -no-color"))?;
                    ctx.effect((), || crate::support::fs::write_atomic(&stamp_path, stamp.as_bytes(), 0o644))?;
                }
                if !unchanged.is_empty() {
                    ui::info(&format!(
                        "terraform validate: {} unchanged since they last validated",
                        unchanged.join(", ")
                    ));
                }
                Ok(Outcome::Passed)
            }
        }
    }

    fn run_tests(&self, ctx: &Ctx, tier: Tier) -> Result<Outcome> {
        let extra = &self.cargo_test_args;
        let (database_url, _postgres_guard) = match ctx.env_var("DATABASE_URL") {
            Some(url) => {
                ui::info("using DATABASE_URL from the environment or .env");
                (url, None)
            }
            None if ctx.would("start: a throwaway Postgres from the local binaries") => {
                ("postgres://postgres:PASSWORD@127.0.0.1:PORT/postgres".to_owned(), None)
            }
            None => {
                let (url, guard) = start_throwaway_postgres()?;
                (url, Some(guard))
            }
        };
        // Extra arguments that pick packages replace the tier's selection.
        let picks_packages = extra.iter().any(|arg| arg == "-p" || arg.starts_with("--package"));
        let runs = match tier {
            Tier::Fast if extra.is_empty() && nextest_installed(ctx) => fast_runs_with_nextest(),
            _ => cargo_test_runs(tier, picks_packages, extra),
        };
        let mut outcome = Ok(Outcome::Passed);
        for args in runs {
            let cmd = cargo(&ctx.sh).args(&args).env("DATABASE_URL", &database_url);
            let result = checked(ctx, "cargo test", cmd);
            if outcome.is_ok() {
                outcome = result;
            }
        }
        // `_postgres_guard` drops here: the server stops, its directory goes.
        outcome
    }
}

/// SHA-256 of a root's `.tf` files and lock file (names and contents, in
/// name order) and Terraform's version.
fn validation_stamp(root: &Path, terraform_version: &str) -> Result<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root)
        .with_context(|| format!("listing {}", root.display()))?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension().is_some_and(|ext| ext == "tf")
                || path.file_name().is_some_and(|n| n == ".terraform.lock.hcl")
        })
        .collect();
    files.sort();
    let mut hasher = openssl::sha::Sha256::new();
    hasher.update(terraform_version.as_bytes());
    for file in files {
        hasher.update(file.file_name().unwrap_or_default().as_encoded_bytes());
        hasher.update(b"\0");
        hasher.update(&std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?);
    }
    Ok(crate::support::fs::hex(&hasher.finish()))
}

/// The crate of the AWS SDK calls: its build is the largest of the
/// workspace, and only test-all builds it.
const AWS_CRATE: &str = "xtask-aws";

/// The tests that start moto, the emulator, by name: test-all runs them,
/// tier 1 does not (it needs no Docker, Terraform or emulator): testkit's
/// here, xtask-aws's with the rest of that crate. No other test may have
/// it in its name (checked below): tier 1 would leave it out too.
const EMULATOR_TESTS: &str = "moto";

/// Which tests a `cargo test` step runs.
#[derive(Debug, Clone, Copy)]
enum Tier {
    Fast,
    EndToEnd { threads: usize },
}

/// The `cargo test` runs of a tier, one after the other (cargo runs one
/// test binary at a time). `--no-fail-fast`: one failing test binary must
/// not hide the others.
fn cargo_test_runs(tier: Tier, picks_packages: bool, extra: &[String]) -> Vec<Vec<String>> {
    let selections: Vec<Vec<String>> = match tier {
        _ if picks_packages => vec![Vec::new()],
        // Everything but the task runner's end-to-end binary.
        Tier::Fast => vec![
            strings(&["--workspace", "--exclude", "xtask", "--exclude", AWS_CRATE]),
            strings(&["-p", "xtask", "--bins", "--test", "tests"]),
        ],
        Tier::EndToEnd { .. } => vec![
            strings(&["-p", "xtask", "--test", "e2e"]),
            strings(&["-p", "testkit", EMULATOR_TESTS]),
            // Tier 1 runs none with nextest (see fast_runs_with_nextest).
            strings(&["--doc", "--workspace", "--exclude", "xtask"]),
        ],
    };
    let harness = match tier {
        _ if picks_packages => Vec::new(),
        Tier::EndToEnd { threads } => vec![format!("--test-threads={threads}")],
        Tier::Fast => strings(&["--skip", EMULATOR_TESTS]),
    };
    // After the `--` of the extra arguments, if they have one.
    let harness = match extra.iter().any(|arg| arg == "--") {
        _ if harness.is_empty() => Vec::new(),
        true => harness,
        false => [vec!["--".to_owned()], harness].concat(),
    };
    selections
        .into_iter()
        .map(|selection| [strings(&["test", "--no-fail-fast"]), selection, extra.to_vec(), harness.clone()].concat())
        .collect()
}

/// Tier 1 with cargo-nextest: every test of every binary but the end-to-end
/// one in one pool, so a binary's slow tail (a test that waits on a
/// timeout, the secrets tests' key derivations) overlaps the others'
/// instead of running after them; `cargo test` runs the binaries one by
/// one. Four at a time on any machine: several tests wait on child
/// processes or timers. nextest runs no doc tests, and the workspace has
/// none: rustdoc's pass over the libraries (a second of a warm tier 1)
/// runs in test-all, beside the moto tests.
fn fast_runs_with_nextest() -> Vec<Vec<String>> {
    let filter = format!("not (package(xtask) & binary(e2e)) & not test(/{EMULATOR_TESTS}/)");
    let mut run =
        strings(&["nextest", "run", "--workspace", "--exclude", AWS_CRATE, "--no-fail-fast", "--test-threads", "4"]);
    run.extend(strings(&["--status-level", "fail", "-E", &filter]));
    vec![run]
}

/// Whether `cargo nextest` runs here (it is optional: tier 1 falls back
/// to `cargo test`, the same tests, slower).
fn nextest_installed(ctx: &Ctx) -> bool {
    let installed = cargo(&ctx.sh).args(["nextest", "--version"]).quiet().ignore_stdout().ignore_stderr().run().is_ok();
    if !installed {
        ui::info(
            "cargo-nextest is not installed: cargo test runs the test binaries one by one (`cargo install cargo-nextest --locked` runs them side by side)",
        );
    }
    installed
}

fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|word| (*word).to_owned()).collect()
}

const TERRAFORM_HINT: &str = "install Terraform >= 1.11: https://developer.hashicorp.com/terraform/install";

/// Starts a throwaway Postgres that is stopped and deleted when the guard
/// drops, and also when xtask is interrupted.
fn start_throwaway_postgres() -> Result<(String, cleanup::CleanupGuard)> {
    let started = Instant::now();
    let postgres = testkit::Postgres::try_start_with(testkit::PostgresOptions::default())
        .context("starting a throwaway Postgres (set DATABASE_URL to use your own)")?;
    let url = postgres.url();
    ui::info(&format!(
        "started a throwaway Postgres on 127.0.0.1:{} in {} (pid {}, data {})",
        postgres.port(),
        crate::support::time::format_duration(started.elapsed()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(runs: &[Vec<String>]) -> Vec<String> {
        runs.iter().map(|run| run.join(" ")).collect()
    }

    #[test]
    fn tier_1_leaves_the_end_to_end_and_emulator_tests_to_test_all() {
        let nextest = joined(&fast_runs_with_nextest());
        assert_eq!(nextest.len(), 1, "{nextest:?}");
        assert!(nextest[0].contains("not (package(xtask) & binary(e2e)) & not test(/moto/)"), "{nextest:?}");
        assert!(nextest[0].contains("--workspace --exclude xtask-aws"), "{nextest:?}");
        let fallback = joined(&cargo_test_runs(Tier::Fast, false, &[]));
        assert_eq!(
            fallback,
            [
                "test --no-fail-fast --workspace --exclude xtask --exclude xtask-aws -- --skip moto",
                "test --no-fail-fast -p xtask --bins --test tests -- --skip moto",
            ]
        );
        let full = joined(&cargo_test_runs(Tier::EndToEnd { threads: 4 }, false, &[]));
        assert_eq!(
            full,
            [
                "test --no-fail-fast -p xtask --test e2e -- --test-threads=4",
                "test --no-fail-fast -p testkit moto -- --test-threads=4",
                "test --no-fail-fast --doc --workspace --exclude xtask -- --test-threads=4",
            ]
        );
        // Extra arguments with their own `--` get the harness flags after it.
        let extra = strings(&["--", "--nocapture"]);
        assert_eq!(
            joined(&cargo_test_runs(Tier::Fast, false, &extra))[0],
            "test --no-fail-fast --workspace --exclude xtask --exclude xtask-aws -- --nocapture --skip moto"
        );
        // Only the emulator's tests carry the word: tier 1 would leave any
        // other out, and test-all's emulator run only looks in testkit.
        let root = crate::support::fs::project_root();
        let mut named = Vec::new();
        let mut pending = vec![root.join("app"), root.join("xtask")];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    pending.push(path);
                } else if path.extension().is_some_and(|ext| ext == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    let lines: Vec<&str> = text.lines().map(str::trim).collect();
                    for pair in lines.windows(2) {
                        if pair[0] == "#[test]"
                            && pair[1].split('(').next().unwrap_or_default().contains(EMULATOR_TESTS)
                        {
                            named.push(format!("{}: {}", path.display(), pair[1]));
                        }
                    }
                }
            }
        }
        assert!(named.is_empty(), "tests named like the emulator's outside testkit and xtask-aws: {named:?}");
        // Extra arguments that pick packages are the whole selection.
        assert_eq!(
            joined(&cargo_test_runs(Tier::Fast, true, &strings(&["-p", "app"]))),
            ["test --no-fail-fast -p app"]
        );
    }
}
