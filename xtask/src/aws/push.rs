//! `cargo xtask push --env E`: puts the image built for this commit into the
//! environment's ECR repository and refuses to call it done until ECR agrees.
//!
//! The steps: log in to the registry (reusing a login until it expires),
//! tag and push, check that ECR reports the digest Docker pushed for the
//! tag, then gate on the image scan. An image whose scan cannot be read is
//! a failure unless `--allow-unscanned` says otherwise: "no findings" and
//! "not scanned" are never the same answer.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use xshell::{Cmd, cmd};

use crate::{
    aws::{api::AwsApi, client::AwsProcess, infra},
    config::Config,
    image::{self, advisories::DependencyCheck},
    secrets::SecretValue,
    support::{
        ctx::Ctx,
        exec::{output_with_progress, require_tool},
        fs::write_atomic,
        ui,
    },
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

/// The scan gate of a push (also a deploy's flags).
#[derive(Debug, Clone, Args)]
pub struct ScanGate {
    /// Fail when the scan finds anything at or above this severity; NONE
    /// turns the gate off
    #[arg(long, value_enum, ignore_case = true, default_value = "HIGH")]
    pub fail_on_severity: Threshold,
    /// How long to wait for the image scan, e.g. 300s or 5m
    #[arg(long, value_parser = crate::support::time::parse_duration, default_value = "300s")]
    pub scan_timeout: Duration,
    /// Accept an image whose scan is unsupported, failed or timed out (with
    /// a warning) instead of failing
    #[arg(long)]
    pub allow_unscanned: bool,
    /// A local copy of the RustSec advisory database for the dependency
    /// check (default: fetched into target/advisory-db)
    #[arg(long, value_name = "PATH", env = "XTASK_ADVISORY_DB")]
    pub advisory_db: Option<PathBuf>,
}

/// The lowest severity that fails a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum Threshold {
    Critical,
    High,
    Medium,
    Low,
    None,
}

impl Threshold {
    fn name(self) -> &'static str {
        match self {
            Threshold::Critical => "CRITICAL",
            Threshold::High => "HIGH",
            Threshold::Medium => "MEDIUM",
            Threshold::Low => "LOW",
            Threshold::None => "NONE",
        }
    }

    /// The rank a finding needs to fail the gate; None for `NONE`.
    fn rank(self) -> Option<u8> {
        match self {
            Threshold::Critical => Some(4),
            Threshold::High => Some(3),
            Threshold::Medium => Some(2),
            Threshold::Low => Some(1),
            Threshold::None => None,
        }
    }
}

/// ECR's severities, highest first. INFORMATIONAL, UNDEFINED and UNTRIAGED
/// never fail the gate.
const SEVERITIES: [(&str, u8); 7] =
    [("CRITICAL", 4), ("HIGH", 3), ("MEDIUM", 2), ("LOW", 1), ("INFORMATIONAL", 0), ("UNDEFINED", 0), ("UNTRIAGED", 0)];

/// How long ECR may take to show a pushed image (the sandbox's sync is
/// asynchronous, and so is ECR's own bookkeeping).
const ECR_VISIBLE_TIMEOUT: Duration = Duration::from_secs(15);
/// A login is reused while it has at least this long left.
const LOGIN_MARGIN_SECONDS: i64 = 5 * 60;
const LOGIN_CACHE: &str = "target/xtask/ecr-login.json";

/// What a push produced.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub digest: String,
    /// `<registry>/<repository>@sha256:...`: what deploys run.
    pub image_by_digest: String,
}

