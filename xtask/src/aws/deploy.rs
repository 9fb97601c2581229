//! Deploying to ECS: the steps of `cargo xtask deploy --env E` for AWS
//! environments, and `status` / `rollback` there.
//!
//! Terraform owns the infrastructure and the task definition's template
//! revision; a rollout registers a revision of the same family pinned to the
//! image digest and points the service at it (two ECS calls, see
//! `start_rollout`). Terraform ignores which revision the service runs, so
//! `cargo xtask infra plan` afterwards reports no changes. The Terraform
//! plans run only when the infrastructure's inputs changed since the last
//! successful release (`infra::Terraform::input_fingerprint`). The rollout
//! is watched by `rollout::wait_for_rollout`, which follows this deployment
//! and cannot be fooled by a rollback.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{
    aws::{
        api::AwsApi,
        client::AwsProcess,
        infra::{self, Stage, Terraform},
        push::Push,
        reconcile,
        rollout::{self, RealClock, RolloutTarget, WaitOptions},
        store::{DeployLock, DynamoLedger, SharedAws, record_interruption},
    },
    config::{Config, Environment},
    deploy::{Deploy, Rollback, Status},
    http::{self, BaseUrl},
    image::{Offline, Source, build::BuildImage},
    ledger::{self, LedgerStore, Outcome, Release, ReleaseKind},
    support::{
        ctx::Ctx,
        prompt::{confirm, type_name_back},
        ui::{self, SummaryRow},
    },
};

/// How long the deploy lock is held at most beyond the rollout timeout; a
/// crashed deploy's lock expires after this.
/// One-off migration tasks get this long to finish.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Where the image of a release comes from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// Built (or named with --image) from this checkout.
    Checkout,
    /// An image already released elsewhere (promotion): no build, no push,
    /// its commit recorded as it was.
    Promoted { git_sha: String },
}

pub fn deploy(ctx: &Ctx, args: &Deploy) -> Result<()> {
    deploy_release(ctx, args, Origin::Checkout).map(|_| ())
}

