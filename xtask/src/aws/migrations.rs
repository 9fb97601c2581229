//! A deploy's database migrations on ECS: deciding whether they run (the
//! ledger knows which migrations a deploy applied to which database), and
//! running them as a one-off task of the image being deployed, whose exit
//! code is the verdict; `cargo xtask migrate` on an AWS environment.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{
    aws::{
        api::AwsApi,
        infra::{Stage, Terraform},
        session::Session,
        store::DeployLock,
    },
    config::AwsEnv,
    deploy::request::Refresh,
    ledger::{self, LedgerStore, Release},
    support::{ctx::Ctx, ui},
};

/// How long the deploy lock is held at most beyond the rollout timeout; a
/// crashed deploy's lock expires after this.
/// One-off migration tasks get this long to finish.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// What the migration step of a deploy does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationPlan {
    /// Run the image's migrations; on success the release records `key`.
    Run { key: String },
    /// The database has these migrations already (or --skip-migrate); the
    /// release records `key` and the schema `version` they left.
    Skip { key: Option<String>, version: Option<String>, why: String },
}

pub const MIGRATION_STEP: &str = "run the database migrations";

/// Decides whether the deploy runs its migration task. It is skipped only
/// when the image is built from this checkout (`built_migrations`: the
/// fingerprint of its migrations) and its migrations, for this same
/// database instance, are what the ledger says a deploy applied last:
/// nothing could be pending. Any other image (`--image`, a promotion) runs
/// them, and records a key that matches nothing.
pub fn plan_migrations(
    session: &Session<'_>,
    refresh: Refresh,
    image: &str,
    built_migrations: Option<&str>,
    history: &[Release],
) -> Result<MigrationPlan> {
    if refresh == Refresh::Skip {
        return Ok(MigrationPlan::Skip { key: None, version: None, why: "--skip-migrate".to_owned() });
    }
    let Some(fingerprint) = built_migrations else {
        return Ok(MigrationPlan::Run { key: format!("unknown: the migrations of {image}") });
    };
    let Some(database_id) = session.terraform.output(Stage::Environment, "db_resource_id")? else {
        return Ok(MigrationPlan::Run {
            key: "unknown: the environment has no db_resource_id output (apply it to let deploys skip migrations)"
                .to_owned(),
        });
    };
    let key = crate::deploy::migrations::migrations_key(fingerprint, &database_id);
    Ok(decide_migrations(key, ledger::last_migrated(history), refresh == Refresh::Always))
}

fn decide_migrations(key: String, last_migrated: Option<&Release>, force: bool) -> MigrationPlan {
    match last_migrated {
        Some(release) if release.migrations.as_deref() == Some(key.as_str()) && !force => {
            let why = format!(
                "{} is what the last deploy applied to this database ({}); --force-migrate runs them anyway",
                crate::deploy::migrations::MIGRATIONS_DIR,
                &key[..12]
            );
            MigrationPlan::Skip { key: Some(key), version: release.migration_version.clone(), why }
        }
        _ => MigrationPlan::Run { key },
    }
}

/// `cargo xtask migrate` on an AWS environment: the one-off migration task
/// of `image` (default: what the service runs), under the deploy lock.
pub fn run_migrations(ctx: &Ctx, env: &AwsEnv, image: Option<&str>) -> Result<()> {
    let session = Session::open(ctx, env, Terraform::new(ctx, env)?)?;
    let name = &env.name;
    let image = match image {
        Some(image) => image.to_owned(),
        None => {
            let history = session.store().history(name, 20)?;
            ledger::live_release(&history).map(|live| live.image.clone()).with_context(|| {
                format!("{name} has no successful release yet: pass --image, or deploy first (cargo xtask deploy --env {name})")
            })?
        }
    };
    let lock = session.take_lock()?;
    lock.as_ref().map_or(Ok(()), DeployLock::ensure_held)?;
    ui::step(&format!("running the migrations of {image} on {name}"));
    migrate(&session, &image).map(|_| ())
}

