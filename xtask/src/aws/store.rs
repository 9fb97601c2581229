//! What deploys keep in AWS, in the DynamoDB tables `infra/repositories`
//! creates: the release ledger (`<app>-releases`) and the per-environment
//! deploy lock (`<app>-deploy-locks`).
//!
//! DynamoDB because the whole team (and CI) must see one ledger and one
//! lock, it is created by the same Terraform as the ECR repository, it gives
//! conditional writes (the lock) and sorted queries (newest releases first),
//! and it costs nothing at this volume.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{
    aws::{api::AwsApi, client::AwsProcess},
    ledger::{LedgerStore, Outcome, Release, ReleaseKind},
    support::{cleanup, ui},
};

/// The `xtask-aws` process shared by the deploy steps and the Ctrl-C
/// cleanup that releases the lock.
pub type SharedAws = Arc<Mutex<AwsProcess>>;

/// The ledger in DynamoDB: partition key `environment`, sort key
/// `deployed_at` (the attempt's start, RFC 3339).
pub struct DynamoLedger {
    pub aws: SharedAws,
    pub table: String,
}

impl LedgerStore for DynamoLedger {
    fn put(&mut self, release: &Release) -> Result<()> {
        let item = release_item(release);
        lock(&self.aws)
            .call("dynamodb.put_item", json!({ "table": self.table, "item": item }))
            .with_context(|| format!("recording the release in DynamoDB table {}", self.table))?;
        Ok(())
    }

    fn history(&mut self, environment: &str, limit: usize) -> Result<Vec<Release>> {
        let answer = lock(&self.aws)
            .call(
                "dynamodb.query",
                json!({ "table": self.table, "key_name": "environment", "key_value": environment, "limit": limit }),
            )
            .with_context(|| format!("reading the release ledger (DynamoDB table {})", self.table))?;
        Ok(answer["items"].as_array().into_iter().flatten().map(release_from_item).collect())
    }
}

/// A release as a DynamoDB item of the ledger table.
fn release_item(release: &Release) -> Value {
    let (state, reason) = match &release.outcome {
        Outcome::InProgress => ("in_progress", ""),
        Outcome::Succeeded => ("succeeded", ""),
        Outcome::Failed(reason) => ("failed", reason.as_str()),
        Outcome::Unknown(reason) => ("unknown", reason.as_str()),
    };
    let kind = match release.kind {
        ReleaseKind::Deploy => "deploy",
        ReleaseKind::Rollback => "rollback",
        ReleaseKind::Promotion => "promotion",
    };
    let mut item = json!({
        "environment": release.environment,
        "deployed_at": release.started_at,
        "image": release.image,
        "git_sha": release.git_sha,
        "who": release.who,
        "kind": kind,
        "outcome": state,
    });
    for (key, value) in [
        ("reason", Some(reason.to_owned()).filter(|reason| !reason.is_empty())),
        ("runs_as", release.runs_as.clone()),
        ("migration_version", release.migration_version.clone()),
        ("finished_at", release.finished_at.clone()),
        ("infra_inputs", release.infra_inputs.clone()),
        ("migrations", release.migrations.clone()),
    ] {
        if let Some(value) = value {
            item[key] = json!(value);
        }
    }
    item
}

fn release_from_item(item: &Value) -> Release {
    let text = |key: &str| item[key].as_str().unwrap_or_default().to_owned();
    let optional = |key: &str| item[key].as_str().map(str::to_owned);
    Release {
        environment: text("environment"),
        started_at: text("deployed_at"),
        image: text("image"),
        git_sha: text("git_sha"),
        runs_as: optional("runs_as"),
        migration_version: optional("migration_version"),
        infra_inputs: optional("infra_inputs"),
        migrations: optional("migrations"),
        who: text("who"),
        kind: match item["kind"].as_str() {
            Some("rollback") => ReleaseKind::Rollback,
            Some("promotion") => ReleaseKind::Promotion,
            _ => ReleaseKind::Deploy,
        },
        outcome: match item["outcome"].as_str() {
            Some("succeeded") => Outcome::Succeeded,
            Some("failed") => Outcome::Failed(text("reason")),
            Some("unknown") => Outcome::Unknown(text("reason")),
            _ => Outcome::InProgress,
        },
        finished_at: optional("finished_at"),
    }
}

/// The per-environment deploy lock, held for the whole deploy (migrations
/// and wait included) as a short lease that a thread renews while the
/// deploy runs: a deploy killed with SIGKILL blocks the environment for one
/// lease at most, and one that runs long never loses its lock silently.
/// Renewals are conditional on this deploy's token, so a lock broken with
/// `cargo xtask unlock` is noticed (`ensure_held`) before the next step
/// that changes something. Released on drop and on Ctrl-C.
pub struct DeployLock {
    environment: String,
    lost: Arc<AtomicBool>,
    stop: Option<mpsc::Sender<()>>,
    renewer: Option<std::thread::JoinHandle<()>>,
    _guard: cleanup::CleanupGuard,
}

