//! Operating an AWS environment between deploys: `status` (what ECS runs
//! and the release history), `rollback` (to the last successful release,
//! not simply the previous one) and `unlock` (breaking a stale deploy
//! lock).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::{
    aws::{
        api::AwsApi,
        infra::{Stage, Terraform},
        service::{start_rollout, wait},
        session::{Session, attempt_outcome, confirm_protected, reconcile_ledger, rollout_started},
        store::{DynamoLedger, record_interruption},
    },
    config::AwsEnv,
    ledger::{self, LedgerStore, Outcome, Release, ReleaseKind},
    support::{ctx::Ctx, prompt::confirm, ui},
};

/// `cargo xtask unlock`: shows who holds the environment's deploy lock, since
/// when and on which host, and breaks it after a confirmation (or --yes).
pub fn unlock(ctx: &Ctx, env: &AwsEnv) -> Result<()> {
    let session = Session::open(ctx, env, Terraform::new(ctx, env)?)?;
    let (name, tables) = (&env.name, &session.tables);
    if ctx.would(format_args!(
        "call: dynamodb.get_item (the deploy lock of {name} in {}), then delete_item",
        tables.locks
    )) {
        return Ok(());
    }
    let mut aws = session.aws.lock().unwrap_or_else(|poison| poison.into_inner());
    let item = crate::aws::store::read_lock(&mut *aws, &tables.locks, name)?;
    if item.is_null() {
        ui::success(&format!("{name} is not locked: nothing to unlock"));
        return Ok(());
    }
    let now = crate::support::time::epoch_seconds();
    ui::info(&format!("the deploy lock of {name} is held by {}", crate::aws::store::describe_lock(&item, now)));
    if !confirm(ctx.global.yes, "break it (the holder's deploy then stops before its next step)?")? {
        bail!("the lock of {name} is kept");
    }
    crate::aws::store::break_lock(&mut *aws, &tables.locks, name)?;
    ui::success(&format!("the deploy lock of {name} is broken"));
    Ok(())
}

pub fn status(ctx: &Ctx, env: &AwsEnv, limit: usize) -> Result<()> {
    let session = Session::open(ctx, env, Terraform::new(ctx, env)?)?;
    let (name, tables, terraform, aws) = (&env.name, &session.tables, &session.terraform, &session.aws);
    let mut store = session.store();
    // A record `in progress` belongs to a running deploy only while its
    // lock is held.
    if !ctx.would("settle the releases whose outcome is not known (read the deploy lock, describe the service)") {
        let lock_item = crate::aws::store::read_lock(
            &mut *aws.lock().unwrap_or_else(|poison| poison.into_inner()),
            &tables.locks,
            name,
        )?;
        let deploy_running =
            lock_item["expires_at"].as_i64().is_some_and(|expires| expires >= crate::support::time::epoch_seconds());
        reconcile_ledger(terraform, aws, &mut store, name, deploy_running)?;
    }
    let history = store.history(name, limit)?;
    match ledger::live_release(&history) {
        Some(live) => {
            ui::result(&format!("{name}: live {} (commit {}, since {})", live.image, live.git_sha, live.started_at))
        }
        None => ui::result(&format!("{name}: no successful release recorded yet")),
    }
    if let (Some(cluster), Some(service)) =
        (terraform.output(Stage::Environment, "cluster_name")?, terraform.output(Stage::Environment, "service_name")?)
    {
        let answer = aws
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .call("ecs.describe_service", json!({ "cluster": cluster, "service": service }));
        if let Ok(service_state) = answer {
            ui::result(&format!(
                "service {service}: {} running of {} desired, task definition {}",
                service_state["running"],
                service_state["desired"],
                service_state["task_definition"].as_str().unwrap_or("?")
            ));
        }
    }
    for line in ledger::format_history(&history) {
        ui::result(&line);
    }
    Ok(())
}

pub fn rollback(ctx: &Ctx, env: &AwsEnv, timeout: Duration) -> Result<()> {
    confirm_protected(ctx, env, None)?;
    let session = Session::open(ctx, env, Terraform::new(ctx, env)?)?;
    let name = &env.name;
    let _lock = session.take_lock()?;
    let mut store = session.store();
    if !ctx.would("settle the releases whose outcome is not known") {
        reconcile_ledger(&session.terraform, &session.aws, &mut store, name, false)?;
    }
    let history = store.history(name, 50)?;
    let target = ledger::rollback_target(&history).cloned().with_context(|| {
        format!("{name} has no earlier successful release to roll back to (see `cargo xtask status --env {name}`)")
    })?;
    roll_back_to(&session, &mut store, &target, timeout)
}

/// Rolls the environment out to `target.image` with the same wait, and
/// records it as a rollback.
pub fn roll_back_to(
    session: &Session<'_>,
    store: &mut DynamoLedger,
    target: &Release,
    timeout: Duration,
) -> Result<()> {
    let (ctx, name) = (session.ctx, session.env.name.as_str());
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
    if ctx.would(format_args!(
        "call: dynamodb.put_item (release {} of {}, in progress)",
        release.started_at, target.image
    )) {
        // The AWS client prints the rollout's own calls.
        start_rollout(session, &target.image)?;
        return Ok(());
    }
    store.put(&release)?;
    let rolling_out = Arc::new(Mutex::new(None));
    let _interrupted = record_interruption(&session.aws, &store.table, &release, rolling_out.clone());
    let result = (|| -> Result<String> {
        let task_definition = start_rollout(session, &target.image)?;
        release.runs_as = Some(task_definition.clone());
        rollout_started(ctx, store, &rolling_out, &release)?;
        wait(session, &task_definition, timeout)?;
        Ok(task_definition)
    })();
    release.finished_at = Some(crate::support::time::now_rfc3339_millis());
    release.outcome = attempt_outcome(&result, &release);
    store.put(&release)?;
    result?;
    ui::success(&format!("{name} is back on {}", target.image));
    ui::result(&target.image);
    Ok(())
}
