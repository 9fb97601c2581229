//! `cargo xtask ci`: what CI runs, in order, each step timed, with a summary
//! table at the end (also when a step fails: that step is FAIL, the ones
//! after it are skipped, and the task exits non-zero).
//!
//! 1. `test-all`: the full suite (fmt, clippy, every test, Terraform);
//! 2. `build-image`: the runtime image of this commit;
//! 3. `test-docker`: the app's tests inside the build image;
//! 4. the functional tests (`functional`) against that image, run with a
//!    throwaway Postgres exactly as `build-image --smoke` runs it, then
//!    stopped with SIGTERM (it must exit 0);
//! 5. on the main branch (unless `--no-deploy`): deploy that image to the first environment
//!    (`--deploy-env` or XTASK_CI_DEPLOY_ENV; by default the environment of
//!    `--env`, `local`, which every machine with Docker has: the pipelines
//!    of a team with an AWS account set it to dev, the start of the
//!    promotion chain), which for an AWS environment pushes it to the
//!    registry first, then the functional tests again against the
//!    environment's URL;
//! 6. on any other branch (or with `--no-deploy`): the image tagged `<app>:branch-<branch>`, and
//!    pushed only when `--push-env ENV` (or XTASK_CI_PUSH_ENV) names an AWS
//!    environment to push it to.
//!
//! What is "main" comes from what was pushed, never from a branch name a
//! contributor chose: on GitHub `GITHUB_REF` must be `refs/heads/main` (a
//! pull request's is `refs/pull/<n>/merge`, even when its head branch is
//! called main), see `BuildRef`.
//!
//! Why a branch push is opt-in: a push needs a registry and credentials for
//! it, and a CI machine without AWS (ours: no account, nothing to push to)
//! would otherwise fail every branch build on a step that says nothing about
//! the change. Without `--push-env` the branch image is tagged locally and
//! the step is reported as skipped, with the reason, never as passed.
//!
//! Steps reuse the tasks themselves, given requests (`DeployRequest`,
//! `PushRequest`, `BuildRequest`, `TestDockerRequest`), never flags or a
//! nested `cargo xtask`. `--dry-run` prints the plan and runs nothing; the
//! plan is a value, so the dry run and the real run share one description.

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use xshell::cmd;

use crate::{
    aws::{
        infra::{Stage, Terraform},
        push::PushRequest,
        scan::ScanGate,
    },
    config::{AppConfig, AwsEnv, Config, EnvironmentKind, Target},
    deploy::request::DeployRequest,
    http::BaseUrl,
    image::{
        build::BuildRequest,
        build_args::AppIdentity,
        offline::Offline,
        smoke::RunningImage,
        source::{Source, branch_tag},
    },
    local,
    suite::{
        functional::{FunctionalOptions, run_functional_tests},
        test_docker::{PostgresMode, TestDockerRequest},
        test_local::test_all,
    },
    support::{
        ctx::Ctx,
        steps::{Announce, OnFailure, Steps},
        ui::{self, Outcome},
    },
};

/// The branch whose builds are deployed.
pub const MAIN_BRANCH: &str = "main";

/// Run what CI runs: test-all, build-image, test-docker, functional tests of
/// the image; then on main deploy and test the environment, elsewhere tag
/// (and with --push-env push) a branch image
#[derive(Debug, Args)]
pub struct Ci {
    /// The branch being built (default: on GitHub the pushed branch, or a
    /// pull request's head branch, which is never main; BRANCH_NAME
    /// (Jenkins); else `git rev-parse --abbrev-ref HEAD`)
    #[arg(long)]
    pub branch: Option<String>,
    /// Never deploy, not even main: the test job of a pipeline whose deploy
    /// runs in a job of its own (the one that holds the credentials)
    #[arg(long)]
    pub no_deploy: bool,
    /// Where main is deployed (default: the environment of `--env`, that
    /// is `local` unless XTASK_ENV says otherwise). Pipelines with an AWS
    /// account set XTASK_CI_DEPLOY_ENV to the first environment of the
    /// promotion chain (dev)
    #[arg(long, value_name = "ENV", env = "XTASK_CI_DEPLOY_ENV")]
    pub deploy_env: Option<String>,
    /// Push the branch image of other branches to this environment's
    /// registry (default: not pushed)
    #[arg(long, value_name = "ENV", env = "XTASK_CI_PUSH_ENV")]
    pub push_env: Option<String>,
    /// Skip a step (repeatable)
    #[arg(long, value_enum, value_name = "STEP")]
    pub skip: Vec<StepKind>,
    #[command(flatten)]
    pub offline: Offline,
}