impl Push {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        self.execute(ctx).map(|_| ())
    }

    /// Pushes and checks; `None` under `--dry-run`.
    pub fn execute(&self, ctx: &Ctx) -> Result<Option<Pushed>> {
        let config = Config::load(&ctx.root)?;
        let environment_name = ctx.global.environment.clone();
        let environment = infra::aws_environment(&config, &environment_name)?;
        let repository = config.app_name().to_owned();
        check_local_stack_endpoint(environment.registry.as_deref(), &environment_name)?;
        require_tool("docker", "install Docker Engine: apt-get install docker.io")?;
        check_docker_daemon(ctx)?;

        // The tag `cargo xtask build-image` gives the image of this commit;
        // an image named with --image keeps its own tag (a branch image, a
        // test image), since release tags are immutable in ECR.
        let tag = match self.image.as_deref().and_then(tag_of) {
            Some(tag) => tag.to_owned(),
            None => image::Source::read(&ctx.sh)?.commit_tag(),
        };
        let local_image = self.image.clone().unwrap_or_else(|| format!("{repository}:{tag}"));
        check_local_image(ctx, &local_image, self.image.is_some())?;
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
                println!("would call: ecr.describe_image {}", json!({ "repository": repository, "tag": tag }));
                if self.gate.fail_on_severity != Threshold::None {
                    println!(
                        "would call: ecr.describe_image_scan_findings {} (and ecr.start_image_scan if no scan starts), for up to {}s",
                        json!({ "repository": repository, "digest": "<pushed digest>" }),
                        self.gate.scan_timeout.as_secs()
                    );
                }
                return Ok(None);
            }
        };
        let remote_by_digest = format!("{registry}/{repository}@{digest}");
        wait_until_ecr_reports(&mut aws, &repository, &tag, &digest, ECR_VISIBLE_TIMEOUT)?;
        ui::success(&format!("ECR reports {digest} for {repository}:{tag}"));

        let scan = self.scan_gate(&mut aws, &repository, &digest, scan_on_push, &remote_by_digest, &dependencies)?;
        if ctx.global.json {
            let result = json!({
                "event": "result",
                "environment": environment_name,
                "registry": registry,
                "repository": repository,
                "tag": tag,
                "digest": digest,
                "image": remote_by_digest,
                "tagged_image": remote_tagged,
                "scan": scan,
            });
            println!("{result}");
        } else {
            println!("{remote_by_digest}");
        }
        Ok(Some(Pushed { digest, image_by_digest: remote_by_digest }))
    }

    /// The scan gate; returns what the JSON output says about the scan.
    fn scan_gate(
        &self,
        aws: &mut dyn AwsApi,
        repository: &str,
        digest: &str,
        scan_on_push: bool,
        reference: &str,
        dependencies: &DependencyCheck,
    ) -> Result<Value> {
        if self.gate.fail_on_severity == Threshold::None {
            ui::warn("scan gate disabled (--fail-on-severity NONE): findings are not checked");
            return Ok(json!({ "status": "NOT_CHECKED", "threshold": "NONE" }));
        }
        ui::step(&format!("waiting for the image scan (up to {}s)", self.gate.scan_timeout.as_secs()));
        let pacing = ScanPacing { timeout: self.gate.scan_timeout, ..ScanPacing::default() };
        match wait_for_scan(aws, repository, digest, scan_on_push, &pacing)? {
            ScanOutcome::Complete(counts) => {
                let blocking = blocking_findings(&counts, self.gate.fail_on_severity);
                if !blocking.is_empty() {
                    bail!(
                        "{reference} was pushed, but its scan found {} (at or above {}, --fail-on-severity): fix them, or choose the threshold deliberately",
                        describe_counts(&blocking),
                        self.gate.fail_on_severity.name()
                    );
                }
                let summary = if counts.is_empty() { "no findings".to_owned() } else { describe_counts(&counts) };
                ui::success(&format!("scan: nothing at or above {} ({summary})", self.gate.fail_on_severity.name()));
                Ok(
                    json!({ "status": "COMPLETE", "severity_counts": counts, "threshold": self.gate.fail_on_severity.name() }),
                )
            }
            ScanOutcome::Unsupported(reason) if matches!(dependencies, DependencyCheck::Passed { .. }) => {
                // The runtime image is FROM scratch: ECR has no OS package
                // database to scan, and our binary's dependencies were
                // checked before the push. That is the scan of this image.
                let DependencyCheck::Passed { packages, advisories } = dependencies else { unreachable!() };
                ui::success(&format!(
                    "scan: ECR cannot scan this image ({reason}: a FROM scratch image has no OS packages); the dependency check passed ({packages} locked packages against {advisories} advisories)"
                ));
                Ok(json!({
                    "status": "UNSUPPORTED_IMAGE",
                    "reason": reason,
                    "dependencies": { "status": "PASSED", "packages": packages, "advisories": advisories },
                    "threshold": self.gate.fail_on_severity.name(),
                }))
            }
            ScanOutcome::Unsupported(reason) | ScanOutcome::Unscanned(reason) => {
                if !self.gate.allow_unscanned {
                    bail!(
                        "{reference} was pushed but NOT scanned: {reason}. An unscanned image does not pass the gate; pass --allow-unscanned to accept it anyway"
                    );
                }
                ui::warn(&format!(
                    "IMAGE NOT SCANNED: {reason}. Accepted only because of --allow-unscanned; nobody has checked {reference} for vulnerabilities"
                ));
                Ok(json!({ "status": "UNSCANNED", "reason": reason, "threshold": self.gate.fail_on_severity.name() }))
            }
        }
    }
}

