//! `cargo xtask push --env E`: puts the image built for this commit into the
//! environment's ECR repository and refuses to call it done until ECR agrees.
//!
//! The steps: log in to the registry (reusing a login until it expires),
//! tag and push, check that ECR reports the digest Docker pushed for the
//! tag, then gate on the image scan. An image whose scan cannot be read is
//! a failure unless `--allow-unscanned` says otherwise: "no findings" and
//! "not scanned" are never the same answer.

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;
use xshell::cmd;

use crate::{
    aws::{
        client::AwsProcess,
        ecr::{
            ECR_VISIBLE_TIMEOUT, LOGIN_CACHE, Login, describe_repository, docker_push, ecr_token, registry_host,
            tag_of, wait_until_ecr_reports,
        },
        scan::{ScanGate, Threshold},
    },
    config::AwsEnv,
    image::{self, advisories::DependencyCheck},
    support::{ctx::Ctx, events::Event, exec::require_tool, ui},
};

/// Push the image built for this commit to the environment's ECR repository
#[derive(Debug, Args)]
pub struct Push {
    /// Local image to push (default: `<app>:git-<sha12>[-dirty]`, what
    /// `cargo xtask build-image` builds for this commit)
    #[arg(long, value_name = "LOCAL_REF")]
    pub image: Option<String>,
    #[command(flatten)]
    pub gate: ScanGate,
}

/// What a push produced.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub digest: String,
    /// `<registry>/<repository>@sha256:...`: what deploys run.
    pub image_by_digest: String,
}

/// What a push is asked to do: the flags' value, and what `deploy` and
/// `ci` build.
#[derive(Debug, Clone)]
pub struct PushRequest {
    /// The local image (default: the one `build-image` builds for this commit).
    pub image: Option<String>,
    pub gate: ScanGate,
}

impl Push {
    pub fn request(self) -> PushRequest {
        PushRequest { image: self.image, gate: self.gate }
    }

    pub fn run(self, ctx: &Ctx, env: &AwsEnv) -> Result<()> {
        self.request().execute(ctx, env).map(|_| ())
    }
}