/// The steps `ci` can run, in their order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StepKind {
    TestAll,
    BuildImage,
    TestDocker,
    FunctionalImage,
    Deploy,
    FunctionalEnv,
    BranchTag,
    BranchPush,
}

impl Ci {
    /// `config` is deploy.toml; `default_env` the environment `--env`
    /// names, deployed to on main unless `--deploy-env` names another.
    pub fn run(mut self, ctx: &Ctx, config: &Config, default_env: &str) -> Result<()> {
        // Pipelines pass unset variables as empty strings: those mean none.
        self.push_env = self.push_env.filter(|name| !name.is_empty());
        self.deploy_env = self.deploy_env.filter(|name| !name.is_empty());
        let plan = self.plan(ctx, config, default_env)?;
        if ctx.print_plan(&plan.describe()) {
            return Ok(());
        }
        ui::info(&format!(
            "ci on branch {} ({}): {} steps",
            plan.branch.as_deref().unwrap_or("(none)"),
            plan.commit_image,
            plan.steps.len()
        ));
        let title = format!("ci summary (branch {})", plan.branch.as_deref().unwrap_or("none"));
        let mut steps = Steps::new(title, OnFailure::Stop).announce(Announce::Prefixed("ci: ".to_owned()));
        for step in &plan.steps {
            if plan.skipped.contains(&step.kind) {
                steps.skip(&step.title, "--skip");
            } else {
                steps.check(&step.title, || self.run_step(ctx, &plan, step));
            }
        }
        steps.finish().map_err(|failed| match failed.failed.first() {
            Some(step) => anyhow::anyhow!("ci failed at: {step}"),
            None => anyhow::anyhow!("interrupted"),
        })
    }

    /// The steps for this branch, with everything they act on resolved.
    fn plan(&self, ctx: &Ctx, config: &Config, default_env: &str) -> Result<Plan> {
        let app = AppIdentity::load(&ctx.root, &config.app)?;
        let source = Source::read(&ctx.sh)?;
        let BuildRef { branch, on_main } = match self.branch.as_deref().filter(|branch| !branch.is_empty()) {
            Some(branch) => BuildRef::named(branch),
            None => BuildRef::from_ci(|name| std::env::var(name).ok())
                .unwrap_or_else(|| BuildRef::from_git(git_branch(ctx))),
        };
        let commit_image = format!("{}:{}", app.name, source.commit_tag());
        if let Some(environment) = &self.push_env
            && config.environment(environment)?.kind != EnvironmentKind::Aws
        {
            bail!(
                "--push-env {environment}: a docker environment has no registry to push to (its images are on this machine)"
            );
        }
        let mut steps = vec![
            PlannedStep::new(
                StepKind::TestAll,
                "test-all",
                "the full suite: fmt, clippy, every test (end-to-end ones included), terraform fmt and validate",
            ),
            PlannedStep::new(StepKind::BuildImage, "build-image", format!("build {commit_image}")),
            PlannedStep::new(
                StepKind::TestDocker,
                "test-docker",
                "the app's tests inside the build image, against a throwaway Postgres",
            ),
            PlannedStep::new(
                StepKind::FunctionalImage,
                "functional tests: image",
                format!(
                    "run {commit_image} against a throwaway Postgres, test every route and the page in headless Chromium, stop it (exit 0 on SIGTERM)"
                ),
            ),
        ];
        let mut deploy_environment = None;
        let mut branch_image = None;
        if on_main && !self.no_deploy {
            let environment = match &self.deploy_env {
                Some(environment) => environment.clone(),
                None => default_env.to_owned(),
            };
            let kind = config.environment(&environment)?.kind;
            let how = match kind {
                EnvironmentKind::Aws => "push it to the environment's registry, migrate, roll out, check /version",
                EnvironmentKind::Docker => "migrate, start it beside the live release, switch when ready",
            };
            steps.push(PlannedStep::new(
                StepKind::Deploy,
                format!("deploy to {environment}"),
                format!("cargo xtask --env {environment} deploy --image {commit_image}: {how}"),
            ));
            let url = match kind {
                EnvironmentKind::Docker => format!("http://127.0.0.1:{}", docker_host_port(config, &environment)?),
                EnvironmentKind::Aws => format!("the service_url of {environment} (Terraform output)"),
            };
            steps.push(PlannedStep::new(
                StepKind::FunctionalEnv,
                format!("functional tests: {environment}"),
                format!("test every route and the page of {url}"),
            ));
            deploy_environment = Some(config.target(&environment)?);
        } else {
            let tag = branch.as_deref().and_then(branch_tag);
            let image = tag.map(|tag| format!("{}:{tag}", app.name));
            steps.push(PlannedStep::new(
                StepKind::BranchTag,
                format!("tag {}", image.as_deref().unwrap_or("the branch image")),
                match &image {
                    Some(image) => format!("docker tag {commit_image} {image}"),
                    None => "no branch name (a detached HEAD): pass --branch".to_owned(),
                },
            ));
            steps.push(PlannedStep::new(
                StepKind::BranchPush,
                "push the branch image",
                match (&self.push_env, &image) {
                    (Some(environment), Some(image)) => {
                        format!("cargo xtask --env {environment} push --image {image}")
                    }
                    _ => "not pushed: the image stays local unless --push-env ENV (or XTASK_CI_PUSH_ENV) names a registry"
                        .to_owned(),
                },
            ));
            branch_image = image;
        }
        Ok(Plan {
            app: config.app.clone(),
            branch,
            git_sha: source.git_sha,
            commit_image,
            deploy_environment,
            push_environment: self.push_env.as_deref().map(|name| config.aws_env(name)).transpose()?,
            branch_image,
            steps,
            skipped: self.skip.clone(),
        })
    }

