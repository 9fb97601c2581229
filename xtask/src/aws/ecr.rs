//! ECR as a registry: its login (GetAuthorizationToken, reused until it
//! nears expiry), `docker push` to it, and waiting until ECR reports the
//! digest Docker pushed for the tag.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::json;
use xshell::{Cmd, cmd};

use crate::{
    aws::api::AwsApi,
    support::secret::SecretValue,
    support::{ctx::Ctx, exec::output_with_progress, fs::write_atomic, ui},
};

/// How long ECR may take to show a pushed image (the sandbox's sync is
/// asynchronous, and so is ECR's own bookkeeping).
pub const ECR_VISIBLE_TIMEOUT: Duration = Duration::from_secs(15);

/// A login is reused while it has at least this long left.
pub const LOGIN_MARGIN_SECONDS: i64 = 5 * 60;

pub const LOGIN_CACHE: &str = "target/xtask/ecr-login.json";

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

pub fn decode_token(token: &str) -> Result<(String, SecretValue)> {
    let bytes = openssl::base64::decode_block(token.trim()).context("decoding the ECR authorization token")?;
    let text = String::from_utf8(bytes).context("the ECR authorization token is not text")?;
    let (user, password) = text.split_once(':').context("the ECR authorization token is not user:password")?;
    Ok((user.to_owned(), SecretValue::new(password.to_owned())))
}

/// `https://123.dkr.ecr.eu-west-1.amazonaws.com/` → `123.dkr.ecr.eu-west-1.amazonaws.com`
pub fn registry_host(proxy_endpoint: &str) -> String {
    let without_scheme = proxy_endpoint.split_once("://").map_or(proxy_endpoint, |(_, rest)| rest);
    without_scheme.trim_end_matches('/').to_owned()
}

/// Whether the repository scans on push; a missing repository is the
/// error that says which stage creates it.
pub fn describe_repository(aws: &mut dyn AwsApi, repository: &str, environment_name: &str) -> Result<bool> {
    match aws.call("ecr.describe_repository", json!({ "repository": repository })) {
        Ok(answer) => Ok(answer["scan_on_push"].as_bool().unwrap_or(false)),
        Err(err) if err.code == "RepositoryNotFoundException" => bail!(
            "the ECR repository {repository:?} does not exist in {environment_name}: create it with `cargo xtask infra apply --env {environment_name} --stage repositories`"
        ),
        Err(err) => Err(err).with_context(|| format!("looking up the ECR repository {repository:?}")),
    }
}

/// One registry login and where its expiry is remembered.
pub struct Login<'a> {
    pub registry: &'a str,
    pub token: &'a EcrToken,
    pub cache: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LoginRecord {
    registry: String,
    /// Epoch seconds.
    expires_at: i64,
}

impl Login<'_> {
    /// `docker login` unless an unexpired login to this registry is on
    /// record (`force` ignores the record).
    pub fn ensure(&self, ctx: &Ctx, force: bool) -> Result<()> {
        let registry = self.registry;
        let now = crate::support::time::epoch_seconds();
        let records = read_login_records(&self.cache);
        if !force && login_is_fresh(&records, registry, now) {
            ui::info(&format!("reusing the login to {registry} (until it expires)"));
            return Ok(());
        }
        let user = &self.token.user;
        let cmd = cmd!(ctx.sh, "docker login --username {user} --password-stdin {registry}");
        if ctx.would(format_args!("run: {cmd}")) {
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

pub fn read_login_records(path: &Path) -> Vec<LoginRecord> {
    // A missing or unreadable record only costs a login.
    std::fs::read(path).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok()).unwrap_or_default()
}

pub fn login_is_fresh(records: &[LoginRecord], registry: &str, now: i64) -> bool {
    records.iter().any(|record| record.registry == registry && record.expires_at - now > LOGIN_MARGIN_SECONDS)
}

/// `docker push`; returns the pushed digest (None in dry-run). A push the
/// registry refuses for want of credentials logs in again once: the login
/// on record may belong to another Docker config.
pub fn docker_push(ctx: &Ctx, login: &Login<'_>, remote_tagged: &str) -> Result<Option<String>> {
    let push = || -> Cmd<'_> { cmd!(ctx.sh, "docker push {remote_tagged}") };
    if ctx.would(format_args!("run: {}", push())) {
        return Ok(None);
    }
    let mut retried = false;
    loop {
        ui::detail(&format!("$ {}", push()));
        let output = output_with_progress("docker push", push())?;
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
pub fn digest_from_push_output(output: &str) -> Option<String> {
    output.lines().rev().find_map(|line| {
        let rest = line.split("digest: ").nth(1)?;
        let digest = rest.split_whitespace().next()?;
        is_digest(digest).then(|| digest.to_owned())
    })
}

pub fn is_digest(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|byte| byte.is_ascii_hexdigit()))
}

/// The digest Docker recorded for the pushed reference (`RepoDigests`).
pub fn repo_digest(ctx: &Ctx, remote_tagged: &str) -> Result<String> {
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
pub fn wait_until_ecr_reports(
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

/// `300`, `300s`, `5m`.
/// The tag of an image reference (`name:tag`), if it has one.
pub fn tag_of(reference: &str) -> Option<&str> {
    let (_, last) = reference.rsplit_once('/').unwrap_or(("", reference));
    // An image ID (`sha256:...`) or a digest reference has no tag.
    if last.contains('@') || reference.starts_with("sha256:") {
        return None;
    }
    last.split_once(':').map(|(_, tag)| tag).filter(|tag| !tag.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_of_references() {
        assert_eq!(tag_of("guestbook:branch-main"), Some("branch-main"));
        assert_eq!(tag_of("127.0.0.1:5055/guestbook:v1"), Some("v1"));
        assert_eq!(tag_of("127.0.0.1:5055/guestbook"), None);
        assert_eq!(tag_of("repo@sha256:abc"), None);
        assert_eq!(tag_of("sha256:0123"), None);
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
}