/// What GetAuthorizationToken hands out, decoded.
pub struct EcrToken {
    pub user: String,
    pub password: SecretValue,
    /// `https://<account>.dkr.ecr.<region>.amazonaws.com`
    pub proxy_endpoint: String,
    /// Epoch seconds.
    pub expires_at: Option<i64>,
}

/// Asks ECR for a registry login and decodes it (`base64("AWS:<password>")`).
pub fn ecr_token(aws: &mut dyn AwsApi) -> Result<EcrToken> {
    let answer = aws.call("ecr.get_authorization_token", json!({})).context("asking ECR for a registry login")?;
    let token = answer["token"].as_str().context("ECR returned no authorization token")?;
    let (user, password) = decode_token(token)?;
    Ok(EcrToken {
        user,
        password,
        proxy_endpoint: answer["proxy_endpoint"].as_str().unwrap_or_default().to_owned(),
        expires_at: answer["expires_at"].as_i64(),
    })
}

fn decode_token(token: &str) -> Result<(String, SecretValue)> {
    let bytes = openssl::base64::decode_block(token.trim()).context("decoding the ECR authorization token")?;
    let text = String::from_utf8(bytes).context("the ECR authorization token is not text")?;
    let (user, password) = text.split_once(':').context("the ECR authorization token is not user:password")?;
    Ok((user.to_owned(), SecretValue::new(password.to_owned())))
}

/// `https://123.dkr.ecr.eu-west-1.amazonaws.com/` → `123.dkr.ecr.eu-west-1.amazonaws.com`
fn registry_host(proxy_endpoint: &str) -> String {
    let without_scheme = proxy_endpoint.split_once("://").map_or(proxy_endpoint, |(_, rest)| rest);
    without_scheme.trim_end_matches('/').to_owned()
}

/// Whether the repository scans on push; a missing repository is the
/// error that says which stage creates it.
fn describe_repository(aws: &mut dyn AwsApi, repository: &str, environment_name: &str) -> Result<bool> {
    match aws.call("ecr.describe_repository", json!({ "repository": repository })) {
        Ok(answer) => Ok(answer["scan_on_push"].as_bool().unwrap_or(false)),
        Err(err) if err.code == "RepositoryNotFoundException" => bail!(
            "the ECR repository {repository:?} does not exist in {environment_name}: create it with `cargo xtask infra apply --env {environment_name} --stage repositories`"
        ),
        Err(err) => Err(err).with_context(|| format!("looking up the ECR repository {repository:?}")),
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

/// One registry login and where its expiry is remembered.
struct Login<'a> {
    registry: &'a str,
    token: &'a EcrToken,
    cache: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct LoginRecord {
    registry: String,
    /// Epoch seconds.
    expires_at: i64,
}

impl Login<'_> {
    /// `docker login` unless an unexpired login to this registry is on
    /// record (`force` ignores the record).
    fn ensure(&self, ctx: &Ctx, force: bool) -> Result<()> {
        let registry = self.registry;
        let now = crate::support::time::epoch_seconds();
        let records = read_login_records(&self.cache);
        if !force && login_is_fresh(&records, registry, now) {
            ui::info(&format!("reusing the login to {registry} (until it expires)"));
            return Ok(());
        }
        let user = &self.token.user;
        let cmd = cmd!(ctx.sh, "docker login --username {user} --password-stdin {registry}");
        if ctx.dry_run() {
            println!("would run: {cmd}");
            return Ok(());
        }
        ui::detail(&format!("$ {cmd}"));
        let output =
            cmd.stdin(self.token.password.expose()).quiet().ignore_status().output().context("running docker login")?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            bail!(
                "the registry {registry} rejected the login ({}): check the AWS credentials and that they may pull and push in this account (for the sandbox: is it up? `cargo xtask sandbox up`)",
                stderr.trim()
            );
        }
        // Without a future expiry there is nothing to reuse: record nothing.
        if let Some(expires_at) = self.token.expires_at.filter(|expires_at| *expires_at > now) {
            let mut records: Vec<LoginRecord> =
                records.into_iter().filter(|record| record.registry != registry && record.expires_at > now).collect();
            records.push(LoginRecord { registry: registry.to_owned(), expires_at });
            self.write_records(&records)?;
        }
        ui::success(&format!("logged in to {registry}"));
        Ok(())
    }

    /// Forgets the login (the registry refused it after all).
    fn forget(&self) -> Result<()> {
        let records: Vec<LoginRecord> =
            read_login_records(&self.cache).into_iter().filter(|record| record.registry != self.registry).collect();
        self.write_records(&records)
    }

    fn write_records(&self, records: &[LoginRecord]) -> Result<()> {
        if let Some(dir) = self.cache.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = serde_json::to_vec_pretty(records).context("encoding the login record")?;
        write_atomic(&self.cache, &text, 0o644)
    }
}

