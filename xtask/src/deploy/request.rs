//! What a deploy is asked to do, as a value: the command line's flags
//! convert to it (`Deploy::request`), and `promote` and `ci` build one
//! directly. Backends (`local`, `aws::deploy`) take it and never see flags.
//!
//! The defaults live here once: the flags declare them with these texts, and
//! requests built in code parse the same texts.

use std::time::Duration;

use crate::{aws::scan::ScanGate, support::time::parse_duration};

/// How long a rollout may take (`--timeout`).
pub const ROLLOUT_TIMEOUT: &str = "15m";
/// How long the smoke check retries (`--smoke-timeout`).
pub const SMOKE_TIMEOUT: &str = "60s";

/// A default duration declared above, as a value.
pub fn default_duration(text: &str) -> Duration {
    parse_duration(text).unwrap_or_else(|err| panic!("the default {text:?}: {err}"))
}

/// A deploy to one environment.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    pub image: ImageSpec,
    /// Where the image comes from, which decides what the ledger records.
    pub origin: Origin,
    /// Deploy a build of uncommitted changes (outside `local`).
    pub allow_dirty: bool,
    pub infra: Refresh,
    pub migrations: Refresh,
    /// Roll out even when the environment runs this exact image already.
    pub force_rollout: bool,
    /// The smoke check's retry window; `None` skips it.
    pub smoke: Option<Duration>,
    /// A protected environment's name, typed back for a run without a terminal.
    pub confirm_env: Option<String>,
    pub timeout: Duration,
    /// The push's gate (AWS environments).
    pub gate: ScanGate,
}

/// The image a deploy ships.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSpec {
    /// Built from this checkout: incrementally, or from scratch (`clean`,
    /// byte-for-byte reproducible); `offline` builds without pulling.
    Build { clean: bool, offline: bool },
    /// This image (a tag, an ID or `repo@sha256:...`), not built.
    Given(String),
}

/// Whether a step that may be unnecessary runs: the infrastructure's apply,
/// the migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// Never (`--skip-infra`, `--skip-migrate`).
    Skip,
    /// When its inputs changed since the last successful release.
    IfChanged,
    /// Always (`--force-infra`, `--force-migrate`).
    Always,
}

/// Where the image of a release comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Built (or named with --image) from this checkout.
    Checkout,
    /// An image already released elsewhere (promotion): no build, no push,
    /// its commit recorded as it was.
    Promoted { git_sha: String },
}

impl DeployRequest {
    /// A deploy of an image that exists already, with every default: what
    /// `ci` deploys after testing it, and what `promote` starts from.
    pub fn of_image(image: impl Into<String>) -> DeployRequest {
        DeployRequest {
            image: ImageSpec::Given(image.into()),
            origin: Origin::Checkout,
            allow_dirty: false,
            infra: Refresh::IfChanged,
            migrations: Refresh::IfChanged,
            force_rollout: false,
            smoke: Some(default_duration(SMOKE_TIMEOUT)),
            confirm_env: None,
            timeout: default_duration(ROLLOUT_TIMEOUT),
            gate: ScanGate::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::scan::Threshold;

    #[test]
    fn a_request_for_an_image_has_the_flags_defaults() {
        let request = DeployRequest::of_image("guestbook:git-0123456789ab");
        assert_eq!(request.image, ImageSpec::Given("guestbook:git-0123456789ab".to_owned()));
        assert_eq!(request.timeout, Duration::from_secs(15 * 60));
        assert_eq!(request.smoke, Some(Duration::from_secs(60)));
        assert_eq!((request.infra, request.migrations), (Refresh::IfChanged, Refresh::IfChanged));
        assert_eq!(request.gate.fail_on_severity, Threshold::High);
        assert_eq!(request.gate.scan_timeout, Duration::from_secs(300));
        assert!(!request.allow_dirty && !request.force_rollout);
    }
}
