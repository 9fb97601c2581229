//! Deploying to ECS: the steps of `cargo xtask deploy --env E` for AWS
//! environments (`status`, `rollback` and `unlock` are in `operate.rs`,
//! the migrations in `migrations.rs`).
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

use std::sync::{Arc, Mutex};

use anyhow::{Result, bail};

use crate::{
    aws::{
        infra::{Stage, Terraform},
        migrations::{MIGRATION_STEP, MigrationPlan, migrate, plan_migrations},
        operate::roll_back_to,
        push::PushRequest,
        rollout::RolloutError,
        service::{is_smoke_failure, service_runs_only, smoke_check, start_rollout, wait},
        session::{Session, attempt_outcome, confirm_protected, failure_reason, reconcile_ledger, rollout_started},
        store::{DeployLock, record_interruption},
    },
    config::AwsEnv,
    deploy::{
        migrations::{MIGRATIONS_DIR, migrations_fingerprint},
        request::{DeployRequest, ImageSpec, Origin, Refresh},
    },
    image::{build::BuildRequest, source::Source},
    ledger::{self, LedgerStore, Outcome, Release, ReleaseKind},
    support::{
        ctx::Ctx,
        events::Event,
        prompt::confirm,
        steps::{OnFailure, Steps},
        ui,
    },
};

/// What a deploy did: the report printed at its end.
#[derive(Debug, Clone)]
pub struct DeployReport {
    pub environment: String,
    /// The image the environment runs, pinned by digest.
    pub image: String,
    pub task_definition: String,
    pub git_sha: String,
    /// The environment ran this already: nothing was rolled out or recorded.
    pub unchanged: bool,
}

impl DeployReport {
    /// The image on stdout, or with `--json` one `deployed` event.
    pub fn print(&self, ctx: &Ctx) {
        if ctx.global.json {
            Event::Deployed {
                environment: &self.environment,
                image: &self.image,
                task_definition: &self.task_definition,
                git_sha: &self.git_sha,
                unchanged: self.unchanged,
            }
            .emit();
        } else {
            ui::result(&self.image);
        }
    }
}