/// Deploys and returns the image it deployed (pinned by digest).
pub fn deploy_release(ctx: &Ctx, args: &Deploy, origin: Origin) -> Result<String> {
    let config = Config::load(&ctx.root)?;
    let name = ctx.global.environment.clone();
    let environment = infra::aws_environment(&config, &name)?;
    // First: it refuses the demo secrets outside a sandbox, before anything
    // else is checked or asked.
    let terraform = Terraform::new(ctx, &config, environment)?;
    let mut steps = Steps { rows: Vec::new(), json: ctx.global.json };

    let git_sha = steps.run("check the working tree", || match &origin {
        Origin::Promoted { git_sha } => Ok(git_sha.clone()),
        Origin::Checkout => {
            let source = Source::read(&ctx.sh)?;
            if source.dirty && !args.allow_dirty {
                bail!(
                    "the working tree has uncommitted changes: commit them (an image deployed to {name} must match a commit), or pass --allow-dirty"
                );
            }
            Ok(source.git_sha)
        }
    })?;
    confirm_protected(ctx, &name, environment, args.confirm_env.as_deref())?;

    let aws: SharedAws = Arc::new(Mutex::new(AwsProcess::start(ctx)?));
    let tables = steps.run("find the ledger and the lock", || ledger_tables(&terraform, &name))?;
    let who = ledger::who();
    let lock = if ctx.dry_run() {
        println!("would call: dynamodb.put_item (the deploy lock of {name} in {})", tables.locks);
        None
    } else {
        Some(steps.run("take the deploy lock", || DeployLock::acquire(&aws, &tables.locks, &name, &who))?)
    };

    // The migrations the image is built with, read before the build and
    // checked after it: a migration saved meanwhile may or may not be in the
    // image, and then what it carries is not known.
    let built_migrations = match (&origin, &args.image) {
        (Origin::Checkout, None) => Some(crate::deploy::migrate::migrations_fingerprint(&ctx.root)?),
        _ => None,
    };
    let image = steps.run("build and push the image", || {
        let local_image = match &args.image {
            Some(image) if image.contains("@sha256:") => return Ok(image.clone()),
            Some(image) => image.clone(),
            None => BuildImage {
                offline: Offline { enabled: args.offline },
                smoke: false,
                no_cache: false,
                name: None,
                incremental: !args.clean_build,
            }
            .build(ctx)?,
        };
        let push = Push { image: Some(local_image), gate: args.gate.clone() };
        Ok(match push.execute(ctx)? {
            Some(pushed) => {
                ui::info(&format!("pushed {}", pushed.digest));
                pushed.image_by_digest
            }
            None => "<pushed image>@sha256:<digest>".to_owned(),
        })
    })?;

    let built_migrations = match built_migrations {
        Some(before) if crate::deploy::migrate::migrations_fingerprint(&ctx.root)? == before => Some(before),
        Some(_) => {
            ui::warn(&format!(
                "{} changed during the build: the migrations will run",
                crate::deploy::migrate::MIGRATIONS_DIR
            ));
            None
        }
        None => None,
    };

    let mut store = DynamoLedger { aws: aws.clone(), table: tables.releases.clone() };
    if !ctx.dry_run() {
        // We hold the lock: no other deploy is running.
        reconcile_ledger(&terraform, &aws, &mut store, &name, false)?;
    }
    let history = if ctx.dry_run() { Vec::new() } else { store.history(&name, 20)? };
    let previous = ledger::live_release(&history).cloned();

    let mut infra_unchanged = false;
    let infra_inputs = if args.skip_infra {
        steps.skip("apply the infrastructure if its inputs changed", "--skip-infra");
        None
    } else {
        let fingerprint = terraform.input_fingerprint(&config)?;
        let unchanged = ledger::last_infra_inputs(&history) == Some(fingerprint.as_str());
        infra_unchanged = unchanged && !args.force_infra;
        if infra_unchanged {
            steps.skip(
                "apply the infrastructure if its inputs changed",
                &format!(
                    "inputs unchanged since the last successful release ({}); --force-infra plans anyway",
                    &fingerprint[..12]
                ),
            );
        } else {
            steps.run("apply the infrastructure if its inputs changed", || {
                // Planned with the image Terraform knows (the template's):
                // only a change of the infrastructure itself shows.
                for stage in [Stage::Repositories, Stage::Environment] {
                    terraform.apply(stage, None)?;
                }
                Ok(())
            })?;
        }
        Some(fingerprint)
    };

    // Nothing to do when ECS runs this digest already, from the revision
    // the live release registered (so from the same template: its inputs
    // are unchanged), in one completed deployment: a new deployment would
    // replace every task for nothing.
    if !args.force
        && !args.force_migrate
        && infra_unchanged
        && let Some(live) = &previous
        && live.image == image
        && let Some(task_definition) = &live.runs_as
        && service_runs_only(&terraform, &aws, task_definition)?
    {
        steps.skip(
            "roll out",
            &format!("{name} already runs {image} ({task_definition}) and its infrastructure inputs are unchanged; --force rolls out anyway"),
        );
        ui::print_summary(&format!("deploy to {name}"), &steps.rows);
        ui::success(&format!("{name} runs {image} ({task_definition}): nothing changed, nothing recorded"));
        if ctx.global.json {
            println!(
                "{}",
                json!({ "event": "deployed", "environment": name, "image": image, "task_definition": task_definition, "git_sha": live.git_sha, "unchanged": true })
            );
        } else {
            println!("{image}");
        }
        return Ok(image);
    }

    let migrations = plan_migrations(&terraform, args, &image, built_migrations.as_deref(), &history)?;

    let mut release = Release {
        environment: name.clone(),
        started_at: crate::support::time::now_rfc3339_millis(),
        image: image.clone(),
        git_sha: git_sha.clone(),
        runs_as: None,
        migration_version: None,
        who,
        kind: match origin {
            Origin::Checkout => ReleaseKind::Deploy,
            Origin::Promoted { .. } => ReleaseKind::Promotion,
        },
        outcome: Outcome::InProgress,
        finished_at: None,
        infra_inputs,
        migrations: None,
    };
    let rolling_out = Arc::new(Mutex::new(None));
    let _interrupted = if ctx.dry_run() {
        println!("would call: dynamodb.put_item (release {} of {image}, in progress)", release.started_at);
        None
    } else {
        store.put(&release)?;
        Some(record_interruption(&aws, &tables.releases, &release, rolling_out.clone()))
    };

    let result = {
        let mut started = |release: &Release| rollout_started(ctx, &mut store, &rolling_out, release);
        roll_out(
            ctx,
            &mut steps,
            &terraform,
            &aws,
            environment,
            args,
            &mut release,
            migrations,
            lock.as_ref(),
            &mut started,
        )
    };
    if let Ok(task_definition) = &result {
        release.runs_as = Some(task_definition.clone());
    }
    release.outcome = attempt_outcome(&result, &release);
    release.finished_at = Some(crate::support::time::now_rfc3339_millis());
    if !ctx.dry_run() {
        store.put(&release)?;
    }
    if let (Err(err), Some(previous)) = (&result, &previous)
        && is_smoke_failure(err)
    {
        ui::warn(&format!("the smoke check failed: rolling back to {}", previous.image));
        let rollback_args = Rollback { timeout: args.timeout };
        let _ = roll_back_to(ctx, &terraform, &aws, &mut store, &name, previous, &rollback_args);
    }
    ui::print_summary(&format!("deploy to {name}"), &steps.rows);
    let task_definition = result?;
    ui::success(&format!("{name} runs {image} ({task_definition})"));
    if ctx.global.json {
        println!(
            "{}",
            json!({ "event": "deployed", "environment": name, "image": image, "task_definition": task_definition, "git_sha": git_sha })
        );
    } else {
        println!("{image}");
    }
    Ok(image)
}

