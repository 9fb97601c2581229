//! The sandbox's bridge from the registry to ECR.
//!
//! In AWS, ECR *is* the registry: a `docker push` is at once an image ECR
//! can describe, scan and hand to ECS. The sandbox has two halves instead: a
//! real registry that Docker pushes to, and moto's ECR, which has the API
//! but no registry behind it. This process joins them. The registry POSTs a
//! notification for every manifest pushed; for each one we fetch the exact
//! manifest bytes back from the registry and `PutImage` them into moto's
//! ECR with the registry's digest, so both sides name the image by the same
//! digest, and immutable tags are enforced by ECR as they would be in AWS.

use std::net::{SocketAddr, TcpListener, TcpStream};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};

use super::http;
use crate::{
    aws::{
        api::AwsApi,
        client::AwsProcess,
        ecr::{EcrToken, ecr_token},
    },
    support::{ctx::Ctx, fs::hex, ui},
};

/// The manifest types a push event can carry; blobs (layers) are ignored.
pub const MANIFEST_MEDIA_TYPES: [&str; 5] = [
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

/// Path the registry posts its notifications to.
pub const EVENTS_PATH: &str = "/events";
/// Answers 200 once the sync can reach both the registry's credentials and ECR.
pub const HEALTH_PATH: &str = "/health";

/// (internal) Copy images pushed to the sandbox registry into the sandbox's ECR
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Address to receive the registry's notifications on (loopback)
    #[arg(long)]
    pub listen: SocketAddr,
    /// The registry to fetch manifests from (host:port, loopback)
    #[arg(long)]
    pub registry: String,
}

/// One manifest push, from a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestPush {
    pub repository: String,
    pub digest: String,
    pub media_type: String,
    pub tag: Option<String>,
}

impl SyncArgs {
    /// Serves until terminated (`sandbox down` sends SIGTERM).
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        if !self.listen.ip().is_loopback() {
            bail!("the sandbox sync only listens on loopback, not {}", self.listen);
        }
        http::loopback_address(&self.registry)?;
        let mut aws = AwsProcess::start(ctx)?;
        // The registry accepts exactly the login ECR hands out (`sandbox up`
        // configured it so), which is also what reads manifests back.
        let token = ecr_token(&mut aws).context("asking the sandbox's ECR for the registry login")?;
        let listener = TcpListener::bind(self.listen).with_context(|| format!("listening on {}", self.listen))?;
        ui::info(&format!("sync: listening on {}, copying manifests from {} into ECR", self.listen, self.registry));
        let mut bridge = Bridge { registry: self.registry, token, aws };
        for stream in listener.incoming() {
            match stream {
                Ok(stream) => {
                    if let Err(err) = bridge.handle(&stream) {
                        ui::info(&format!("sync: {err:#}"));
                    }
                }
                Err(err) => ui::info(&format!("sync: accepting a connection: {err}")),
            }
        }
        Ok(())
    }
}

struct Bridge {
    registry: String,
    token: EcrToken,
    aws: AwsProcess,
}

/// What became of one push.
enum Copied {
    Done(String),
    /// Worth a retry by the registry (ECR did not answer).
    Retry(String),
    /// Logged and dropped; a retry would not help.
    Dropped(String),
}

impl Bridge {
    fn handle(&mut self, stream: &TcpStream) -> Result<()> {
        let Some(request) = http::read_request(stream)? else {
            return Ok(());
        };
        match (request.method.as_str(), request.path.as_str()) {
            ("GET", HEALTH_PATH) => http::write_response(stream, 200, "ok\n"),
            ("POST", EVENTS_PATH) => {
                let envelope: Value =
                    serde_json::from_slice(&request.body).context("parsing a registry notification")?;
                let mut retry = false;
                for push in manifest_pushes(&envelope) {
                    let message = match self.copy(&push) {
                        Copied::Done(message) | Copied::Dropped(message) => message,
                        Copied::Retry(message) => {
                            retry = true;
                            message
                        }
                    };
                    ui::info(&format!("sync: {}@{}: {message}", push.repository, push.digest));
                }
                // A non-2xx answer makes the registry send the batch again
                // later; PutImage of an image ECR has is harmless.
                http::write_response(stream, if retry { 503 } else { 200 }, "")
            }
            _ => http::write_response(stream, 404, "not found\n"),
        }
    }