/// `cargo xtask deploy` to an AWS environment: the steps, each announced,
/// timed and summarised, then the report.
pub fn deploy(ctx: &Ctx, env: &AwsEnv, request: &DeployRequest) -> Result<DeployReport> {
    let name = env.name.as_str();
    // First: it refuses the demo secrets outside a sandbox, before anything
    // else is checked or asked.
    let terraform = Terraform::new(ctx, env)?;
    let mut steps = Steps::new(format!("deploy to {name}"), OnFailure::Stop);
    let git_sha = steps.run("check the working tree", || match &request.origin {
        Origin::Promoted { git_sha } => Ok(git_sha.clone()),
        Origin::Checkout => {
            let source = Source::read(&ctx.sh)?;
            if source.dirty && !request.allow_dirty {
                bail!(
                    "the working tree has uncommitted changes: commit them (an image deployed to {name} must match a commit), or pass --allow-dirty"
                );
            }
            Ok(source.git_sha)
        }
    })?;
    confirm_protected(ctx, env, request.confirm_env.as_deref())?;
    // The environment opens (Terraform's outputs read, `xtask-aws` started)
    // while the image builds: the build needs neither. The lock comes after
    // the push, as in Kamal's deploy: building and pushing change nothing it
    // guards (the tag names the commit, or a dirty tree's content, and ECR
    // keeps it immutable), while the ledger, the infrastructure, the
    // database and the service all come after it.
    let opening = Session::begin(ctx, env, terraform)?;

    // The attempt, recorded whatever happens from here on: an attempt that
    // stops before the rollout (the build, the push, the gate, the
    // infrastructure) is a failed release in `status`, with its reason.
    let mut release = Release {
        environment: name.to_owned(),
        started_at: crate::support::time::now_rfc3339_millis(),
        image: NO_IMAGE.to_owned(),
        git_sha: git_sha.clone(),
        runs_as: None,
        migration_version: None,
        who: ledger::who(),
        kind: match request.origin {
            Origin::Checkout => ReleaseKind::Deploy,
            Origin::Promoted { .. } => ReleaseKind::Promotion,
        },
        outcome: Outcome::InProgress,
        finished_at: None,
        infra_inputs: None,
        migrations: None,
    };

    // The migrations the image is built with, read before the build and
    // checked after it: a migration saved meanwhile may or may not be in the
    // image, and then what it carries is not known.
    let built_migrations = match (&request.origin, &request.image) {
        (Origin::Checkout, ImageSpec::Build { .. }) => Some(migrations_fingerprint(&ctx.root)?),
        _ => None,
    };
    let built = steps.run("build and push the image", || build_and_push(ctx, env, request));
    // A failed build is recorded too, so the ledger is opened for it (not as
    // a step: the steps stop at the first failure).
    let (session, image) = match built {
        Ok(image) => (steps.run("find the ledger and the lock", || opening.finish())?, image),
        Err(err) => {
            return Err(match opening.finish() {
                Ok(session) => stopped_before_rollout(ctx, &mut session.store(), &release, err),
                Err(open) => {
                    ui::warn(&format!("the failed attempt is not in the release ledger: {open:#}"));
                    err
                }
            });
        }
    };
    let mut store = session.store();
    release.image = image.clone();
    let lock =
        if ctx.would(format_args!("call: dynamodb.put_item (the deploy lock of {name} in {})", session.tables.locks)) {
            None
        } else {
            steps.run("take the deploy lock", || session.take_lock())?
        };
    let built_migrations = match built_migrations {
        Some(before) if migrations_fingerprint(&ctx.root)? == before => Some(before),
        Some(_) => {
            ui::warn(&format!("{MIGRATIONS_DIR} changed during the build: the migrations will run"));
            None
        }
        None => None,
    };

    if !ctx.would("settle the releases whose outcome is not known") {
        // We hold the lock: no other deploy is running.
        reconcile_ledger(&session.terraform, &session.aws, &mut store, name, false)?;
    }
    // Read under --dry-run too: the plan is based on what was released.
    let history = store.history(name, 20)?;
    let previous = ledger::live_release(&history).cloned();

    let (infra_inputs, infra_unchanged) = apply_infra(&session, &mut steps, request.infra, &history)
        .map_err(|err| stopped_before_rollout(ctx, &mut store, &release, err))?;
    release.infra_inputs = infra_inputs;

    // Nothing to do when ECS runs this digest already, from the revision
    // the live release registered (so from the same template: its inputs
    // are unchanged), in one completed deployment: a new deployment would
    // replace every task for nothing.
    if !request.force_rollout
        && request.migrations != Refresh::Always
        && infra_unchanged
        && let Some(live) = &previous
        && live.image == image
        && let Some(task_definition) = &live.runs_as
        && service_runs_only(&session, task_definition)?
    {
        steps.skip(
            "roll out",
            &format!("{name} already runs {image} ({task_definition}) and its infrastructure inputs are unchanged; --force rolls out anyway"),
        );
        steps.print_summary();
        ui::success(&format!("{name} runs {image} ({task_definition}): nothing changed, nothing recorded"));
        return Ok(DeployReport {
            environment: name.to_owned(),
            image,
            task_definition: task_definition.clone(),
            git_sha: live.git_sha.clone(),
            unchanged: true,
        });
    }

    let migrations = plan_migrations(&session, request.migrations, &image, built_migrations.as_deref(), &history)?;
    let rolling_out = Arc::new(Mutex::new(None));
    let _interrupted = if ctx
        .would(format_args!("call: dynamodb.put_item (release {} of {image}, in progress)", release.started_at))
    {
        None
    } else {
        store.put(&release)?;
        Some(record_interruption(&session.aws, &session.tables.releases, &release, rolling_out.clone()))
    };

    let result = {
        let mut started = |release: &Release| rollout_started(ctx, &mut store, &rolling_out, release);
        let rollout = Rollout { session: &session, request, lock: lock.as_ref() };
        rollout.run(&mut steps, &mut release, migrations, &mut started)
    };
    if let Ok(task_definition) = &result {
        release.runs_as = Some(task_definition.clone());
    }
    release.outcome = attempt_outcome(&result, &release);
    release.finished_at = Some(crate::support::time::now_rfc3339_millis());
    ctx.effect((), || store.put(&release))?;
    if let (Err(err), Some(previous)) = (&result, &previous)
        && is_smoke_failure(err)
    {
        ui::warn(&format!("the smoke check failed: rolling back to {}", previous.image));
        let _ = roll_back_to(&session, &mut store, previous, request.timeout);
    }
    if let (Err(err), Some(previous)) = (&result, &previous)
        && matches!(err.downcast_ref::<RolloutError>(), Some(RolloutError::RolledBack { .. }))
    {
        // The circuit breaker put the last completed revision back: as
        // after a failed smoke check, stdout ends with what serves.
        ui::warn(&format!("ECS rolled the service back: {} serves again", previous.image));
        ui::result(&previous.image);
    }
    steps.print_summary();
    let task_definition = result?;
    ui::success(&format!("{name} runs {image} ({task_definition})"));
    Ok(DeployReport { environment: name.to_owned(), image, task_definition, git_sha, unchanged: false })
}

/// The image of an attempt that stopped before an image was pushed.
const NO_IMAGE: &str = "(no image pushed)";