/// What the migration step of a deploy does.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MigrationPlan {
    /// Run the image's migrations; on success the release records `key`.
    Run { key: String },
    /// The database has these migrations already (or --skip-migrate); the
    /// release records `key` and the schema `version` they left.
    Skip { key: Option<String>, version: Option<String>, why: String },
}

const MIGRATION_STEP: &str = "run the database migrations";

/// Decides whether the deploy runs its migration task. It is skipped only
/// when the image is built from this checkout (`built_migrations`: the
/// fingerprint of its migrations) and its migrations, for this same
/// database instance, are what the ledger says a deploy applied last:
/// nothing could be pending. Any other image (`--image`, a promotion) runs
/// them, and records a key that matches nothing.
fn plan_migrations(
    terraform: &Terraform<'_>,
    args: &Deploy,
    image: &str,
    built_migrations: Option<&str>,
    history: &[Release],
) -> Result<MigrationPlan> {
    if args.skip_migrate {
        return Ok(MigrationPlan::Skip { key: None, version: None, why: "--skip-migrate".to_owned() });
    }
    let Some(fingerprint) = built_migrations else {
        return Ok(MigrationPlan::Run { key: format!("unknown: the migrations of {image}") });
    };
    let Some(database_id) = terraform.output(Stage::Environment, "db_resource_id")? else {
        return Ok(MigrationPlan::Run {
            key: "unknown: the environment has no db_resource_id output (apply it to let deploys skip migrations)"
                .to_owned(),
        });
    };
    let key = crate::deploy::migrate::migrations_key(fingerprint, &database_id);
    Ok(decide_migrations(key, ledger::last_migrated(history), args.force_migrate))
}

fn decide_migrations(key: String, last_migrated: Option<&Release>, force: bool) -> MigrationPlan {
    match last_migrated {
        Some(release) if release.migrations.as_deref() == Some(key.as_str()) && !force => {
            let why = format!(
                "{} is what the last deploy applied to this database ({}); --force-migrate runs them anyway",
                crate::deploy::migrate::MIGRATIONS_DIR,
                &key[..12]
            );
            MigrationPlan::Skip { key: Some(key), version: release.migration_version.clone(), why }
        }
        _ => MigrationPlan::Run { key },
    }
}

