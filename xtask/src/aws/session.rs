//! An AWS environment for the length of one task (deploy, rollback,
//! status, migrate, unlock): its Terraform, the `xtask-aws` process, the
//! ledger's tables and lock; and what those tasks share: the deploy lock,
//! recording a rollout, settling the releases an interrupted run left.

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::{
    aws::{
        api::AwsApi,
        client::AwsProcess,
        infra::{OutputReads, Stage, Terraform},
        reconcile, rollout,
        store::{DeployLock, DynamoLedger, SharedAws},
    },
    config::AwsEnv,
    ledger::{self, LedgerStore, Outcome, Release},
    support::{
        ctx::Ctx,
        prompt::type_name_back,
        ui::{self},
    },
};

/// One AWS environment, opened: Terraform's outputs name everything else.
pub struct Session<'a> {
    pub ctx: &'a Ctx,
    pub env: &'a AwsEnv,
    pub terraform: Terraform<'a>,
    pub aws: SharedAws,
    pub tables: LedgerTables,
}

impl<'a> Session<'a> {
    /// Finds the ledger's tables (Terraform outputs) and starts the
    /// `xtask-aws` process.
    pub fn open(ctx: &'a Ctx, env: &'a AwsEnv, terraform: Terraform<'a>) -> Result<Session<'a>> {
        Session::begin(ctx, env, terraform)?.finish()
    }

    /// `open` in two halves: the reads and the `xtask-aws` process start
    /// here, and `Opening::finish` waits for them, so a deploy builds its
    /// image meanwhile.
    pub fn begin(ctx: &'a Ctx, env: &'a AwsEnv, terraform: Terraform<'a>) -> Result<Opening<'a>> {
        // The environment's outputs too: every task of a session reads them
        // (the cluster and service), and side by side they cost no time.
        let reads = terraform.start_reading_outputs(&[Stage::Repositories, Stage::Environment])?;
        let aws = AwsProcess::start(ctx)?;
        Ok(Opening { ctx, env, terraform, reads, aws })
    }

    /// The release ledger (DynamoDB).
    pub fn store(&self) -> DynamoLedger {
        DynamoLedger { aws: self.aws.clone(), table: self.tables.releases.clone() }
    }

    /// Takes the environment's deploy lock; none under `--dry-run`, which
    /// changes nothing.
    pub fn take_lock(&self) -> Result<Option<DeployLock>> {
        self.ctx.effect(None, || {
            DeployLock::acquire(&self.aws, &self.tables.locks, &self.env.name, &ledger::who()).map(Some)
        })
    }

    /// An output of the environment stage that must exist.
    pub fn output(&self, output: &str) -> Result<String> {
        required_output(&self.terraform, output)
    }
}

/// A session being opened (see `Session::begin`).
pub struct Opening<'a> {
    ctx: &'a Ctx,
    env: &'a AwsEnv,
    terraform: Terraform<'a>,
    reads: OutputReads,
    aws: AwsProcess,
}

impl<'a> Opening<'a> {
    /// The session, once Terraform's outputs are read.
    pub fn finish(self) -> Result<Session<'a>> {
        let Opening { ctx, env, terraform, reads, aws } = self;
        reads.finish(&terraform)?;
        let tables = ledger_tables(&terraform, &env.name)?;
        Ok(Session { ctx, env, terraform, aws: Arc::new(Mutex::new(aws)), tables })
    }
}

pub struct LedgerTables {
    pub releases: String,
    pub locks: String,
}

pub fn ledger_tables(terraform: &Terraform<'_>, name: &str) -> Result<LedgerTables> {
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

pub fn required_output(terraform: &Terraform<'_>, output: &str) -> Result<String> {
    terraform.output(Stage::Environment, output)?.with_context(|| {
        format!("the environment stage has no output {output:?}: apply it first (cargo xtask infra apply --env <name>)")
    })
}

/// Protected environments (prod, preprod) need their name typed back; without
/// a terminal, `--yes` plus `--confirm-env <name>`.
pub fn confirm_protected(ctx: &Ctx, env: &AwsEnv, confirm_env: Option<&str>) -> Result<()> {
    use std::io::IsTerminal;
    let name = env.name.as_str();
    if !env.settings.protected || ctx.would(format_args!("ask for {name:?} typed back (a protected environment)")) {
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

/// Records that ECS was given the release's task definition: from here on a
/// crash or an interrupt leaves a record that `reconcile_ledger` can settle
/// from what ECS did.
pub fn rollout_started(
    ctx: &Ctx,
    store: &mut DynamoLedger,
    rolling_out: &Mutex<Option<String>>,
    release: &Release,
) -> Result<()> {
    *rolling_out.lock().unwrap_or_else(|poison| poison.into_inner()) = release.runs_as.clone();
    ctx.effect((), || store.put(release))
}

/// An attempt's outcome. A wait that timed out after ECS started the
/// rollout does not know it: ECS may complete it or roll it back later.
pub fn attempt_outcome(result: &Result<String>, release: &Release) -> Outcome {
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
        Err(err) => Outcome::Failed(failure_reason(err)),
    }
}

/// A failed attempt's reason in the ledger: the error's first line.
pub fn failure_reason(err: &anyhow::Error) -> String {
    format!("{err:#}").lines().next().unwrap_or_default().to_owned()
}

/// Settles the releases the ledger cannot know the outcome of (see
/// `reconcile`) from DescribeServices, so the live release is what ECS runs.
pub fn reconcile_ledger(
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