/// Records `attempt` as failed with `err`'s first line, and hands `err` on.
/// A record that cannot be written is a warning: the deploy's own error is
/// the one to show.
fn stopped_before_rollout(
    ctx: &Ctx,
    store: &mut impl LedgerStore,
    attempt: &Release,
    err: anyhow::Error,
) -> anyhow::Error {
    let release = Release {
        outcome: Outcome::Failed(failure_reason(&err)),
        finished_at: Some(crate::support::time::now_rfc3339_millis()),
        ..attempt.clone()
    };
    if let Err(record) = ctx.effect((), || store.put(&release)) {
        ui::warn(&format!("the failed attempt is not in the release ledger: {record:#}"));
    }
    err
}

/// The image to deploy, in the environment's registry and pinned by digest:
/// built and pushed, or named (and pushed unless already a digest).
fn build_and_push(ctx: &Ctx, env: &AwsEnv, request: &DeployRequest) -> Result<String> {
    let local_image = match &request.image {
        ImageSpec::Given(image) if image.contains("@sha256:") => return Ok(image.clone()),
        ImageSpec::Given(image) => image.clone(),
        ImageSpec::Build { clean, offline } => {
            BuildRequest { offline: *offline, incremental: !clean, ..BuildRequest::default() }.build(ctx, &env.app)?
        }
    };
    let push = PushRequest { image: Some(local_image), gate: request.gate.clone() };
    Ok(match push.execute(ctx, env)? {
        Some(pushed) => {
            ui::info(&format!("pushed {}", pushed.digest));
            pushed.image_by_digest
        }
        None => "<pushed image>@sha256:<digest>".to_owned(),
    })
}

/// Applies the infrastructure when its inputs changed since the last
/// successful release (or always, or never); returns the inputs'
/// fingerprint (none when skipped) and whether they were unchanged.
fn apply_infra(
    session: &Session<'_>,
    steps: &mut Steps,
    refresh: Refresh,
    history: &[Release],
) -> Result<(Option<String>, bool)> {
    const STEP: &str = "apply the infrastructure if its inputs changed";
    if refresh == Refresh::Skip {
        steps.skip(STEP, "--skip-infra");
        return Ok((None, false));
    }
    let fingerprint = session.terraform.input_fingerprint()?;
    let unchanged = ledger::last_infra_inputs(history) == Some(fingerprint.as_str()) && refresh != Refresh::Always;
    if unchanged {
        steps.skip(
            STEP,
            &format!(
                "inputs unchanged since the last successful release ({}); --force-infra plans anyway",
                &fingerprint[..12]
            ),
        );
    } else {
        steps.run(STEP, || {
            // Planned with the image Terraform knows (the template's):
            // only a change of the infrastructure itself shows.
            for stage in [Stage::Repositories, Stage::Environment] {
                session.terraform.apply(stage, None)?;
            }
            Ok(())
        })?;
    }
    Ok((Some(fingerprint), unchanged))
}

/// The part of a deploy that changes what runs: migrations, the rollout,
/// the wait and the smoke check.
struct Rollout<'a> {
    session: &'a Session<'a>,
    request: &'a DeployRequest,
    lock: Option<&'a DeployLock>,
}

impl Rollout<'_> {
    /// Returns the task definition the service runs.
    fn run(
        &self,
        steps: &mut Steps,
        release: &mut Release,
        migrations: MigrationPlan,
        started: &mut dyn FnMut(&Release) -> Result<()>,
    ) -> Result<String> {
        let (session, request) = (self.session, self.request);
        let ctx = session.ctx;
        let (image, git_sha) = (release.image.clone(), release.git_sha.clone());
        // The lock is checked again before each step that changes something:
        // a lock someone broke means another deploy may be running.
        let ensure_held = || self.lock.map_or(Ok(()), DeployLock::ensure_held);
        // Asked before the migrations: answering no must leave the database as
        // it was, not migrated for an image that never rolls out.
        if !confirm(ctx.global.yes, &format!("roll out {image} to {}?", session.env.name))? {
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
                release.migration_version = steps.run(MIGRATION_STEP, || migrate(session, &image))?;
                release.migrations = Some(key);
            }
        }
        ensure_held()?;
        let task_definition = steps.run("roll out", || start_rollout(session, &image))?;
        release.runs_as = Some(task_definition.clone());
        started(release)?;
        if ctx.would("wait for the deployment of the new task definition, then GET <service_url>/version") {
            return Ok(task_definition);
        }
        steps.run("wait for the rollout", || wait(session, &task_definition, request.timeout))?;
        if let Some(smoke_timeout) = request.smoke
            && session.env.settings.smoke_check
        {
            steps.run("smoke check GET /version", || smoke_check(session, &git_sha, smoke_timeout))?;
        }
        Ok(task_definition)
    }
}