/// Migrations, the rollout itself, the wait and the smoke check; returns
/// the task definition the service runs.
#[allow(clippy::too_many_arguments)]
fn roll_out(
    ctx: &Ctx,
    steps: &mut Steps,
    terraform: &Terraform<'_>,
    aws: &SharedAws,
    environment: &Environment,
    args: &Deploy,
    release: &mut Release,
    migrations: MigrationPlan,
    lock: Option<&DeployLock>,
    started: &mut dyn FnMut(&Release) -> Result<()>,
) -> Result<String> {
    let (image, git_sha) = (release.image.clone(), release.git_sha.clone());
    // The lock is checked again before each step that changes something:
    // a lock someone broke means another deploy may be running.
    let ensure_held = || lock.map_or(Ok(()), DeployLock::ensure_held);
    // Asked before the migrations: answering no must leave the database as
    // it was, not migrated for an image that never rolls out.
    if !confirm(ctx.global.yes, &format!("roll out {image} to {}?", ctx.global.environment))? {
        bail!("rollout cancelled: nothing was migrated or rolled out");
    }
    match migrations {
        MigrationPlan::Skip { key, version, why } => {
            steps.skip(MIGRATION_STEP, &why);
            release.migrations = key;
            release.migration_version = version;
        }
        MigrationPlan::Run { key } => {
            ensure_held()?;
            release.migration_version = steps.run(MIGRATION_STEP, || migrate(ctx, terraform, aws, &image))?;
            release.migrations = Some(key);
        }
    }
    ensure_held()?;
    let task_definition = steps.run("roll out", || start_rollout(terraform, aws, &image))?;
    release.runs_as = Some(task_definition.clone());
    started(release)?;
    if ctx.dry_run() {
        println!("would wait for the deployment of the new task definition, then GET <service_url>/version");
        return Ok(task_definition);
    }
    steps.run("wait for the rollout", || wait(terraform, aws, &task_definition, args.timeout))?;
    if !args.skip_smoke && environment.smoke_check {
        steps.run("smoke check GET /version", || smoke_check(terraform, &git_sha, args.smoke_timeout))?;
    }
    Ok(task_definition)
}

/// Whether the environment's service runs `task_definition` and nothing
/// else: one deployment, PRIMARY, of that revision, completed.
fn service_runs_only(terraform: &Terraform<'_>, aws: &SharedAws, task_definition: &str) -> Result<bool> {
    let cluster = required_output(terraform, "cluster_name")?;
    let service = required_output(terraform, "service_name")?;
    let mut aws = aws.lock().unwrap_or_else(|poison| poison.into_inner());
    let described = aws
        .call("ecs.describe_service", json!({ "cluster": cluster, "service": service }))
        .with_context(|| format!("describing the service {service} to compare what it runs"))?;
    let deployments = described["deployments"].as_array().cloned().unwrap_or_default();
    Ok(match deployments.as_slice() {
        [only] => {
            let completed = match only["rollout_state"].as_str() {
                Some(state) => state == "COMPLETED",
                // Services without rollout states: all tasks running.
                None => only["running"] == only["desired"],
            };
            only["status"] == "PRIMARY" && only["task_definition"] == task_definition && completed
        }
        _ => false,
    })
}

/// Registers a revision of the service's task definition family that runs
/// `image` (everything else as Terraform's revision says) and points the
/// service at it; returns the new revision's ARN.
///
/// Why not `terraform apply -var image=...`: a whole-environment refresh
/// and apply for what is one API call. Terraform owns the template revision
/// (its `task_definition_arn` output) and ignores which revision the service
/// runs, so `infra plan` after a deploy shows no drift; a change of the
/// template reaches the service with the next deploy, which copies it.
fn start_rollout(terraform: &Terraform<'_>, aws: &SharedAws, image: &str) -> Result<String> {
    let template = required_output(terraform, "task_definition_arn")?;
    let family = required_output(terraform, "task_definition_family")?;
    let cluster = required_output(terraform, "cluster_name")?;
    let service = required_output(terraform, "service_name")?;
    let container = required_output(terraform, "container_name")?;
    let mut aws = aws.lock().unwrap_or_else(|poison| poison.into_inner());
    let registered = aws.call(
        "ecs.clone_task_definition",
        json!({ "from": template, "family": family, "image": image, "container": container }),
    )?;
    let task_definition =
        registered["task_definition_arn"].as_str().unwrap_or("<new revision of the task definition>").to_owned();
    aws.call(
        "ecs.update_service",
        json!({ "cluster": cluster, "service": service, "task_definition": task_definition }),
    )?;
    ui::info(&format!("  {service} now runs {task_definition}"));
    Ok(task_definition)
}

/// Waits for the deployment of `task_definition` on the environment's
/// service, printing progress.
fn wait(terraform: &Terraform<'_>, aws: &SharedAws, task_definition: &str, timeout: Duration) -> Result<()> {
    let target = RolloutTarget {
        cluster: required_output(terraform, "cluster_name")?,
        service: required_output(terraform, "service_name")?,
        task_definition_arn: task_definition.to_owned(),
    };
    ui::info(&format!(
        "waiting for {} on {}/{} (up to {}s)",
        task_definition,
        target.cluster,
        target.service,
        timeout.as_secs()
    ));
    let options = WaitOptions { timeout, ..WaitOptions::default() };
    let mut aws = aws.lock().unwrap_or_else(|poison| poison.into_inner());
    // The progress lines are printed above the spinner, the latest also beside it.
    let progress = ui::progress("rollout");
    let completed = rollout::wait_for_rollout(&mut *aws, &mut RealClock::new(), &target, options, &mut |line| {
        ui::info(&format!("  {line}"));
        progress.message(line);
    });
    progress.finish(completed.is_ok());
    let completed = completed?;
    ui::success(&format!("deployment {} completed: {} running", completed.deployment_id, completed.running));
    Ok(())
}