/// `app migrate` from the image being deployed, as a one-off ECS task in
/// the service's network; its exit code is the verdict. Returns the schema
/// version the task reported, when its logs said.
pub fn migrate(session: &Session<'_>, image: &str) -> Result<Option<String>> {
    let (ctx, terraform) = (session.ctx, &session.terraform);
    let family = format!("{}-migrate", session.output("task_definition_family")?);
    // The migration task's own template (the master's credentials, the
    // service role to create), or, for an environment applied before it
    // existed, the service's.
    let template = match terraform.output(Stage::Environment, "migration_task_definition_arn")? {
        Some(template) => template,
        None => session.output("task_definition_arn")?,
    };
    let cluster = session.output("cluster_name")?;
    let container = session.output("container_name")?;
    let service = session.output("service_name")?;
    let shared_aws = &session.aws;
    let mut aws = shared_aws.lock().unwrap_or_else(|poison| poison.into_inner());
    // The task runs where the service runs: its capacity provider strategy
    // (EC2 capacity) or launch type, and its network (subnets, security
    // groups), as DescribeServices reports them.
    let described = aws
        .call("ecs.describe_service", json!({ "cluster": cluster, "service": service }))
        .with_context(|| format!("describing {service} to run the migration task where it runs"))?;
    let network = match described["network"].as_object() {
        Some(network) => Value::Object(network.clone()),
        None => json!({
            "subnets": serde_json::from_str::<Value>(&terraform.output_json(Stage::Environment, "private_subnet_ids")?)
                .context("reading the private_subnet_ids output")?,
            "security_groups": [session.output("app_security_group_id")?],
        }),
    };
    let registered = aws.call(
        "ecs.clone_task_definition",
        json!({ "from": template, "family": family, "image": image, "container": container }),
    )?;
    if ctx.would(format_args!("call: ecs.run_task (command [\"migrate\"], family {family}) and wait for its exit code"))
    {
        return Ok(None);
    }
    let task_definition = registered["task_definition_arn"].as_str().unwrap_or_default().to_owned();
    let started = aws.call(
        "ecs.run_task",
        json!({
            "cluster": cluster, "task_definition": task_definition, "container": container,
            "command": ["migrate"], "subnets": network["subnets"], "security_groups": network["security_groups"],
            "assign_public_ip": network["assign_public_ip"],
            "launch_type": described["launch_type"], "capacity_provider_strategy": described["capacity_provider_strategy"],
            "started_by": "xtask-migrate",
        }),
    )?;
    let task_arn = started["task_arn"].as_str().unwrap_or_default().to_owned();
    ui::info(&format!("  migration task {task_arn} started ({task_definition})"));
    // A task the deploy stops waiting for (timeout, error, Ctrl-C) is
    // stopped, not left to migrate behind a deploy that reported failure.
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _stop_task = {
        let (aws, cluster, task_arn, finished) =
            (shared_aws.clone(), cluster.clone(), task_arn.clone(), finished.clone());
        crate::support::cleanup::register(format!("stop the migration task {task_arn}"), move || {
            if finished.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            let stopped = crate::aws::store::with_aws(&aws, |aws| {
                aws.call(
                    "ecs.stop_task",
                    json!({ "cluster": cluster, "task_arn": task_arn, "reason": "xtask stopped waiting for the migrations" }),
                )
            });
            match stopped {
                Ok(_) => ui::info(&format!("stopped the migration task {task_arn}")),
                Err(err) => ui::warn(&format!(
                    "could not stop the migration task {task_arn} ({err}): stop it in the ECS console"
                )),
            }
        })
    };
    let mut logs = TaskLogs {
        log_group: session.output("log_group_name")?,
        log_stream: format!("{LOG_STREAM_PREFIX}/{container}/{}", task_arn.rsplit('/').next().unwrap_or_default()),
        next_token: None,
        broken: false,
        schema_version: None,
    };
    let deadline = Instant::now() + MIGRATION_TIMEOUT;
    let mut last_status = String::new();
    loop {
        let task = aws.call("ecs.describe_task", json!({ "cluster": cluster, "task_arn": task_arn }))?;
        logs.print_new(&mut *aws);
        let status = task["last_status"].as_str().unwrap_or_default().to_owned();
        if status != last_status {
            ui::info(&format!("  migration task: {status}"));
            last_status = status.clone();
        }
        if status == "STOPPED" {
            finished.store(true, std::sync::atomic::Ordering::SeqCst);
            // The log driver may deliver the last lines after the stop.
            std::thread::sleep(Duration::from_millis(500));
            logs.print_new(&mut *aws);
            let container_state = task["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|candidate| candidate["name"].as_str() == Some(container.as_str()))
                .cloned()
                .unwrap_or(Value::Null);
            return match container_state["exit_code"].as_i64() {
                Some(0) => {
                    ui::success("migrations applied (exit code 0)");
                    Ok(logs.schema_version)
                }
                Some(code) => bail!(
                    "the migration task exited with {code}: {}; its output is above and in CloudWatch Logs {} / {}; nothing was rolled out",
                    task["stopped_reason"].as_str().unwrap_or("no reason"),
                    logs.log_group,
                    logs.log_stream
                ),
                None => bail!(
                    "the migration task stopped without an exit code ({}); nothing was rolled out",
                    task["stopped_reason"].as_str().unwrap_or("no reason given")
                ),
            };
        }
        if Instant::now() > deadline {
            bail!(
                "the migration task {task_arn} did not finish within {}s (last status {status})",
                MIGRATION_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// The awslogs stream prefix of the task definition (ecs.tf): a task's
/// container logs to `<prefix>/<container>/<task id>`.
pub(super) const LOG_STREAM_PREFIX: &str = "app";

/// A one-off task's output in CloudWatch Logs, shown as it arrives.
struct TaskLogs {
    log_group: String,
    log_stream: String,
    next_token: Option<String>,
    /// Logs are for people: after one unexpected error they are no longer
    /// read, and the migration's exit code still decides.
    broken: bool,
    /// From `app migrate`'s last line, "database schema is at version N".
    schema_version: Option<String>,
}

impl TaskLogs {
    fn print_new(&mut self, aws: &mut dyn AwsApi) {
        if self.broken {
            return;
        }
        let answer = aws.call(
            "logs.get_log_events",
            json!({ "log_group": self.log_group, "log_stream": self.log_stream, "next_token": self.next_token }),
        );
        match answer {
            Ok(answer) => {
                for event in answer["events"].as_array().into_iter().flatten() {
                    let message = event["message"].as_str().unwrap_or_default().trim_end();
                    if let Some(version) = message.strip_prefix("database schema is at version ") {
                        self.schema_version = Some(version.trim().to_owned());
                    }
                    ui::info(&format!("  migrate | {message}"));
                }
                if let Some(token) = answer["next_token"].as_str() {
                    self.next_token = Some(token.to_owned());
                }
            }
            // The stream appears when the container starts.
            Err(err) if err.code == "ResourceNotFoundException" => {}
            Err(err) => {
                ui::warn(&format!(
                    "cannot read the migration's logs ({err}); they are in {} / {}",
                    self.log_group, self.log_stream
                ));
                self.broken = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Outcome, ReleaseKind};

    fn migrated(key: &str) -> Release {
        Release {
            environment: "dev".to_owned(),
            started_at: "2026-12-01T10:00:00.000Z".to_owned(),
            image: "repo@sha256:d1".to_owned(),
            git_sha: "0123456789abcdef".to_owned(),
            runs_as: None,
            migration_version: Some("1".to_owned()),
            who: "dev@example.com".to_owned(),
            kind: ReleaseKind::Deploy,
            outcome: Outcome::Succeeded,
            finished_at: None,
            infra_inputs: None,
            migrations: Some(key.to_owned()),
        }
    }

    #[test]
    fn migrations_are_skipped_only_when_the_database_has_exactly_them() {
        let key = "a".repeat(64);
        let same = migrated(&key);
        let why = "app/migrations is what the last deploy applied to this database (aaaaaaaaaaaa); --force-migrate runs them anyway";
        assert_eq!(
            decide_migrations(key.clone(), Some(&same), false),
            MigrationPlan::Skip { key: Some(key.clone()), version: Some("1".to_owned()), why: why.to_owned() }
        );
        assert_eq!(decide_migrations(key.clone(), Some(&same), true), MigrationPlan::Run { key: key.clone() });
        let other = migrated(&"b".repeat(64));
        assert_eq!(decide_migrations(key.clone(), Some(&other), false), MigrationPlan::Run { key: key.clone() });
        assert_eq!(decide_migrations(key.clone(), None, false), MigrationPlan::Run { key });
    }
}
