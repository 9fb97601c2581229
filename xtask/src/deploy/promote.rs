//! `cargo xtask promote --from A --to B`: gives B exactly the image live in
//! A, by digest, without rebuilding. The manifest is copied byte for byte
//! (ECR BatchGetImage, then PutImage of the same bytes), the digest is
//! checked at every hop, and B then gets the ordinary deploy with its wait.
//! deploy.toml names the chain (`promote_from`): an environment accepts only
//! releases that succeeded in the one before it.

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;

use crate::{
    aws::{
        api::AwsApi,
        client::AwsProcess,
        deploy,
        infra::{Stage, Terraform},
        scan::ScanGate,
        store::DynamoLedger,
    },
    config::Config,
    deploy::request::{DeployRequest, Origin, ROLLOUT_TIMEOUT, Refresh},
    ledger::{self, LedgerStore},
    support::{ctx::Ctx, time::parse_duration, ui},
};

/// Give the exact image (digest) live in one environment to the next
#[derive(Debug, Args)]
pub struct Promote {
    /// The environment whose live release is promoted
    #[arg(long)]
    pub from: String,
    /// The environment that receives it (its `promote_from` must name --from)
    #[arg(long)]
    pub to: String,
    /// For a protected target without a terminal: its name, typed back (with --yes)
    #[arg(long, value_name = "ENV")]
    pub confirm_env: Option<String>,
    /// Skip the database migrations in the target
    #[arg(long)]
    pub skip_migrate: bool,
    /// Give up waiting for the rollout after this long
    #[arg(long, default_value = ROLLOUT_TIMEOUT, value_parser = parse_duration)]
    pub timeout: std::time::Duration,
}

impl Promote {
    pub fn run(self, ctx: &Ctx, config: &Config) -> Result<()> {
        let source = config.aws_env(&self.from)?;
        let target = config.aws_env(&self.to)?;
        let allowed = target.settings.promote_from.as_ref().map(|from| from.get_ref().as_str());
        if allowed != Some(self.from.as_str()) {
            bail!(
                "{} takes releases from {}, not from {} (promote_from in {})",
                self.to,
                allowed.map_or("no environment".to_owned(), |from| format!("{from:?}")),
                self.from,
                config.path.display()
            );
        }

        // The release live in the source, which must have succeeded there.
        let source_terraform = Terraform::new(ctx, &source)?;
        let aws = Arc::new(Mutex::new(AwsProcess::start(ctx)?));
        let releases = source_terraform
            .output(Stage::Repositories, "release_table_name")?
            .with_context(|| format!("{} has no release ledger: apply its repositories stage first", self.from))?;
        let mut ledger = DynamoLedger { aws: aws.clone(), table: releases };
        let history = ledger.history(&self.from, 50)?;
        let live = ledger::live_release(&history)
            .cloned()
            .with_context(|| format!("{} has no successful release to promote", self.from))?;
        let digest = digest_of(&live.image)
            .with_context(|| format!("{}'s live release {} is not pinned by digest", self.from, live.image))?;
        if !ledger::succeeded_with(&history, &digest) {
            bail!("{digest} never succeeded in {}", self.from);
        }
        ui::step(&format!(
            "promote {digest} (commit {}, live in {} since {}) to {}",
            live.git_sha, self.from, live.started_at, self.to
        ));

        // Copy the manifest byte for byte into the target's repository.
        let target_terraform = Terraform::new(ctx, &target)?;
        let repository = config.app_name().to_owned();
        let tag = format!("promoted-{}-{}", self.to, compact_timestamp(&crate::support::time::now_rfc3339_millis()));
        let target_image = {
            let mut aws = aws.lock().unwrap_or_else(|poison| poison.into_inner());
            let image = aws
                .call("ecr.batch_get_image", json!({ "repository": repository, "digest": digest }))
                .with_context(|| format!("reading {repository}@{digest} from {}'s registry", self.from))?;
            let manifest = image["manifest"].as_str().context("ECR returned no manifest")?.to_owned();
            if image["digest"].as_str() != Some(digest.as_str()) {
                bail!("ECR returned {} for {digest}", image["digest"]);
            }
            let put = aws.call(
                "ecr.put_image",
                json!({
                    "repository": repository, "manifest": manifest, "media_type": image["media_type"],
                    "tag": tag, "digest": digest,
                }),
            );
            match put {
                Ok(answer) if answer.is_null() => {} // dry run
                Ok(answer) if answer["digest"].as_str() == Some(digest.as_str()) => {}
                Ok(answer) => bail!("ECR stored the promoted manifest as {}, not {digest}", answer["digest"]),
                Err(err) if err.code == "LayersNotFoundException" => bail!(
                    "{}'s repository lacks the image's layers ({err}): promotion between registries needs ECR replication or a pull of {}",
                    self.to,
                    live.image
                ),
                Err(err) => return Err(err).context(format!("tagging {digest} as {tag} for {}", self.to)),
            }
            let registry = match &target.settings.registry {
                Some(registry) => registry.clone(),
                None => {
                    let url = target_terraform.output(Stage::Repositories, "repository_url")?.with_context(|| {
                        format!("{} has no repository: apply its repositories stage first", self.to)
                    })?;
                    url.rsplit_once('/').map(|(registry, _)| registry.to_owned()).unwrap_or(url)
                }
            };
            format!("{registry}/{repository}@{digest}")
        };
        ui::success(&format!("{target_image} tagged {tag}"));

        // The ordinary deploy of that digest to the target, with its wait.
        // A target that runs this digest already has nothing to do.
        let request = DeployRequest {
            origin: Origin::Promoted { git_sha: live.git_sha },
            // Not built here: nothing in the checkout matters.
            allow_dirty: true,
            migrations: if self.skip_migrate { Refresh::Skip } else { Refresh::IfChanged },
            confirm_env: self.confirm_env.clone(),
            timeout: self.timeout,
            // Nothing is pushed: the image was scanned when it was pushed.
            gate: ScanGate::off(),
            ..DeployRequest::of_image(target_image.clone())
        };
        let report = deploy::deploy(ctx, &target, &request)?;
        report.print(ctx);
        if ctx.would(format_args!("check that {} runs {digest}", self.to)) {
            return Ok(());
        }
        if digest_of(&report.image).as_deref() != Some(digest.as_str()) {
            bail!("{} runs {}, not {digest}", self.to, report.image);
        }
        ui::success(&format!("{} runs {digest}, the digest live in {}", self.to, self.from));
        Ok(())
    }
}

/// `sha256:...` from `repo@sha256:...`.
fn digest_of(image: &str) -> Option<String> {
    image.split_once('@').map(|(_, digest)| digest.to_owned()).filter(|digest| digest.starts_with("sha256:"))
}

/// `20261123T171500` from an RFC 3339 time: tag-safe.
fn compact_timestamp(rfc3339: &str) -> String {
    rfc3339.chars().filter(|c| c.is_ascii_digit() || *c == 'T').take(15).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_and_tags() {
        assert_eq!(digest_of("127.0.0.1:5055/guestbook@sha256:abc").as_deref(), Some("sha256:abc"));
        assert_eq!(digest_of("guestbook:git-0123"), None);
        assert_eq!(compact_timestamp("2026-11-23T17:15:00.123Z"), "20261123T171500");
    }
}
