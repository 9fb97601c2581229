//! The release ledger: every deploy attempt of every environment, with its
//! outcome, so `status` can show what runs and `rollback` can return to the
//! last *successful* release instead of revision N-1.
//!
//! The decisions (what is live, what a rollback returns to) are plain
//! functions over the history, shared by every environment kind; where the
//! records live is a `LedgerStore`: a JSON-lines file for the local Docker
//! environment, DynamoDB (the table `infra/repositories` creates) for AWS.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// One deploy attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub environment: String,
    /// When the attempt started, RFC 3339 UTC with milliseconds; unique per
    /// environment and sortable as text.
    pub started_at: String,
    /// The image, pinned: `repo@sha256:...` (or a local image ID).
    pub image: String,
    pub git_sha: String,
    /// The ECS task definition ARN, or the container name locally.
    #[serde(default)]
    pub runs_as: Option<String>,
    /// The schema version after migrations, when known.
    #[serde(default)]
    pub migration_version: Option<String>,
    pub who: String,
    pub kind: ReleaseKind,
    pub outcome: Outcome,
    #[serde(default)]
    pub finished_at: Option<String>,
    /// Fingerprint of the infrastructure's inputs this release was deployed
    /// with, when the deploy checked them (see `infra::input_fingerprint`).
    #[serde(default)]
    pub infra_inputs: Option<String>,
    /// The migrations applied to the database when this release rolled out,
    /// as a key (see `migrate::migrations_key`): set once its migration step
    /// passed, whatever came after (the schema changed then), or when the
    /// step was skipped because they were applied already. None when it ran
    /// none.
    #[serde(default)]
    pub migrations: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseKind {
    Deploy,
    Rollback,
    Promotion,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "reason")]
pub enum Outcome {
    InProgress,
    Succeeded,
    Failed(String),
    /// The deploy stopped watching (its wait timed out, or it was
    /// interrupted) after ECS had started the rollout: ECS may still complete
    /// it or roll it back. `status`, `deploy` and `rollback` settle it from
    /// what ECS reports (`reconcile`).
    Unknown(String),
}

/// Where releases are kept.
pub trait LedgerStore {
    /// Inserts or replaces the record with the same environment and
    /// `started_at`.
    fn put(&mut self, release: &Release) -> Result<()>;
    /// The environment's releases, newest first.
    fn history(&mut self, environment: &str, limit: usize) -> Result<Vec<Release>>;
}

/// The release serving now: the newest that succeeded.
pub fn live_release(history: &[Release]) -> Option<&Release> {
    history.iter().find(|release| release.outcome == Outcome::Succeeded)
}

/// What `rollback` returns to: the newest successful release older than the
/// live one that ran a different image. Failed attempts in between are
/// skipped: rolling back to N-1 when N-1 never worked is the bug this
/// ledger exists to prevent.
pub fn rollback_target(history: &[Release]) -> Option<&Release> {
    let live = live_release(history)?;
    history
        .iter()
        .skip_while(|release| !std::ptr::eq(*release, live))
        .skip(1)
        .find(|release| release.outcome == Outcome::Succeeded && release.image != live.image)
}

/// The infrastructure inputs the environment was last deployed with: those
/// of the newest successful release that checked them. A deploy whose
/// inputs match skips the Terraform plans.
pub fn last_infra_inputs(history: &[Release]) -> Option<&str> {
    history
        .iter()
        .filter(|release| release.outcome == Outcome::Succeeded)
        .find_map(|release| release.infra_inputs.as_deref())
}

/// The release that last applied migrations to the environment's database:
/// the newest that recorded a migrations key (its migration step passed). A
/// deploy whose image carries exactly these migrations for this same
/// database skips its migration task (nothing would be pending).
pub fn last_migrated(history: &[Release]) -> Option<&Release> {
    history.iter().find(|release| release.migrations.is_some())
}

/// Whether `image` ever succeeded in the environment (promotion gate).
pub fn succeeded_with(history: &[Release], image_digest: &str) -> bool {
    history.iter().any(|release| release.outcome == Outcome::Succeeded && release.image.ends_with(image_digest))
}