/// `cargo xtask unlock`: shows who holds the environment's deploy lock, since
/// when and on which host, and breaks it after a confirmation (or --yes).
pub fn unlock(ctx: &Ctx) -> Result<()> {
    let config = Config::load(&ctx.root)?;
    let name = ctx.global.environment.clone();
    let environment = infra::aws_environment(&config, &name)?;
    let terraform = Terraform::new(ctx, &config, environment)?;
    let tables = ledger_tables(&terraform, &name)?;
    let mut aws = AwsProcess::start(ctx)?;
    if ctx.dry_run() {
        println!("would call: dynamodb.get_item (the deploy lock of {name} in {}), then delete_item", tables.locks);
        return Ok(());
    }
    let item = crate::aws::store::read_lock(&mut aws, &tables.locks, &name)?;
    if item.is_null() {
        ui::success(&format!("{name} is not locked: nothing to unlock"));
        return Ok(());
    }
    let now = crate::support::time::epoch_seconds();
    ui::info(&format!("the deploy lock of {name} is held by {}", crate::aws::store::describe_lock(&item, now)));
    if !confirm(ctx.global.yes, "break it (the holder's deploy then stops before its next step)?")? {
        bail!("the lock of {name} is kept");
    }
    crate::aws::store::break_lock(&mut aws, &tables.locks, &name)?;
    ui::success(&format!("the deploy lock of {name} is broken"));
    Ok(())
}

/// `cargo xtask migrate` on an AWS environment: the one-off migration task
/// of `image` (default: what the service runs), under the deploy lock.
pub fn run_migrations(ctx: &Ctx, image: Option<&str>) -> Result<()> {
    let config = Config::load(&ctx.root)?;
    let name = ctx.global.environment.clone();
    let environment = infra::aws_environment(&config, &name)?;
    let terraform = Terraform::new(ctx, &config, environment)?;
    let aws: SharedAws = Arc::new(Mutex::new(AwsProcess::start(ctx)?));
    let tables = ledger_tables(&terraform, &name)?;
    let image = match image {
        Some(image) => image.to_owned(),
        None => {
            let mut store = DynamoLedger { aws: aws.clone(), table: tables.releases.clone() };
            let history = store.history(&name, 20)?;
            ledger::live_release(&history).map(|live| live.image.clone()).with_context(|| {
                format!("{name} has no successful release yet: pass --image, or deploy first (cargo xtask deploy --env {name})")
            })?
        }
    };
    let lock =
        if ctx.dry_run() { None } else { Some(DeployLock::acquire(&aws, &tables.locks, &name, &ledger::who())?) };
    lock.as_ref().map_or(Ok(()), DeployLock::ensure_held)?;
    ui::step(&format!("running the migrations of {image} on {name}"));
    migrate(ctx, &terraform, &aws, &image).map(|_| ())
}