impl PushRequest {
    /// Pushes and checks, and prints the pushed image (with `--json`, one
    /// `result` event); `None` under `--dry-run`.
    pub fn execute(&self, ctx: &Ctx, env: &AwsEnv) -> Result<Option<Pushed>> {
        let environment_name = env.name.clone();
        let environment = &env.settings;
        let repository = env.app_name.clone();
        check_local_stack_endpoint(environment.registry.as_deref(), &environment_name)?;
        require_tool("docker", "install Docker Engine: apt-get install docker.io")?;
        check_docker_daemon(ctx)?;

        // The tag `cargo xtask build-image` gives the image of this commit;
        // an image named with --image keeps its own tag (a branch image, a
        // test image), since release tags are immutable in ECR.
        let tag = match self.image.as_deref().and_then(tag_of) {
            Some(tag) => tag.to_owned(),
            None => image::source::Source::read(&ctx.sh)?.commit_tag(),
        };
        let local_image = self.image.clone().unwrap_or_else(|| format!("{repository}:{tag}"));
        check_local_image(ctx, &local_image, self.image.is_some())?;
        if !crate::config::is_sandbox(&environment_name) {
            crate::image::rds_ca::refuse_sandbox_ca(ctx, &local_image, &environment_name)?;
        }
        // Before anything leaves the machine: an image whose dependencies
        // have a known vulnerability is never pushed.
        let dependencies = if self.gate.fail_on_severity == Threshold::None {
            DependencyCheck::Off
        } else {
            let request = crate::image::advisories::GateRequest {
                image: &local_image,
                of_this_checkout: self.image.is_none(),
                database: self.gate.advisory_db.as_deref(),
                threshold_rank: self.gate.fail_on_severity.rank().unwrap_or(u8::MAX),
                threshold_name: self.gate.fail_on_severity.name(),
                policy: &environment.vulnerabilities,
            };
            crate::image::advisories::gate(ctx, &request)?
        };

        let mut aws = AwsProcess::start(ctx)?;
        let scan_on_push = describe_repository(&mut aws, &repository, &environment_name)?;
        let token = ecr_token(&mut aws)?;
        let registry = match &environment.registry {
            Some(registry) => registry.clone(),
            None => registry_host(&token.proxy_endpoint),
        };
        let remote_tagged = format!("{registry}/{repository}:{tag}");
        let login = Login { registry: &registry, token: &token, cache: ctx.root.join(LOGIN_CACHE) };

        ui::step(&format!("push {local_image} to {remote_tagged}"));
        login.ensure(ctx, false)?;
        ctx.run(cmd!(ctx.sh, "docker tag {local_image} {remote_tagged}"))?;
        let digest = match docker_push(ctx, &login, &remote_tagged)? {
            Some(digest) => digest,
            None => {
                // Under --dry-run (docker_push printed the push): the checks
                // that would follow it.
                let _ = ctx.would(format_args!(
                    "call: ecr.describe_image {}",
                    json!({ "repository": repository, "tag": tag })
                ));
                if self.gate.fail_on_severity != Threshold::None {
                    let _ = ctx.would(format_args!(
                        "call: ecr.describe_image_scan_findings {} (and ecr.start_image_scan if no scan starts), for up to {}s",
                        json!({ "repository": repository, "digest": "<pushed digest>" }),
                        self.gate.scan_timeout.as_secs()
                    ));
                }
                return Ok(None);
            }
        };
        let remote_by_digest = format!("{registry}/{repository}@{digest}");
        wait_until_ecr_reports(&mut aws, &repository, &tag, &digest, ECR_VISIBLE_TIMEOUT)?;
        ui::success(&format!("ECR reports {digest} for {repository}:{tag}"));

        let scan = self.gate.check(&mut aws, &repository, &digest, scan_on_push, &remote_by_digest, &dependencies)?;
        if ctx.global.json {
            let result = json!({
                "environment": environment_name,
                "registry": registry,
                "repository": repository,
                "tag": tag,
                "digest": digest,
                "image": remote_by_digest,
                "tagged_image": remote_tagged,
                "scan": scan,
            });
            Event::Result(result.as_object().cloned().unwrap_or_default()).emit();
        } else {
            ui::result(&remote_by_digest);
        }
        Ok(Some(Pushed { digest, image_by_digest: remote_by_digest }))
    }
}

/// A registry on this machine belongs to a local stack (the sandbox): its
/// AWS API must be local too, or the push would look for the repository in
/// whatever account the shell's credentials name.
fn check_local_stack_endpoint(registry: Option<&str>, environment_name: &str) -> Result<()> {
    let Some(registry) = registry else {
        return Ok(());
    };
    if !testkit::is_loopback_url(&format!("http://{registry}")) {
        return Ok(());
    }
    // The process environment, which `xtask-aws` inherits (not `.env`).
    let endpoint_url = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    if !testkit::is_loopback_url(&endpoint_url) {
        bail!(
            "{environment_name}'s registry {registry} is on this machine, but AWS_ENDPOINT_URL is {}: point the AWS variables at the local stack first (`eval \"$(cargo xtask sandbox up --env {environment_name})\"`)",
            if endpoint_url.is_empty() { "not set".to_owned() } else { format!("{endpoint_url:?}") }
        );
    }
    Ok(())
}

fn check_docker_daemon(ctx: &Ctx) -> Result<()> {
    let output = cmd!(ctx.sh, "docker version")
        .args(["--format", "{{.Server.Version}}"])
        .quiet()
        .ignore_status()
        .output()
        .context("running docker version")?;
    if !output.status.success() {
        bail!(
            "the Docker daemon is unreachable ({}): start it (`systemctl start docker`, or `dockerd`), or point DOCKER_HOST at one",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn check_local_image(ctx: &Ctx, local_image: &str, given: bool) -> Result<()> {
    let output = cmd!(ctx.sh, "docker image inspect")
        .args(["--format", "{{.Id}}"])
        .arg(local_image)
        .quiet()
        .ignore_status()
        .output()
        .context("running docker image inspect")?;
    if !output.status.success() {
        if given {
            bail!("there is no local image {local_image:?} (--image): check the name with `docker images`");
        }
        bail!(
            "there is no local image {local_image:?} for this commit: build it with `cargo xtask build-image` (or name another with --image)"
        );
    }
    Ok(())
}