/// Who is deploying: git's user.email, else $USER@hostname.
pub fn who() -> String {
    let from_git = std::process::Command::new("git")
        .args(["config", "user.email"])
        .output()
        .ok()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .filter(|email| !email.is_empty());
    from_git.unwrap_or_else(|| {
        let user = std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned());
        let host = fs::read_to_string("/etc/hostname").map(|host| host.trim().to_owned()).unwrap_or_default();
        if host.is_empty() { user } else { format!("{user}@{host}") }
    })
}

/// A JSON-lines file, one record per line, rewritten atomically on every
/// change. For the local environment, which has no shared store.
pub struct FileLedger {
    path: PathBuf,
}

impl FileLedger {
    pub fn new(path: impl Into<PathBuf>) -> FileLedger {
        FileLedger { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_all(&self) -> Result<Vec<Release>> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(err).with_context(|| format!("reading {}", self.path.display())),
        };
        text.lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(index, line)| {
                serde_json::from_str(line)
                    .with_context(|| format!("{}:{}: not a release record", self.path.display(), index + 1))
            })
            .collect()
    }

    /// Takes one attempt out again (a deploy that found nothing to change).
    pub fn remove(&mut self, environment: &str, started_at: &str) -> Result<()> {
        let mut all = self.read_all()?;
        all.retain(|existing| !(existing.environment == environment && existing.started_at == started_at));
        self.write_all(&all)
    }

    fn write_all(&self, all: &[Release]) -> Result<()> {
        let mut text = Vec::new();
        for record in all {
            serde_json::to_writer(&mut text, record).context("encoding a release record")?;
            text.write_all(b"\n").context("encoding a release record")?;
        }
        if let Some(parent) = self.path.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        crate::support::fs::write_atomic(&self.path, &text, 0o644)
    }
}

impl LedgerStore for FileLedger {
    fn put(&mut self, release: &Release) -> Result<()> {
        let mut all = self.read_all()?;
        all.retain(|existing| {
            !(existing.environment == release.environment && existing.started_at == release.started_at)
        });
        all.push(release.clone());
        all.sort_by(|a, b| a.started_at.cmp(&b.started_at));
        self.write_all(&all)
    }

    fn history(&mut self, environment: &str, limit: usize) -> Result<Vec<Release>> {
        let mut releases: Vec<Release> =
            self.read_all()?.into_iter().filter(|release| release.environment == environment).collect();
        releases.sort_by(|a, b| b.started_at.cmp(&a.started_at));
        releases.truncate(limit);
        Ok(releases)
    }
}

