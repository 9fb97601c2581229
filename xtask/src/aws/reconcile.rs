//! Settling releases whose outcome the deploy could not see: what ECS did
//! with a rollout the deploy stopped watching (its wait timed out, it was
//! interrupted, or it was killed after UpdateService). The ledger's live
//! release must be what ECS runs, or `status` shows the wrong release and
//! `rollback` starts from it.
//!
//! The decision is a plain function of the release's task definition and
//! the service as DescribeServices reports it (ECS API reference,
//! `Deployment`: a deployment's `status` is PRIMARY for the newest, ACTIVE
//! for older ones still draining; its `rolloutState` is IN_PROGRESS,
//! COMPLETED or FAILED; with the circuit breaker's rollback, the FAILED
//! deployment goes and the service returns to the last COMPLETED one).

use serde_json::Value;

use crate::ledger::{Outcome, Release};

/// Which records may need settling: every `unknown` one, and `in progress`
/// ones when no deploy is running (a deploy killed mid-way leaves one),
/// newer than the newest success (older ones cannot be live any more).
pub fn unsettled(history: &[Release], deploy_running: bool) -> Vec<&Release> {
    history
        .iter()
        .take_while(|release| release.outcome != Outcome::Succeeded)
        .filter(|release| match release.outcome {
            Outcome::Unknown(_) => true,
            Outcome::InProgress => !deploy_running,
            _ => false,
        })
        .collect()
}

/// The outcome ECS gives a release, or `None` while ECS is still deciding.
pub fn verdict(release: &Release, service: &Value) -> Option<Outcome> {
    let Some(task_definition) = release.runs_as.as_deref() else {
        // No rollout was recorded: the deploy ended before UpdateService.
        return Some(Outcome::Failed("the deploy ended before it started a rollout".to_owned()));
    };
    let deployments = service["deployments"].as_array().cloned().unwrap_or_default();
    let Some(ours) = deployments.iter().find(|deployment| deployment["task_definition"] == task_definition) else {
        return Some(Outcome::Failed(format!(
            "ECS does not run {task_definition}: rolled back or replaced (the service runs {})",
            service["task_definition"].as_str().unwrap_or("another revision")
        )));
    };
    let primary = ours["status"] == "PRIMARY";
    match ours["rollout_state"].as_str() {
        Some("COMPLETED") if primary => Some(Outcome::Succeeded),
        Some("FAILED") => Some(Outcome::Failed(format!(
            "ECS failed the deployment: {}",
            ours["rollout_state_reason"].as_str().unwrap_or("no reason given")
        ))),
        Some("IN_PROGRESS") => None,
        // Services without rollout states: done when it is the only
        // deployment and all its tasks run.
        None if primary && deployments.len() == 1 && ours["running"] == ours["desired"] => Some(Outcome::Succeeded),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::ledger::ReleaseKind;

    fn release(started_at: &str, outcome: Outcome, runs_as: Option<&str>) -> Release {
        Release {
            environment: "dev".to_owned(),
            started_at: started_at.to_owned(),
            image: "repo@sha256:1".to_owned(),
            git_sha: "abc".to_owned(),
            runs_as: runs_as.map(str::to_owned),
            migration_version: None,
            who: "me".to_owned(),
            kind: ReleaseKind::Deploy,
            outcome,
            finished_at: None,
            infra_inputs: None,
            migrations: None,
        }
    }

    fn service(deployments: serde_json::Value) -> Value {
        json!({ "task_definition": "td:1", "deployments": deployments })
    }

    #[test]
    fn a_timed_out_rollout_that_ecs_completed_is_a_success() {
        let timed_out = release("3", Outcome::Unknown("wait timed out".to_owned()), Some("td:3"));
        let described =
            service(json!([{ "task_definition": "td:3", "status": "PRIMARY", "rollout_state": "COMPLETED" }]));
        assert_eq!(verdict(&timed_out, &described), Some(Outcome::Succeeded));
    }

    #[test]
    fn a_rollout_that_ecs_rolled_back_or_failed_is_a_failure() {
        let timed_out = release("3", Outcome::Unknown("interrupted".to_owned()), Some("td:3"));
        // The circuit breaker went back to td:1: td:3 is gone.
        let rolled_back =
            service(json!([{ "task_definition": "td:1", "status": "PRIMARY", "rollout_state": "COMPLETED" }]));
        assert!(
            matches!(verdict(&timed_out, &rolled_back), Some(Outcome::Failed(reason)) if reason.contains("rolled back"))
        );
        let failed = service(json!([
            { "task_definition": "td:3", "status": "PRIMARY", "rollout_state": "FAILED", "rollout_state_reason": "tasks failed to start" },
        ]));
        assert!(
            matches!(verdict(&timed_out, &failed), Some(Outcome::Failed(reason)) if reason.contains("tasks failed to start"))
        );
    }

    #[test]
    fn a_rollout_still_in_progress_stays_unknown_and_one_never_started_failed() {
        let timed_out = release("3", Outcome::Unknown("wait timed out".to_owned()), Some("td:3"));
        let in_progress = service(json!([
            { "task_definition": "td:3", "status": "PRIMARY", "rollout_state": "IN_PROGRESS" },
            { "task_definition": "td:1", "status": "ACTIVE", "rollout_state": "COMPLETED" },
        ]));
        assert_eq!(verdict(&timed_out, &in_progress), None);
        let killed_early = release("4", Outcome::InProgress, None);
        assert!(matches!(verdict(&killed_early, &in_progress), Some(Outcome::Failed(_))));
    }

    #[test]
    fn only_records_newer_than_the_live_release_are_settled() {
        let history = [
            release("5", Outcome::InProgress, Some("td:5")),
            release("4", Outcome::Unknown("timed out".to_owned()), Some("td:4")),
            release("3", Outcome::Failed("x".to_owned()), None),
            release("2", Outcome::Succeeded, Some("td:2")),
            release("1", Outcome::Unknown("old".to_owned()), Some("td:1")),
        ];
        let starts = |found: Vec<&Release>| found.iter().map(|release| release.started_at.clone()).collect::<Vec<_>>();
        assert_eq!(starts(unsettled(&history, false)), ["5", "4"]);
        // A running deploy's own record is left alone.
        assert_eq!(starts(unsettled(&history, true)), ["4"]);
    }
}