/// `app migrate` from the image being deployed, as a one-off ECS task in
/// the service's network; its exit code is the verdict. Returns the schema
/// version the task reported, when its logs said.
fn migrate(ctx: &Ctx, terraform: &Terraform<'_>, aws: &SharedAws, image: &str) -> Result<Option<String>> {
    let family = format!("{}-migrate", required_output(terraform, "task_definition_family")?);
    // The migration task's own template (the master's credentials, the
    // service role to create), or, for an environment applied before it
    // existed, the service's.
    let template = match terraform.output(Stage::Environment, "migration_task_definition_arn")? {
        Some(template) => template,
        None => required_output(terraform, "task_definition_arn")?,
    };
    let cluster = required_output(terraform, "cluster_name")?;
    let container = required_output(terraform, "container_name")?;
    let service = required_output(terraform, "service_name")?;
    let shared_aws = aws;
    let mut aws = aws.lock().unwrap_or_else(|poison| poison.into_inner());
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
            "security_groups": [required_output(terraform, "app_security_group_id")?],
        }),
    };
    let registered = aws.call(
        "ecs.clone_task_definition",
        json!({ "from": template, "family": family, "image": image, "container": container }),
    )?;
    if ctx.dry_run() {
        println!("would call: ecs.run_task (command [\"migrate\"], family {family}) and wait for its exit code");
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
                Ok(_) => eprintln!("stopped the migration task {task_arn}"),
                Err(err) => eprintln!(
                    "warning: could not stop the migration task {task_arn} ({err}): stop it in the ECS console"
                ),
            }
        })
    };
    let mut logs = TaskLogs {
        log_group: required_output(terraform, "log_group_name")?,
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
const LOG_STREAM_PREFIX: &str = "app";

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

/// `GET <service_url>/version` must report the deployed commit.
fn smoke_check(terraform: &Terraform<'_>, git_sha: &str, timeout: Duration) -> Result<()> {
    let url = required_output(terraform, "service_url")?;
    let deadline = Instant::now() + timeout;
    loop {
        let attempt = BaseUrl::parse(&url)
            .and_then(|base| http::send(&base, &http::Request::get("/version"), Duration::from_secs(10)));
        match &attempt {
            Ok(response) if response.status == 200 && response.body.contains(git_sha) => return Ok(()),
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_secs(2)),
            Ok(response) => bail!(
                "smoke check: GET {url}/version answered {} without {git_sha}: {}",
                response.status,
                response.body
            ),
            Err(err) => bail!("smoke check: GET {url}/version failed: {err:#}"),
        }
    }
}

fn is_smoke_failure(err: &anyhow::Error) -> bool {
    format!("{err:#}").contains("smoke check")
}

pub fn status(ctx: &Ctx, args: &Status) -> Result<()> {
    let config = Config::load(&ctx.root)?;
    let name = ctx.global.environment.clone();
    let environment = infra::aws_environment(&config, &name)?;
    let terraform = Terraform::new(ctx, &config, environment)?;
    let tables = ledger_tables(&terraform, &name)?;
    let aws: SharedAws = Arc::new(Mutex::new(AwsProcess::start(ctx)?));
    let mut store = DynamoLedger { aws: aws.clone(), table: tables.releases };
    // A record `in progress` belongs to a running deploy only while its
    // lock is held.
    if !ctx.dry_run() {
        let lock_item = crate::aws::store::read_lock(
            &mut *aws.lock().unwrap_or_else(|poison| poison.into_inner()),
            &tables.locks,
            &name,
        )?;
        let deploy_running =
            lock_item["expires_at"].as_i64().is_some_and(|expires| expires >= crate::support::time::epoch_seconds());
        reconcile_ledger(&terraform, &aws, &mut store, &name, deploy_running)?;
    }
    let history = store.history(&name, args.limit)?;
    match ledger::live_release(&history) {
        Some(live) => println!("{name}: live {} (commit {}, since {})", live.image, live.git_sha, live.started_at),
        None => println!("{name}: no successful release recorded yet"),
    }
    if let (Some(cluster), Some(service)) =
        (terraform.output(Stage::Environment, "cluster_name")?, terraform.output(Stage::Environment, "service_name")?)
    {
        let answer = aws
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .call("ecs.describe_service", json!({ "cluster": cluster, "service": service }));
        if let Ok(service_state) = answer {
            println!(
                "service {service}: {} running of {} desired, task definition {}",
                service_state["running"],
                service_state["desired"],
                service_state["task_definition"].as_str().unwrap_or("?")
            );
        }
    }
    for line in ledger::format_history(&history) {
        println!("{line}");
    }
    Ok(())
}

pub fn rollback(ctx: &Ctx, args: &Rollback) -> Result<()> {
    let config = Config::load(&ctx.root)?;
    let name = ctx.global.environment.clone();
    let environment = infra::aws_environment(&config, &name)?;
    confirm_protected(ctx, &name, environment, None)?;
    let terraform = Terraform::new(ctx, &config, environment)?;
    let tables = ledger_tables(&terraform, &name)?;
    let aws: SharedAws = Arc::new(Mutex::new(AwsProcess::start(ctx)?));
    let who = ledger::who();
    let _lock = if ctx.dry_run() { None } else { Some(DeployLock::acquire(&aws, &tables.locks, &name, &who)?) };
    let mut store = DynamoLedger { aws: aws.clone(), table: tables.releases };
    if !ctx.dry_run() {
        reconcile_ledger(&terraform, &aws, &mut store, &name, false)?;
    }
    let history = store.history(&name, 50)?;
    let target = ledger::rollback_target(&history).cloned().with_context(|| {
        format!("{name} has no earlier successful release to roll back to (see `cargo xtask status --env {name}`)")
    })?;
    roll_back_to(ctx, &terraform, &aws, &mut store, &name, &target, args)
}

