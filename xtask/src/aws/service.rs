//! The ECS service of an environment: what it runs, pointing it at a new
//! revision, waiting for that deployment (`rollout`), and the smoke check
//! of `/version` after it.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::{
    aws::{
        api::AwsApi,
        rollout::{self, RealClock, RolloutTarget, WaitOptions},
        session::Session,
    },
    http::{self, BaseUrl},
    support::ui,
};

/// Whether the environment's service runs `task_definition` and nothing
/// else: one deployment, PRIMARY, of that revision, completed.
pub fn service_runs_only(session: &Session<'_>, task_definition: &str) -> Result<bool> {
    let cluster = session.output("cluster_name")?;
    let service = session.output("service_name")?;
    let mut aws = session.aws.lock().unwrap_or_else(|poison| poison.into_inner());
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
pub fn start_rollout(session: &Session<'_>, image: &str) -> Result<String> {
    let template = session.output("task_definition_arn")?;
    let family = session.output("task_definition_family")?;
    let cluster = session.output("cluster_name")?;
    let service = session.output("service_name")?;
    let container = session.output("container_name")?;
    let mut aws = session.aws.lock().unwrap_or_else(|poison| poison.into_inner());
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
pub fn wait(session: &Session<'_>, task_definition: &str, timeout: Duration) -> Result<()> {
    let target = RolloutTarget {
        cluster: session.output("cluster_name")?,
        service: session.output("service_name")?,
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
    let mut aws = session.aws.lock().unwrap_or_else(|poison| poison.into_inner());
    // The progress lines are printed above the spinner, the latest also beside it.
    let progress = ui::progress("rollout");
    let completed = rollout::wait_for_rollout(&mut *aws, &mut RealClock::new(), &target, options, &mut |line| {
        ui::info(&format!("  {line}"));
        progress.message(line);
    });
    progress.finish(completed.is_ok());
    if completed.is_err() {
        show_stopped_task_logs(session, &mut *aws, &target);
    }
    let completed = completed?;
    ui::success(&format!("deployment {} completed: {} running", completed.deployment_id, completed.running));
    Ok(())
}

/// How many of a stopped task's last log lines a failed rollout shows.
const STOPPED_TASK_LOG_LINES: usize = 10;

/// After a failed rollout: the last log lines of the newest stopped task of
/// the new revision (a crash at start says why there). Best effort: the
/// rollout's own error is what counts.
fn show_stopped_task_logs(session: &Session<'_>, aws: &mut dyn AwsApi, target: &RolloutTarget) {
    let (Ok(log_group), Ok(container)) = (session.output("log_group_name"), session.output("container_name")) else {
        return;
    };
    let Ok(answer) =
        aws.call("ecs.list_stopped_tasks", json!({ "cluster": target.cluster, "service": target.service }))
    else {
        return;
    };
    let newest = answer["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|task| task["task_definition"].as_str() == Some(target.task_definition_arn.as_str()))
        .max_by(|a, b| a["stopped_at"].as_f64().unwrap_or(0.0).total_cmp(&b["stopped_at"].as_f64().unwrap_or(0.0)));
    let Some(task_id) = newest.and_then(|task| task["task_arn"].as_str()).and_then(|arn| arn.rsplit('/').next()) else {
        return;
    };
    let log_stream = format!("{}/{container}/{task_id}", super::migrations::LOG_STREAM_PREFIX);
    let Ok(answer) = aws.call("logs.get_log_events", json!({ "log_group": log_group, "log_stream": log_stream }))
    else {
        return;
    };
    let events: Vec<&str> =
        answer["events"].as_array().into_iter().flatten().filter_map(|event| event["message"].as_str()).collect();
    if events.is_empty() {
        return;
    }
    ui::info(&format!("the last log lines of task {task_id} (CloudWatch Logs {log_group} / {log_stream}):"));
    for line in &events[events.len().saturating_sub(STOPPED_TASK_LOG_LINES)..] {
        ui::info(&format!("  {container} | {}", line.trim_end()));
    }
}

/// `GET <service_url>/version` must report the deployed commit.
pub fn smoke_check(session: &Session<'_>, git_sha: &str, timeout: Duration) -> Result<()> {
    let url = session.output("service_url")?;
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

pub fn is_smoke_failure(err: &anyhow::Error) -> bool {
    format!("{err:#}").contains("smoke check")
}