    fn copy(&mut self, push: &ManifestPush) -> Copied {
        let Some(tag) = &push.tag else {
            return Copied::Dropped("no tag (ECR images pushed by Docker always have one); skipped".to_owned());
        };
        let manifest = match self.fetch_manifest(push) {
            Ok(manifest) => manifest,
            Err(err) => return Copied::Retry(format!("fetching the manifest: {err:#}")),
        };
        let params = json!({
            "repository": push.repository,
            "manifest": manifest,
            "media_type": push.media_type,
            "tag": tag,
            "digest": push.digest,
        });
        match self.aws.call("ecr.put_image", params) {
            Ok(_) => Copied::Done(format!("ECR now has {}:{tag}", push.repository)),
            Err(err) if err.code == "ImageAlreadyExistsException" => {
                Copied::Dropped(format!("ECR already has {}:{tag} ({})", push.repository, err.message))
            }
            Err(err) if err.code == "RepositoryNotFoundException" => Copied::Dropped(format!(
                "ECR has no repository {:?}: apply the repositories stage (`cargo xtask infra apply --stage repositories`), then push again",
                push.repository
            )),
            Err(err) if err.throttling || err.code == "TransportError" || err.code == "XtaskAwsFailed" => {
                Copied::Retry(format!("ECR did not take it: {err}"))
            }
            Err(err) => Copied::Dropped(format!("ECR refused it: {err}")),
        }
    }

    /// The manifest exactly as stored: its bytes define the digest, so
    /// they are checked against it and passed on unchanged.
    fn fetch_manifest(&self, push: &ManifestPush) -> Result<String> {
        let credentials = format!("{}:{}", self.token.user, self.token.password.expose());
        let path = format!("/v2/{}/manifests/{}", push.repository, push.digest);
        let request = http::Request {
            method: "GET",
            path: &path,
            headers: vec![
                ("Authorization", format!("Basic {}", openssl::base64::encode_block(credentials.as_bytes()))),
                ("Accept", push.media_type.clone()),
            ],
            body: &[],
        };
        let response = http::send(&self.registry, &request)?;
        if response.status != 200 {
            bail!("GET {path} answered {}: {}", response.status, response.body_text().trim());
        }
        let actual = format!("sha256:{}", hex(&openssl::sha::sha256(&response.body)));
        if actual != push.digest {
            bail!("the registry served {path} with digest {actual}");
        }
        String::from_utf8(response.body).context("the manifest is not UTF-8 text")
    }
}

/// The manifest pushes in a notification envelope (`{"events": [...]}`).
pub fn manifest_pushes(envelope: &Value) -> Vec<ManifestPush> {
    let events = envelope["events"].as_array().map(Vec::as_slice).unwrap_or_default();
    events
        .iter()
        .filter(|event| event["action"] == "push")
        .filter_map(|event| {
            let target = &event["target"];
            let media_type = target["mediaType"].as_str()?;
            if !MANIFEST_MEDIA_TYPES.contains(&media_type) {
                return None;
            }
            Some(ManifestPush {
                repository: target["repository"].as_str()?.to_owned(),
                digest: target["digest"].as_str()?.to_owned(),
                media_type: media_type.to_owned(),
                tag: target["tag"].as_str().filter(|tag| !tag.is_empty()).map(str::to_owned),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_manifest_pushes_are_copied() {
        let envelope = json!({ "events": [
            { "action": "push", "target": {
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "repository": "guestbook", "digest": "sha256:aa", "tag": "git-1" } },
            { "action": "push", "target": {
                "mediaType": "application/octet-stream", "repository": "guestbook", "digest": "sha256:bb" } },
            { "action": "pull", "target": {
                "mediaType": "application/vnd.oci.image.manifest.v1+json", "repository": "guestbook", "digest": "sha256:cc" } },
            { "action": "push", "target": {
                "mediaType": "application/vnd.oci.image.index.v1+json", "repository": "guestbook", "digest": "sha256:dd" } },
        ]});
        let pushes = manifest_pushes(&envelope);
        assert_eq!(pushes.len(), 2);
        assert_eq!(pushes[0].tag.as_deref(), Some("git-1"));
        assert_eq!(pushes[1].digest, "sha256:dd");
        assert_eq!(pushes[1].tag, None);
        assert!(manifest_pushes(&json!({})).is_empty());
    }
}