    fn run_step(&self, ctx: &Ctx, plan: &Plan, step: &PlannedStep) -> Result<Outcome> {
        match step.kind {
            StepKind::TestAll => test_all(ctx, None)?,
            StepKind::BuildImage => {
                BuildRequest { offline: self.offline.enabled, ..BuildRequest::default() }.build(ctx, &plan.app)?;
            }
            StepKind::TestDocker => {
                let request = TestDockerRequest {
                    offline: self.offline.enabled,
                    postgres: PostgresMode::Auto,
                    cargo_test_args: Vec::new(),
                };
                request.run(ctx, &plan.app)?
            }
            StepKind::FunctionalImage => {
                let running = RunningImage::start(ctx, &plan.commit_image)?;
                let tested = run_functional_tests(ctx, &BaseUrl::local(running.port), &plan.functional_options());
                // Stopped (and checked) whatever the tests found; their
                // failure is the one to report.
                let stopped = running.stop(ctx);
                tested?;
                stopped?;
            }
            StepKind::Deploy => {
                let target = plan.deploy_environment.as_ref().context("no environment to deploy to")?;
                // The image built and tested above, nothing rebuilt.
                let request = DeployRequest::of_image(&plan.commit_image);
                crate::deploy::deploy(&confirming(ctx)?, target, &request)?;
            }
            StepKind::FunctionalEnv => {
                let target = plan.deploy_environment.as_ref().context("no environment was deployed")?;
                let environment = target.name();
                let Some(url) = environment_url(ctx, target)? else {
                    return Ok(Outcome::Skipped(format!(
                        "environments.{environment}.smoke_check = false: no container serves there"
                    )));
                };
                run_functional_tests(ctx, &BaseUrl::parse(&url)?, &plan.functional_options())?;
            }
            StepKind::BranchTag => {
                let Some(image) = &plan.branch_image else {
                    return Ok(Outcome::Skipped("no branch name (a detached HEAD): pass --branch".to_owned()));
                };
                let commit_image = &plan.commit_image;
                ctx.run(cmd!(ctx.sh, "docker tag {commit_image} {image}"))?;
                ui::success(&format!("tagged {image}"));
            }
            StepKind::BranchPush => {
                let (Some(environment), Some(image)) = (&plan.push_environment, &plan.branch_image) else {
                    return Ok(Outcome::Skipped(
                        "the branch image stays local: --push-env ENV (or XTASK_CI_PUSH_ENV) pushes it".to_owned(),
                    ));
                };
                let request = PushRequest { image: Some(image.clone()), gate: ScanGate::default() };
                request.execute(&confirming(ctx)?, environment)?;
            }
        }
        Ok(Outcome::Passed)
    }
}