/// Rolls the environment out to `target.image` with the same wait, and
/// records it as a rollback.
fn roll_back_to(
    ctx: &Ctx,
    terraform: &Terraform<'_>,
    aws: &SharedAws,
    store: &mut DynamoLedger,
    name: &str,
    target: &Release,
    args: &Rollback,
) -> Result<()> {
    ui::step(&format!(
        "roll back {name} to {} (commit {}, released {})",
        target.image, target.git_sha, target.started_at
    ));
    if !confirm(ctx.global.yes, &format!("roll {name} back to {}?", target.image))? {
        bail!("rollback cancelled");
    }
    let mut release = Release {
        environment: name.to_owned(),
        started_at: crate::support::time::now_rfc3339_millis(),
        image: target.image.clone(),
        git_sha: target.git_sha.clone(),
        runs_as: None,
        migration_version: None,
        who: ledger::who(),
        kind: ReleaseKind::Rollback,
        outcome: Outcome::InProgress,
        finished_at: None,
        infra_inputs: None,
        migrations: None,
    };
    if ctx.dry_run() {
        start_rollout(terraform, aws, &target.image)?;
        return Ok(());
    }
    store.put(&release)?;
    let rolling_out = Arc::new(Mutex::new(None));
    let _interrupted = record_interruption(aws, &store.table, &release, rolling_out.clone());
    let result = (|| -> Result<String> {
        let task_definition = start_rollout(terraform, aws, &target.image)?;
        release.runs_as = Some(task_definition.clone());
        rollout_started(ctx, store, &rolling_out, &release)?;
        wait(terraform, aws, &task_definition, args.timeout)?;
        Ok(task_definition)
    })();
    release.finished_at = Some(crate::support::time::now_rfc3339_millis());
    release.outcome = attempt_outcome(&result, &release);
    store.put(&release)?;
    result?;
    ui::success(&format!("{name} is back on {}", target.image));
    println!("{}", target.image);
    Ok(())
}

/// Records that ECS was given the release's task definition: from here on a
/// crash or an interrupt leaves a record that `reconcile_ledger` can settle
/// from what ECS did.
fn rollout_started(
    ctx: &Ctx,
    store: &mut DynamoLedger,
    rolling_out: &Mutex<Option<String>>,
    release: &Release,
) -> Result<()> {
    *rolling_out.lock().unwrap_or_else(|poison| poison.into_inner()) = release.runs_as.clone();
    if ctx.dry_run() { Ok(()) } else { store.put(release) }
}

/// An attempt's outcome. A wait that timed out after ECS started the
/// rollout does not know it: ECS may complete it or roll it back later.
fn attempt_outcome(result: &Result<String>, release: &Release) -> Outcome {
    match result {
        Ok(_) => Outcome::Succeeded,
        Err(err)
            if release.runs_as.is_some()
                && matches!(
                    err.downcast_ref::<rollout::RolloutError>(),
                    Some(rollout::RolloutError::TimedOut { .. })
                ) =>
        {
            Outcome::Unknown(format!(
                "the wait timed out while ECS rolled out {}; the next status or deploy reads what ECS did",
                release.runs_as.as_deref().unwrap_or_default()
            ))
        }
        Err(err) => Outcome::Failed(format!("{err:#}").lines().next().unwrap_or_default().to_owned()),
    }
}