fn read_login_records(path: &Path) -> Vec<LoginRecord> {
    // A missing or unreadable record only costs a login.
    std::fs::read(path).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok()).unwrap_or_default()
}

fn login_is_fresh(records: &[LoginRecord], registry: &str, now: i64) -> bool {
    records.iter().any(|record| record.registry == registry && record.expires_at - now > LOGIN_MARGIN_SECONDS)
}

/// `docker push`; returns the pushed digest (None in dry-run). A push the
/// registry refuses for want of credentials logs in again once: the login
/// on record may belong to another Docker config.
fn docker_push(ctx: &Ctx, login: &Login<'_>, remote_tagged: &str) -> Result<Option<String>> {
    let push = || -> Cmd<'_> { cmd!(ctx.sh, "docker push {remote_tagged}") };
    if ctx.dry_run() {
        println!("would run: {}", push());
        return Ok(None);
    }
    let mut retried = false;
    loop {
        ui::detail(&format!("$ {}", push()));
        let output = output_with_progress("docker push", &mut std::process::Command::from(push()))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if output.status.success() {
            if let Some(digest) = digest_from_push_output(&stdout) {
                return Ok(Some(digest));
            }
            return repo_digest(ctx, remote_tagged).map(Some);
        }
        let unauthorized = ["unauthorized", "no basic auth credentials", "authentication required"]
            .iter()
            .any(|needle| stderr.to_lowercase().contains(needle));
        if unauthorized && !retried {
            ui::info("the registry asked for credentials again: logging in afresh");
            login.forget()?;
            login.ensure(ctx, true)?;
            retried = true;
            continue;
        }
        bail!("docker push {remote_tagged} failed:\n{}{}", stdout.trim(), stderr.trim());
    }
}

/// The digest from `docker push` output: `<tag>: digest: sha256:<hex> size: N`.
fn digest_from_push_output(output: &str) -> Option<String> {
    output.lines().rev().find_map(|line| {
        let rest = line.split("digest: ").nth(1)?;
        let digest = rest.split_whitespace().next()?;
        is_digest(digest).then(|| digest.to_owned())
    })
}

fn is_digest(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|byte| byte.is_ascii_hexdigit()))
}

/// The digest Docker recorded for the pushed reference (`RepoDigests`).
fn repo_digest(ctx: &Ctx, remote_tagged: &str) -> Result<String> {
    let text = cmd!(ctx.sh, "docker image inspect")
        .args(["--format", "{{json .RepoDigests}}"])
        .arg(remote_tagged)
        .quiet()
        .read()
        .context("reading the pushed digest (docker image inspect)")?;
    let digests: Vec<String> = serde_json::from_str(&text).context("parsing RepoDigests")?;
    let repository = remote_tagged.rsplit_once(':').map_or(remote_tagged, |(repository, _)| repository);
    digests
        .iter()
        .find_map(|entry| entry.strip_prefix(&format!("{repository}@")).filter(|digest| is_digest(digest)))
        .map(str::to_owned)
        .with_context(|| format!("docker push succeeded but no digest for {repository} was recorded ({text})"))
}