/// What `ci` will do, resolved before anything runs.
struct Plan {
    /// `[app]` of deploy.toml.
    app: AppConfig,
    branch: Option<String>,
    git_sha: String,
    /// `<app>:git-<sha12>[-dirty]`: what build-image builds and every later
    /// step uses.
    commit_image: String,
    deploy_environment: Option<Target>,
    /// `--push-env`: where a branch image goes.
    push_environment: Option<AwsEnv>,
    branch_image: Option<String>,
    steps: Vec<PlannedStep>,
    /// `--skip`: planned, shown, not run.
    skipped: Vec<StepKind>,
}

impl Plan {
    fn functional_options(&self) -> FunctionalOptions {
        FunctionalOptions { expect_sha: Some(self.git_sha.clone()), browser: true }
    }

    /// The plan as the dry run prints it, one numbered step a line.
    fn describe(&self) -> String {
        let mut text = format!(
            "ci plan for branch {} (commit {}):\n",
            self.branch.as_deref().unwrap_or("(none: detached HEAD)"),
            local::short_sha(&self.git_sha)
        );
        let width = self.steps.iter().map(|step| step.title.len()).max().unwrap_or(0);
        for (number, step) in self.steps.iter().enumerate() {
            let skipped = if self.skipped.contains(&step.kind) { "(skipped: --skip) " } else { "" };
            text.push_str(&format!("  {}. {:<width$}  {skipped}{}\n", number + 1, step.title, step.detail));
        }
        text
    }
}

struct PlannedStep {
    kind: StepKind,
    /// The summary row's name.
    title: String,
    /// What it does, for the plan.
    detail: String,
}

impl PlannedStep {
    fn new(kind: StepKind, title: impl Into<String>, detail: impl Into<String>) -> PlannedStep {
        PlannedStep { kind, title: title.into(), detail: detail.into() }
    }
}

/// The context of a step that may ask for a confirmation. CI has no
/// terminal to confirm on: under CI the step answers yes, as `--yes` would.
fn confirming(ctx: &Ctx) -> Result<Ctx> {
    let mut global = ctx.global.clone();
    global.yes = global.yes || ui::in_ci();
    Ctx::new(global)
}

/// Which branch is built, and whether it is main (deployed).
#[derive(Debug, PartialEq, Eq)]
struct BuildRef {
    /// Names the branch image; may come from a pull request's head branch.
    branch: Option<String>,
    on_main: bool,
}

impl BuildRef {
    /// A branch named on the command line: the operator says what it is.
    fn named(branch: &str) -> BuildRef {
        BuildRef { branch: Some(branch.to_owned()), on_main: branch == MAIN_BRANCH }
    }

    /// What the CI system says is built, `None` outside CI.
    ///
    /// On GitHub only `GITHUB_REF` decides main: it is `refs/heads/main` for
    /// a push to main and `refs/pull/<n>/merge` for any pull request.
    /// `GITHUB_HEAD_REF` is the pull request's head branch, which anyone
    /// opening one names (`main` in a fork, or a same-repository branch), so
    /// it only names the branch image. Jenkins multibranch builds a pull
    /// request as `PR-<n>` with CHANGE_ID set.
    fn from_ci(var: impl Fn(&str) -> Option<String>) -> Option<BuildRef> {
        let var = |name: &str| var(name).map(|value| value.trim().to_owned()).filter(|value| !value.is_empty());
        if let Some(github_ref) = var("GITHUB_REF") {
            let pushed_branch = github_ref.strip_prefix("refs/heads/");
            let branch =
                var("GITHUB_HEAD_REF").or_else(|| pushed_branch.map(str::to_owned)).or_else(|| var("GITHUB_REF_NAME"));
            let on_main = pushed_branch == Some(MAIN_BRANCH) && var("GITHUB_HEAD_REF").is_none();
            return Some(BuildRef { branch, on_main });
        }
        let branch = var("BRANCH_NAME")?;
        let on_main = branch == MAIN_BRANCH && var("CHANGE_ID").is_none();
        Some(BuildRef { branch: Some(branch), on_main })
    }

