//! The scan gate of a push: wait for ECR's image scan and refuse an image
//! whose findings reach the threshold, or that was not scanned at all
//! ("no findings" and "not scanned" are never the same answer).
//!
//! ECR's behaviour this follows: a repository with scan on push starts a
//! basic scan itself when the image arrives; otherwise StartImageScan
//! starts one; DescribeImageScanFindings answers ScanNotFoundException
//! until a scan exists and reports UNSUPPORTED_IMAGE for an image with no
//! OS package database (a FROM scratch image)
//! (https://docs.aws.amazon.com/AmazonECR/latest/userguide/image-scanning-basic.html).

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use crate::{aws::api::AwsApi, image::advisories::DependencyCheck, support::ui};

/// The gate's defaults, declared once for the flags and for [`ScanGate::default`].
pub const FAIL_ON_SEVERITY: &str = "HIGH";
pub const SCAN_TIMEOUT: &str = "300s";

/// The scan gate of a push (also a deploy's flags).
#[derive(Debug, Clone, Args)]
pub struct ScanGate {
    /// Fail when the scan finds anything at or above this severity; NONE
    /// turns the gate off
    #[arg(long, value_enum, ignore_case = true, default_value = FAIL_ON_SEVERITY)]
    pub fail_on_severity: Threshold,
    /// How long to wait for the image scan, e.g. 300s or 5m
    #[arg(long, value_parser = crate::support::time::parse_duration, default_value = SCAN_TIMEOUT)]
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
    pub fn name(self) -> &'static str {
        match self {
            Threshold::Critical => "CRITICAL",
            Threshold::High => "HIGH",
            Threshold::Medium => "MEDIUM",
            Threshold::Low => "LOW",
            Threshold::None => "NONE",
        }
    }

    /// The rank a finding needs to fail the gate; None for `NONE`.
    pub fn rank(self) -> Option<u8> {
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
pub const SEVERITIES: [(&str, u8); 7] =
    [("CRITICAL", 4), ("HIGH", 3), ("MEDIUM", 2), ("LOW", 1), ("INFORMATIONAL", 0), ("UNDEFINED", 0), ("UNTRIAGED", 0)];

/// The result of waiting for a scan.
#[derive(Debug, PartialEq, Eq)]
pub enum ScanOutcome {
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
pub struct ScanPacing {
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

pub fn wait_for_scan(
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

pub fn severity_counts(answer: &Value) -> BTreeMap<String, u64> {
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

pub fn severity_rank(severity: &str) -> u8 {
    SEVERITIES.iter().find(|(name, _)| name.eq_ignore_ascii_case(severity)).map_or(0, |(_, rank)| *rank)
}

/// The counts at or above the threshold.
pub fn blocking_findings(counts: &BTreeMap<String, u64>, threshold: Threshold) -> BTreeMap<String, u64> {
    let Some(minimum) = threshold.rank() else {
        return BTreeMap::new();
    };
    counts.iter().filter(|(severity, _)| severity_rank(severity) >= minimum).map(|(k, v)| (k.clone(), *v)).collect()
}

/// `2 CRITICAL, 1 HIGH`, highest severity first.
pub fn describe_counts(counts: &BTreeMap<String, u64>) -> String {
    let mut entries: Vec<(&String, &u64)> = counts.iter().collect();
    entries.sort_by_key(|(severity, _)| std::cmp::Reverse(severity_rank(severity)));
    entries.iter().map(|(severity, count)| format!("{count} {severity}")).collect::<Vec<_>>().join(", ")
}

impl Default for ScanGate {
    /// What the flags default to.
    fn default() -> ScanGate {
        ScanGate {
            fail_on_severity: Threshold::High,
            scan_timeout: crate::support::time::parse_duration(SCAN_TIMEOUT).unwrap_or(Duration::from_secs(300)),
            allow_unscanned: false,
            advisory_db: None,
        }
    }
}

impl ScanGate {
    /// No gate: for an image that was scanned when it was pushed (a
    /// promotion pushes nothing).
    pub fn off() -> ScanGate {
        ScanGate { fail_on_severity: Threshold::None, scan_timeout: Duration::ZERO, ..ScanGate::default() }
    }

    /// The scan gate; returns what the JSON output says about the scan.
    pub fn check(
        &self,
        aws: &mut dyn AwsApi,
        repository: &str,
        digest: &str,
        scan_on_push: bool,
        reference: &str,
        dependencies: &DependencyCheck,
    ) -> Result<Value> {
        if self.fail_on_severity == Threshold::None {
            ui::warn("scan gate disabled (--fail-on-severity NONE): findings are not checked");
            return Ok(json!({ "status": "NOT_CHECKED", "threshold": "NONE" }));
        }
        ui::step(&format!("waiting for the image scan (up to {}s)", self.scan_timeout.as_secs()));
        let pacing = ScanPacing { timeout: self.scan_timeout, ..ScanPacing::default() };
        match wait_for_scan(aws, repository, digest, scan_on_push, &pacing)? {
            ScanOutcome::Complete(counts) => {
                let blocking = blocking_findings(&counts, self.fail_on_severity);
                if !blocking.is_empty() {
                    bail!(
                        "{reference} was pushed, but its scan found {} (at or above {}, --fail-on-severity): fix them, or choose the threshold deliberately",
                        describe_counts(&blocking),
                        self.fail_on_severity.name()
                    );
                }
                let summary = if counts.is_empty() { "no findings".to_owned() } else { describe_counts(&counts) };
                ui::success(&format!("scan: nothing at or above {} ({summary})", self.fail_on_severity.name()));
                Ok(
                    json!({ "status": "COMPLETE", "severity_counts": counts, "threshold": self.fail_on_severity.name() }),
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
                    "threshold": self.fail_on_severity.name(),
                }))
            }
            ScanOutcome::Unsupported(reason) | ScanOutcome::Unscanned(reason) => {
                if !self.allow_unscanned {
                    bail!(
                        "{reference} was pushed but NOT scanned: {reason}. An unscanned image does not pass the gate; pass --allow-unscanned to accept it anyway"
                    );
                }
                ui::warn(&format!(
                    "IMAGE NOT SCANNED: {reason}. Accepted only because of --allow-unscanned; nobody has checked {reference} for vulnerabilities"
                ));
                Ok(json!({ "status": "UNSCANNED", "reason": reason, "threshold": self.fail_on_severity.name() }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
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