/// Settles the releases the ledger cannot know the outcome of (see
/// `reconcile`) from DescribeServices, so the live release is what ECS runs.
fn reconcile_ledger(
    terraform: &Terraform<'_>,
    aws: &SharedAws,
    store: &mut DynamoLedger,
    name: &str,
    deploy_running: bool,
) -> Result<()> {
    let history = store.history(name, 20)?;
    let unsettled: Vec<Release> = reconcile::unsettled(&history, deploy_running).into_iter().cloned().collect();
    if unsettled.is_empty() {
        return Ok(());
    }
    let (Some(cluster), Some(service)) =
        (terraform.output(Stage::Environment, "cluster_name")?, terraform.output(Stage::Environment, "service_name")?)
    else {
        return Ok(());
    };
    let described = aws
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .call("ecs.describe_service", json!({ "cluster": cluster, "service": service }))
        .with_context(|| format!("describing {service} to settle the releases whose outcome is not known"))?;
    for mut release in unsettled {
        let Some(outcome) = reconcile::verdict(&release, &described) else {
            ui::info(&format!("release {} is still rolling out in ECS: its outcome stays unknown", release.started_at));
            continue;
        };
        ui::info(&format!(
            "release {} ({}): ECS says {}",
            release.started_at,
            release.image,
            match &outcome {
                Outcome::Succeeded => "succeeded".to_owned(),
                Outcome::Failed(reason) => format!("failed: {reason}"),
                _ => "unknown".to_owned(),
            }
        ));
        release.outcome = outcome;
        release.finished_at.get_or_insert_with(crate::support::time::now_rfc3339_millis);
        store.put(&release)?;
    }
    Ok(())
}

struct LedgerTables {
    releases: String,
    locks: String,
}

fn ledger_tables(terraform: &Terraform<'_>, name: &str) -> Result<LedgerTables> {
    let hint = || {
        format!(
            "the repositories stage has not been applied: run `cargo xtask infra apply --env {name} --stage repositories`"
        )
    };
    Ok(LedgerTables {
        releases: terraform.output(Stage::Repositories, "release_table_name")?.with_context(hint)?,
        locks: terraform.output(Stage::Repositories, "deploy_lock_table_name")?.with_context(hint)?,
    })
}

fn required_output(terraform: &Terraform<'_>, output: &str) -> Result<String> {
    terraform.output(Stage::Environment, output)?.with_context(|| {
        format!("the environment stage has no output {output:?}: apply it first (cargo xtask infra apply --env <name>)")
    })
}

/// Protected environments (prod, preprod) need their name typed back; without
/// a terminal, `--yes` plus `--confirm-env <name>`.
fn confirm_protected(ctx: &Ctx, name: &str, environment: &Environment, confirm_env: Option<&str>) -> Result<()> {
    use std::io::IsTerminal;
    if !environment.protected || ctx.dry_run() {
        return Ok(());
    }
    if let Some(confirmed) = confirm_env {
        if confirmed == name && ctx.global.yes {
            return Ok(());
        }
        if confirmed != name {
            bail!("--confirm-env {confirmed:?} does not match the environment {name:?}");
        }
    }
    if !std::io::stdin().is_terminal() {
        bail!("{name} is protected: without a terminal, pass --yes --confirm-env {name}");
    }
    type_name_back(name, &format!("{name} is protected. Type its name to deploy: "), "nothing deployed")
}

/// Steps of a deploy, announced and timed; with `--json` each also becomes
/// one JSON object on stdout.
struct Steps {
    rows: Vec<SummaryRow>,
    json: bool,
}

impl Steps {
    /// A step that did not run, and why (shown in the summary and as JSON).
    fn skip(&mut self, name: &str, why: &str) {
        ui::step(&format!("{name}: skipped, {why}"));
        if self.json {
            println!(
                "{}",
                json!({ "event": "step", "step": name, "outcome": "skipped", "seconds": 0.0, "reason": why })
            );
        }
        self.rows.push(SummaryRow {
            name: name.to_owned(),
            outcome: ui::Outcome::Skipped(why.to_owned()),
            duration: Duration::ZERO,
        });
    }

    fn run<T>(&mut self, name: &str, step: impl FnOnce() -> Result<T>) -> Result<T> {
        ui::step(name);
        let started = Instant::now();
        let result = step();
        let outcome = match &result {
            Ok(_) => ui::Outcome::Passed,
            Err(err) => ui::Outcome::Failed(format!("{err:#}").lines().next().unwrap_or_default().to_owned()),
        };
        if self.json {
            let (state, error) = match &outcome {
                ui::Outcome::Failed(error) => ("failed", Some(error.clone())),
                _ => ("passed", None),
            };
            println!(
                "{}",
                json!({ "event": "step", "step": name, "outcome": state, "seconds": started.elapsed().as_secs_f64(), "error": error })
            );
        }
        self.rows.push(SummaryRow { name: name.to_owned(), outcome, duration: started.elapsed() });
        result.with_context(|| format!("step {name:?} failed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