/// How long a lock lasts without renewal (XTASK_LOCK_LEASE_SECONDS sets
/// another, for tests of an abandoned lock); it is renewed four times
/// within one lease.
fn lock_lease() -> Duration {
    let seconds = std::env::var("XTASK_LOCK_LEASE_SECONDS").ok().and_then(|value| value.parse().ok()).unwrap_or(120);
    Duration::from_secs(seconds)
}

impl DeployLock {
    pub fn acquire(aws: &SharedAws, table: &str, environment: &str, who: &str) -> Result<DeployLock> {
        let now = crate::support::time::epoch_seconds();
        let lease = lock_lease();
        let token = format!("{who}:{}:{}:{}", hostname(), std::process::id(), now);
        let item = json!({
            "environment": environment,
            "holder": who,
            "host": hostname(),
            "since": crate::support::time::now_rfc3339_millis(),
            "lock_token": token,
            "expires_at": now + lease.as_secs() as i64,
        });
        let result = lock(aws).call(
            "dynamodb.put_item",
            json!({
                "table": table,
                "item": item,
                "condition": "attribute_not_exists(environment) OR expires_at < :now",
                "values": { ":now": now },
            }),
        );
        match result {
            Ok(_) => {}
            Err(err) if err.code == "ConditionalCheckFailedException" => {
                let holder = read_lock(&mut *lock(aws), table, environment).unwrap_or(Value::Null);
                bail!(
                    "{environment} is locked by another deploy: {}. Wait for it to finish; if its holder is gone, the lock expires by itself within {}s of its last renewal, or `cargo xtask unlock --env {environment}` breaks it now",
                    describe_lock(&holder, now),
                    lease.as_secs()
                );
            }
            Err(err) => return Err(err).with_context(|| format!("taking the deploy lock in DynamoDB table {table}")),
        }
        let lost = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = mpsc::channel::<()>();
        let renewer = {
            let (table, environment, token, item, lost) =
                (table.to_owned(), environment.to_owned(), token.clone(), item.clone(), lost.clone());
            std::thread::Builder::new()
                .name("deploy-lock-renewal".to_owned())
                .spawn(move || renew_until_stopped(&table, &environment, &token, item, lease, &lost, &stopped))
                .context("starting the deploy lock's renewal")?
        };
        let aws = aws.clone();
        let table = table.to_owned();
        let released_environment = environment.to_owned();
        let guard = cleanup::register(format!("release the deploy lock of {environment}"), move || {
            let environment = released_environment;
            let released = with_aws(&aws, |aws| {
                aws.call(
                    "dynamodb.delete_item",
                    json!({
                        "table": table,
                        "key": { "environment": environment },
                        "condition": "lock_token = :token",
                        "values": { ":token": token },
                    }),
                )
            });
            match released {
                Ok(_) => {}
                Err(err) if err.code == "ConditionalCheckFailedException" => {}
                Err(err) => ui::warn(&format!(
                    "could not release the deploy lock of {environment} ({err}); it expires by itself"
                )),
            }
        });
        Ok(DeployLock {
            environment: environment.to_owned(),
            lost,
            stop: Some(stop),
            renewer: Some(renewer),
            _guard: guard,
        })
    }

    /// Fails when the lock was broken or taken over since it was acquired.
    pub fn ensure_held(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            bail!(
                "the deploy lock of {} is no longer ours (broken with `cargo xtask unlock`, or not renewed in time): stopping before changing anything more",
                self.environment
            );
        }
        Ok(())
    }
}

impl Drop for DeployLock {
    fn drop(&mut self) {
        // Stop renewing before the guard releases the lock.
        drop(self.stop.take());
        if let Some(renewer) = self.renewer.take() {
            let _ = renewer.join();
        }
    }
}

/// Extends the lease every quarter lease, on an `xtask-aws` of its own (the
/// main one may be busy for minutes in a rollout wait), until stopped.
fn renew_until_stopped(
    table: &str,
    environment: &str,
    token: &str,
    mut item: Value,
    lease: Duration,
    lost: &AtomicBool,
    stopped: &mpsc::Receiver<()>,
) {
    let mut aws = None;
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(lease / 4) {
        if aws.is_none() {
            aws = AwsProcess::spawn_sibling().ok();
        }
        let Some(aws) = aws.as_mut() else { continue };
        item["expires_at"] = json!(crate::support::time::epoch_seconds() + lease.as_secs() as i64);
        let renewed = aws.call(
            "dynamodb.put_item",
            json!({
                "table": table,
                "item": item,
                "condition": "lock_token = :token",
                "values": { ":token": token },
            }),
        );
        match renewed {
            Ok(_) => {}
            Err(err) if err.code == "ConditionalCheckFailedException" => {
                ui::warn(&format!(
                    "the deploy lock of {environment} was broken or taken over; this deploy stops before its next step"
                ));
                lost.store(true, Ordering::SeqCst);
                return;
            }
            // A failed renewal is retried; the lease has room for three more.
            Err(err) => ui::warn(&format!("renewing the deploy lock of {environment}: {err}")),
        }
    }
}