    /// A developer's checkout: its branch, if any.
    fn from_git(branch: Option<String>) -> BuildRef {
        let on_main = branch.as_deref() == Some(MAIN_BRANCH);
        BuildRef { branch, on_main }
    }
}

/// git's branch (none on a detached HEAD).
fn git_branch(ctx: &Ctx) -> Option<String> {
    let branch = cmd!(ctx.sh, "git rev-parse --abbrev-ref HEAD").quiet().ignore_stderr().read().ok()?;
    let branch = branch.trim();
    (!branch.is_empty() && branch != "HEAD").then(|| branch.to_owned())
}

fn docker_host_port(config: &Config, environment: &str) -> Result<u16> {
    Ok(config.environment(environment)?.host_port.unwrap_or(config.app.port))
}

/// Where an environment serves the app: the stable URL of a docker one, the
/// `service_url` output of an AWS one; `None` where nothing serves
/// (`smoke_check = false`: the sandbox's emulated ECS runs no container).
fn environment_url(ctx: &Ctx, target: &Target) -> Result<Option<String>> {
    match target {
        Target::Docker(env) => Ok(Some(local::Target::new(ctx, env).url())),
        Target::Aws(env) if !env.settings.smoke_check => Ok(None),
        Target::Aws(env) => {
            let terraform = Terraform::new(ctx, env)?;
            let url = terraform
                .output(Stage::Environment, "service_url")?
                .with_context(|| format!("{} has no service_url output: was it deployed?", env.name))?;
            Ok(Some(url))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ci_env(vars: &[(&str, &str)]) -> Option<BuildRef> {
        BuildRef::from_ci(|name| vars.iter().find(|(key, _)| *key == name).map(|(_, value)| (*value).to_owned()))
    }

    #[test]
    fn only_a_push_to_refs_heads_main_is_main_on_github() {
        let push = ci_env(&[("GITHUB_REF", "refs/heads/main"), ("GITHUB_REF_NAME", "main"), ("GITHUB_HEAD_REF", "")]);
        assert_eq!(push, Some(BuildRef { branch: Some("main".to_owned()), on_main: true }));

        // A same-repository pull request whose head branch is called main:
        // GITHUB_HEAD_REF says main, the ref is the pull request's.
        let pull_request =
            ci_env(&[("GITHUB_REF", "refs/pull/7/merge"), ("GITHUB_REF_NAME", "7/merge"), ("GITHUB_HEAD_REF", "main")]);
        assert_eq!(pull_request, Some(BuildRef { branch: Some("main".to_owned()), on_main: false }));

        let feature = ci_env(&[("GITHUB_REF", "refs/heads/feature/x"), ("GITHUB_REF_NAME", "feature/x")]);
        assert_eq!(feature, Some(BuildRef { branch: Some("feature/x".to_owned()), on_main: false }));

        // A tag called main is not the branch.
        let tag = ci_env(&[("GITHUB_REF", "refs/tags/main"), ("GITHUB_REF_NAME", "main")]);
        assert_eq!(tag, Some(BuildRef { branch: Some("main".to_owned()), on_main: false }));

        // GITHUB_HEAD_REF alone (no GITHUB_REF) is not GitHub's word for main.
        assert_eq!(ci_env(&[("GITHUB_HEAD_REF", "main")]), None);
    }

    #[test]
    fn jenkins_main_is_the_branch_job_not_a_change_request() {
        assert_eq!(
            ci_env(&[("BRANCH_NAME", "main")]),
            Some(BuildRef { branch: Some("main".to_owned()), on_main: true })
        );
        let change = ci_env(&[("BRANCH_NAME", "main"), ("CHANGE_ID", "12")]);
        assert_eq!(change, Some(BuildRef { branch: Some("main".to_owned()), on_main: false }));
        assert!(!ci_env(&[("BRANCH_NAME", "PR-12"), ("CHANGE_ID", "12")]).unwrap().on_main);
    }

    #[test]
    fn a_named_or_checked_out_branch_is_main_only_by_name() {
        assert!(BuildRef::named("main").on_main);
        assert!(!BuildRef::named("main2").on_main);
        assert!(BuildRef::from_git(Some("main".to_owned())).on_main);
        assert_eq!(BuildRef::from_git(None), BuildRef { branch: None, on_main: false });
    }
}