/// The lines `status` prints for a history.
pub fn format_history(history: &[Release]) -> Vec<String> {
    let live = live_release(history).map(|release| release.started_at.clone());
    history
        .iter()
        .map(|release| {
            let marker = if Some(&release.started_at) == live.as_ref() { "live" } else { "    " };
            let outcome = match &release.outcome {
                Outcome::Succeeded => "succeeded".to_owned(),
                Outcome::InProgress => "in progress".to_owned(),
                Outcome::Failed(reason) => format!("FAILED: {reason}"),
                Outcome::Unknown(reason) => format!("UNKNOWN: {reason}"),
            };
            let kind = match release.kind {
                ReleaseKind::Deploy => "deploy",
                ReleaseKind::Rollback => "rollback",
                ReleaseKind::Promotion => "promotion",
            };
            let sha = &release.git_sha[..release.git_sha.len().min(12)];
            format!(
                "{marker}  {}  {kind:<9}  {sha:<12}  {}  {}  {outcome}",
                release.started_at, release.image, release.who
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(started_at: &str, image: &str, outcome: Outcome) -> Release {
        Release {
            environment: "dev".to_owned(),
            started_at: started_at.to_owned(),
            image: image.to_owned(),
            git_sha: "0123456789abcdef".to_owned(),
            runs_as: None,
            migration_version: None,
            who: "dev@example.com".to_owned(),
            kind: ReleaseKind::Deploy,
            outcome,
            finished_at: None,
            infra_inputs: None,
            migrations: None,
        }
    }

    #[test]
    fn rollback_skips_failed_attempts_and_the_live_image() {
        // Newest first: a failed deploy of D4, live D3, a failed D2, D3
        // again earlier (same image as live), then D1.
        let history = vec![
            release("2026-11-23T10:05:00.000Z", "repo@sha256:d4", Outcome::Failed("circuit breaker".to_owned())),
            release("2026-11-23T10:04:00.000Z", "repo@sha256:d3", Outcome::Succeeded),
            release("2026-11-23T10:03:00.000Z", "repo@sha256:d2", Outcome::Failed("smoke check".to_owned())),
            release("2026-11-23T10:02:00.000Z", "repo@sha256:d3", Outcome::Succeeded),
            release("2026-11-23T10:01:00.000Z", "repo@sha256:d1", Outcome::Succeeded),
        ];
        assert_eq!(live_release(&history).unwrap().image, "repo@sha256:d3");
        assert_eq!(rollback_target(&history).unwrap().image, "repo@sha256:d1");
        assert!(succeeded_with(&history, "sha256:d1"));
        assert!(!succeeded_with(&history, "sha256:d2"));
    }

    #[test]
    fn applied_migrations_come_from_the_newest_release_whose_migrations_passed() {
        let with_migrations = |started_at: &str, outcome: Outcome, migrations: Option<&str>| Release {
            migrations: migrations.map(str::to_owned),
            ..release(started_at, "repo@sha256:d1", outcome)
        };
        let history = vec![
            // A rollback runs no migrations: the schema stays as it was.
            Release {
                kind: ReleaseKind::Rollback,
                ..with_migrations("2026-11-23T10:04:00.000Z", Outcome::Succeeded, None)
            },
            // The rollout failed after the migrations passed: they are applied.
            with_migrations("2026-11-23T10:03:00.000Z", Outcome::Failed("circuit breaker".to_owned()), Some("new")),
            with_migrations("2026-11-23T10:02:00.000Z", Outcome::Succeeded, Some("old")),
        ];
        assert_eq!(last_migrated(&history).and_then(|release| release.migrations.as_deref()), Some("new"));
        assert_eq!(last_migrated(&history[..1]), None);
    }

    #[test]
    fn infra_inputs_come_from_the_newest_success_that_checked_them() {
        let with_inputs = |started_at: &str, outcome: Outcome, inputs: Option<&str>| Release {
            infra_inputs: inputs.map(str::to_owned),
            ..release(started_at, "repo@sha256:d1", outcome)
        };
        let history = vec![
            // A failed deploy with new inputs: they were never proven.
            with_inputs("2026-11-23T10:04:00.000Z", Outcome::Failed("plan".to_owned()), Some("new")),
            // A rollback does not check the infrastructure.
            with_inputs("2026-11-23T10:03:00.000Z", Outcome::Succeeded, None),
            with_inputs("2026-11-23T10:02:00.000Z", Outcome::Succeeded, Some("old")),
            with_inputs("2026-11-23T10:01:00.000Z", Outcome::Succeeded, Some("older")),
        ];
        assert_eq!(last_infra_inputs(&history), Some("old"));
        assert_eq!(last_infra_inputs(&history[..2]), None);
    }

    #[test]
    fn no_rollback_target_without_an_earlier_success() {
        let history = vec![
            release("2026-11-23T10:02:00.000Z", "repo@sha256:d2", Outcome::Succeeded),
            release("2026-11-23T10:01:00.000Z", "repo@sha256:d1", Outcome::Failed("x".to_owned())),
        ];
        assert!(rollback_target(&history).is_none());
        assert!(rollback_target(&[]).is_none());
    }

    #[test]
    fn file_ledger_updates_in_place_and_lists_newest_first() {
        let dir = std::env::temp_dir().join(format!("xtask-ledger-{}", std::process::id()));
        let mut ledger = FileLedger::new(dir.join("releases.jsonl"));
        let mut first = release("2026-11-23T10:01:00.000Z", "img@sha256:a", Outcome::InProgress);
        ledger.put(&first).unwrap();
        ledger.put(&release("2026-11-23T10:02:00.000Z", "img@sha256:b", Outcome::Failed("boom".to_owned()))).unwrap();
        first.outcome = Outcome::Succeeded;
        ledger.put(&first).unwrap();
        let history = ledger.history("dev", 10).unwrap();
        assert_eq!(history.len(), 2);
        assert_eq!(history[0].image, "img@sha256:b");
        assert_eq!(history[1].outcome, Outcome::Succeeded);
        assert!(ledger.history("prod", 10).unwrap().is_empty());
        let lines = format_history(&history);
        assert!(lines[1].starts_with("live") && lines[0].contains("FAILED: boom"), "{lines:?}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