/// The lock item of an environment, if any.
pub fn read_lock(aws: &mut dyn AwsApi, table: &str, environment: &str) -> Result<Value> {
    let answer = aws
        .call("dynamodb.get_item", json!({ "table": table, "key": { "environment": environment } }))
        .with_context(|| format!("reading the deploy lock of {environment} in {table}"))?;
    Ok(answer["item"].clone())
}

/// `someone@example.com on host since 2026-... (12m 3s ago, lease ends in 95s)`
pub fn describe_lock(item: &Value, now: i64) -> String {
    let since = item["since"].as_str().unwrap_or("?");
    let age = crate::support::time::parse_rfc3339(since).map(|started| now - started);
    format!(
        "{} on {} since {since}{}, lease ends in {}s",
        item["holder"].as_str().unwrap_or("someone"),
        item["host"].as_str().unwrap_or("an unknown host"),
        age.map_or(String::new(), |age| format!(
            " ({} ago)",
            crate::support::time::format_duration(Duration::from_secs(age.max(0) as u64))
        )),
        item["expires_at"].as_i64().map_or(0, |at| (at - now).max(0)),
    )
}

/// Breaks an environment's lock (whoever holds it).
pub fn break_lock(aws: &mut dyn AwsApi, table: &str, environment: &str) -> Result<()> {
    aws.call("dynamodb.delete_item", json!({ "table": table, "key": { "environment": environment } }))
        .with_context(|| format!("deleting the deploy lock of {environment} in {table}"))?;
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|name| name.trim().to_owned()).unwrap_or_default()
}

/// Records a release as interrupted if Ctrl-C (or SIGTERM) stops the deploy
/// while it is in progress; does nothing otherwise. Before the rollout
/// started that is a failure; after it (`rolling_out` holds the task
/// definition ECS was given) the outcome is ECS's to decide, so it is
/// `unknown` until a later `status` or deploy reconciles it. Without this
/// the ledger would show the attempt in progress forever.
pub fn record_interruption(
    aws: &SharedAws,
    table: &str,
    release: &Release,
    rolling_out: Arc<Mutex<Option<String>>>,
) -> cleanup::CleanupGuard {
    let (aws, table, mut release) = (aws.clone(), table.to_owned(), release.clone());
    cleanup::register(format!("record the interrupted release in {table}"), move || {
        if !cleanup::interrupted() {
            return;
        }
        let task_definition = rolling_out.lock().unwrap_or_else(|poison| poison.into_inner()).clone();
        release.outcome = match &task_definition {
            Some(task_definition) => Outcome::Unknown(format!(
                "interrupted while ECS rolled out {task_definition}; the next status or deploy reads what ECS did"
            )),
            None => Outcome::Failed("interrupted (Ctrl-C or SIGTERM)".to_owned()),
        };
        release.runs_as = task_definition;
        release.finished_at = Some(crate::support::time::now_rfc3339_millis());
        let item = release_item(&release);
        if let Err(err) = with_aws(&aws, |aws| aws.call("dynamodb.put_item", json!({ "table": table, "item": item }))) {
            ui::warn(&format!("could not record the interrupted release ({err})"));
        }
    })
}

/// Runs `call` on the shared `xtask-aws`, or, when the main thread keeps it
/// busy (an interrupt arrived during a call or a rollout wait), on a second
/// one started for the purpose.
pub fn with_aws<T>(
    aws: &SharedAws,
    call: impl FnOnce(&mut dyn AwsApi) -> Result<T, crate::aws::api::ApiError>,
) -> Result<T, crate::aws::api::ApiError> {
    for _ in 0..3 {
        match aws.try_lock() {
            Ok(mut shared) => return call(&mut *shared),
            Err(std::sync::TryLockError::Poisoned(poison)) => return call(&mut *poison.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    let mut sibling = AwsProcess::spawn_sibling().map_err(|err| crate::aws::api::ApiError {
        code: "XtaskAwsFailed".to_owned(),
        message: format!("starting a second xtask-aws: {err:#}"),
        throttling: false,
    })?;
    call(&mut sibling)
}

fn lock(aws: &SharedAws) -> std::sync::MutexGuard<'_, AwsProcess> {
    aws.lock().unwrap_or_else(|poison| poison.into_inner())
}