/// Polls ECR until it reports `digest` for the tag.
fn wait_until_ecr_reports(
    aws: &mut dyn AwsApi,
    repository: &str,
    tag: &str,
    digest: &str,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last: String;
    loop {
        match aws.call("ecr.describe_image", json!({ "repository": repository, "tag": tag })) {
            Ok(answer) => {
                let reported = answer["digest"].as_str().unwrap_or_default();
                if reported == digest {
                    return Ok(());
                }
                last = format!("digest {reported}");
            }
            Err(err) if err.code == "ImageNotFoundException" || err.throttling => last = err.to_string(),
            Err(err) => return Err(err).context(format!("looking up {repository}:{tag} in ECR")),
        }
        if Instant::now() >= deadline {
            bail!(
                "Docker pushed {digest}, but after {}s ECR reports {last} for {repository}:{tag}: the registry and ECR disagree (an immutable tag that already named another image?)",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The result of waiting for a scan.
#[derive(Debug, PartialEq, Eq)]
enum ScanOutcome {
    /// Finding counts by severity.
    Complete(BTreeMap<String, u64>),
    /// ECR cannot scan this kind of image (no OS package database: basic
    /// scanning's UnsupportedImageError, enhanced scanning's
    /// UNSUPPORTED_IMAGE; ECR user guide, troubleshooting image scanning).
    Unsupported(String),
    /// Why there is no result.
    Unscanned(String),
}

/// How often and how long to poll for a scan.
#[derive(Debug, Clone)]
struct ScanPacing {
    timeout: Duration,
    first_delay: Duration,
    max_delay: Duration,
    /// How long a scan-on-push repository gets to start its scan before we
    /// start one ourselves.
    scan_on_push_grace: Duration,
}

impl Default for ScanPacing {
    fn default() -> ScanPacing {
        ScanPacing {
            timeout: Duration::from_secs(300),
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(15),
            scan_on_push_grace: Duration::from_secs(5),
        }
    }
}

fn wait_for_scan(
    aws: &mut dyn AwsApi,
    repository: &str,
    digest: &str,
    scan_on_push: bool,
    pacing: &ScanPacing,
) -> Result<ScanOutcome> {
    let image = json!({ "repository": repository, "digest": digest });
    let started_at = Instant::now();
    let mut scan_requested = false;
    let mut delay = pacing.first_delay;
    let mut last: String;
    loop {
        match aws.call("ecr.describe_image_scan_findings", image.clone()) {
            Ok(answer) => {
                let status = answer["status"].as_str().unwrap_or("UNKNOWN").to_owned();
                let description = answer["description"].as_str().unwrap_or_default();
                match status.as_str() {
                    "COMPLETE" => return Ok(ScanOutcome::Complete(severity_counts(&answer))),
                    "UNSUPPORTED_IMAGE" => {
                        return Ok(ScanOutcome::Unsupported(format!("ECR's scan ended with {status}: {description}")));
                    }
                    "FAILED" if description.contains("UnsupportedImageError") => {
                        return Ok(ScanOutcome::Unsupported(format!("ECR's scan ended with {status}: {description}")));
                    }
                    "FAILED" | "FINDINGS_UNAVAILABLE" | "SCAN_ELIGIBILITY_EXPIRED" => {
                        return Ok(ScanOutcome::Unscanned(format!("ECR's scan ended with {status}: {description}")));
                    }
                    _ => last = format!("scan status {status}"),
                }
            }
            Err(err) if err.code == "ScanNotFoundException" => {
                last = format!("no scan ({})", err.code);
                let waited_for_scan_on_push = !scan_on_push || started_at.elapsed() >= pacing.scan_on_push_grace;
                if !scan_requested && waited_for_scan_on_push {
                    ui::info("no scan yet: starting one (ecr.start_image_scan)");
                    match aws.call("ecr.start_image_scan", image.clone()) {
                        // LimitExceeded: the image was scanned today already;
                        // its result is on the way.
                        Ok(_) => {}
                        Err(err) if err.code == "LimitExceededException" => {}
                        Err(err) if err.code == "UnsupportedImageTypeException" => {
                            return Ok(ScanOutcome::Unsupported(format!(
                                "ECR cannot scan this image: {}",
                                err.message
                            )));
                        }
                        Err(err) => return Err(err).context("starting the image scan"),
                    }
                    scan_requested = true;
                    continue;
                }
            }
            Err(err) if err.code == "UnsupportedImageTypeException" => {
                return Ok(ScanOutcome::Unsupported(format!("ECR cannot scan this image: {}", err.message)));
            }
            Err(err) if err.throttling => last = err.to_string(),
            Err(err) => return Err(err).context("reading the image scan findings"),
        }
        let elapsed = started_at.elapsed();
        if elapsed >= pacing.timeout {
            return Ok(ScanOutcome::Unscanned(format!(
                "no scan result after {}s (last answer: {last}); raise --scan-timeout if scans are slow here",
                pacing.timeout.as_secs()
            )));
        }
        std::thread::sleep(delay.min(pacing.timeout - elapsed));
        delay = (delay * 2).min(pacing.max_delay);
    }
}

fn severity_counts(answer: &Value) -> BTreeMap<String, u64> {
    answer["severity_counts"]
        .as_object()
        .map(|counts| {
            counts
                .iter()
                .filter_map(|(severity, count)| Some((severity.clone(), count.as_u64()?)))
                .filter(|(_, count)| *count > 0)
                .collect()
        })
        .unwrap_or_default()
}

fn severity_rank(severity: &str) -> u8 {
    SEVERITIES.iter().find(|(name, _)| name.eq_ignore_ascii_case(severity)).map_or(0, |(_, rank)| *rank)
}

/// The counts at or above the threshold.
fn blocking_findings(counts: &BTreeMap<String, u64>, threshold: Threshold) -> BTreeMap<String, u64> {
    let Some(minimum) = threshold.rank() else {
        return BTreeMap::new();
    };
    counts.iter().filter(|(severity, _)| severity_rank(severity) >= minimum).map(|(k, v)| (k.clone(), *v)).collect()
}

/// `2 CRITICAL, 1 HIGH`, highest severity first.
fn describe_counts(counts: &BTreeMap<String, u64>) -> String {
    let mut entries: Vec<(&String, &u64)> = counts.iter().collect();
    entries.sort_by_key(|(severity, _)| std::cmp::Reverse(severity_rank(severity)));
    entries.iter().map(|(severity, count)| format!("{count} {severity}")).collect::<Vec<_>>().join(", ")
}

/// `300`, `300s`, `5m`.
/// The tag of an image reference (`name:tag`), if it has one.
fn tag_of(reference: &str) -> Option<&str> {
    let (_, last) = reference.rsplit_once('/').unwrap_or(("", reference));
    // An image ID (`sha256:...`) or a digest reference has no tag.
    if last.contains('@') || reference.starts_with("sha256:") {
        return None;
    }
    last.split_once(':').map(|(_, tag)| tag).filter(|tag| !tag.is_empty())
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    #[test]
    fn tags_of_references() {
        assert_eq!(tag_of("guestbook:branch-main"), Some("branch-main"));
        assert_eq!(tag_of("127.0.0.1:5055/guestbook:v1"), Some("v1"));
        assert_eq!(tag_of("127.0.0.1:5055/guestbook"), None);
        assert_eq!(tag_of("repo@sha256:abc"), None);
        assert_eq!(tag_of("sha256:0123"), None);
    }
    use crate::aws::api::{ApiError, ScriptedApi};

    fn api_error(code: &str) -> ApiError {
        ApiError { code: code.to_owned(), message: format!("{code} from the script"), throttling: false }
    }

    fn scripted(script: Vec<(&str, Result<Value, ApiError>)>) -> ScriptedApi {
        ScriptedApi {
            script: script.into_iter().map(|(op, answer)| (op.to_owned(), answer)).collect::<VecDeque<_>>(),
            calls: Vec::new(),
        }
    }

    fn fast(scan_on_push_grace: Duration) -> ScanPacing {
        ScanPacing {
            timeout: Duration::from_secs(5),
            first_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            scan_on_push_grace,
        }
    }

    #[test]
    fn token_decodes_to_user_and_password() {
        let (user, password) = decode_token("QVdTOjEyMzQ1Njc4OTAxMi1hdXRoLXRva2Vu").unwrap();
        assert_eq!(user, "AWS");
        assert_eq!(password.expose(), "123456789012-auth-token");
        assert!(decode_token("not base64!").is_err());
        assert_eq!(registry_host("https://1.dkr.ecr.eu-west-1.amazonaws.com/"), "1.dkr.ecr.eu-west-1.amazonaws.com");
    }

    #[test]
    fn a_login_is_reused_until_five_minutes_before_it_expires() {
        let records = vec![LoginRecord { registry: "r:1".to_owned(), expires_at: 10_000 }];
        assert!(login_is_fresh(&records, "r:1", 10_000 - 301));
        assert!(!login_is_fresh(&records, "r:1", 10_000 - 300));
        assert!(!login_is_fresh(&records, "r:2", 0));
    }

    #[test]
    fn push_output_names_the_digest() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let output = format!("The push refers to repository [r/x]\n1: Pushed\ngit-1: digest: {digest} size: 524\n");
        assert_eq!(digest_from_push_output(&output), Some(digest));
        assert_eq!(digest_from_push_output("digest: sha256:short size: 1"), None);
    }

    #[test]
    fn threshold_counts_the_severities_at_or_above_it() {
        let counts: BTreeMap<String, u64> =
            [("CRITICAL", 2), ("HIGH", 1), ("LOW", 4), ("INFORMATIONAL", 9)].map(|(k, v)| (k.to_owned(), v)).into();
        assert_eq!(describe_counts(&blocking_findings(&counts, Threshold::High)), "2 CRITICAL, 1 HIGH");
        assert_eq!(describe_counts(&blocking_findings(&counts, Threshold::Critical)), "2 CRITICAL");
        assert_eq!(blocking_findings(&counts, Threshold::Low).len(), 3);
        assert!(blocking_findings(&counts, Threshold::None).is_empty());
    }

    #[test]
    fn without_scan_on_push_a_missing_scan_is_started_then_awaited() {
        let mut api = scripted(vec![
            ("ecr.describe_image_scan_findings", Err(api_error("ScanNotFoundException"))),
            ("ecr.start_image_scan", Ok(json!({ "status": "IN_PROGRESS" }))),
            ("ecr.describe_image_scan_findings", Ok(json!({ "status": "IN_PROGRESS" }))),
            ("ecr.describe_image_scan_findings", Ok(json!({ "status": "COMPLETE", "severity_counts": { "HIGH": 1 } }))),
        ]);
        let outcome = wait_for_scan(&mut api, "app", "sha256:x", false, &fast(Duration::from_secs(60))).unwrap();
        assert_eq!(outcome, ScanOutcome::Complete([("HIGH".to_owned(), 1)].into()));
    }

    #[test]
    fn a_scan_on_push_repository_gets_time_to_start_its_own_scan() {
        // With a grace period, ScanNotFound is polled and no scan started.
        let mut api = scripted(vec![
            ("ecr.describe_image_scan_findings", Err(api_error("ScanNotFoundException"))),
            ("ecr.describe_image_scan_findings", Ok(json!({ "status": "COMPLETE", "severity_counts": {} }))),
        ]);
        let outcome = wait_for_scan(&mut api, "app", "sha256:x", true, &fast(Duration::from_secs(60))).unwrap();
        assert_eq!(outcome, ScanOutcome::Complete(BTreeMap::new()));
    }

    #[test]
    fn unsupported_failed_and_missing_scans_are_unscanned_not_clean() {
        let mut api = scripted(vec![(
            "ecr.describe_image_scan_findings",
            Ok(json!({ "status": "UNSUPPORTED_IMAGE", "description": "UnsupportedImageError" })),
        )]);
        let outcome = wait_for_scan(&mut api, "app", "sha256:x", false, &fast(Duration::ZERO)).unwrap();
        assert!(matches!(outcome, ScanOutcome::Unsupported(reason) if reason.contains("UNSUPPORTED_IMAGE")));

        let mut api = scripted(vec![
            ("ecr.describe_image_scan_findings", Err(api_error("ScanNotFoundException"))),
            ("ecr.start_image_scan", Err(api_error("UnsupportedImageTypeException"))),
        ]);
        let outcome = wait_for_scan(&mut api, "app", "sha256:x", false, &fast(Duration::ZERO)).unwrap();
        assert!(matches!(outcome, ScanOutcome::Unsupported(reason) if reason.contains("cannot scan")));

        let mut pacing = fast(Duration::ZERO);
        pacing.timeout = Duration::ZERO;
        let mut api = scripted(vec![
            ("ecr.describe_image_scan_findings", Err(api_error("ScanNotFoundException"))),
            ("ecr.start_image_scan", Err(api_error("LimitExceededException"))),
            ("ecr.describe_image_scan_findings", Err(api_error("ScanNotFoundException"))),
        ]);
        let outcome = wait_for_scan(&mut api, "app", "sha256:x", false, &pacing).unwrap();
        assert!(matches!(outcome, ScanOutcome::Unscanned(reason) if reason.contains("no scan result after 0s")));
    }
}
