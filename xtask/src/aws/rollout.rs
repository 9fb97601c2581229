//! Waiting for one ECS deployment, and refusing to be fooled.
//!
//! The waiter tracks *this* deployment (found by its task definition right
//! after the service was updated, then by its id), not "the service looks
//! stable": a service that ECS rolled back to the previous revision looks
//! perfectly stable. It succeeds only when that deployment is COMPLETED and
//! is the primary one running the new task definition, and fails with the
//! reason on FAILED, a circuit-breaker rollback, a deployment started by
//! someone else, tasks that never start, or a timeout that says what it saw
//! last.
//!
//! Polling is every 1-2 s (jittered, so many waiters do not poll in step),
//! which keeps the answer within 2 s of ECS deciding; throttling backs off
//! exponentially and then returns to the short interval.

use std::{collections::HashSet, fmt, time::Duration};

use serde_json::{Value, json};

use crate::aws::api::{ApiError, AwsApi};

/// The deployment to wait for.
#[derive(Debug, Clone)]
pub struct RolloutTarget {
    pub cluster: String,
    pub service: String,
    /// The task definition the new deployment runs (its full ARN).
    pub task_definition_arn: String,
}

#[derive(Debug, Clone, Copy)]
pub struct WaitOptions {
    /// Give up after this long (default 15 minutes).
    pub timeout: Duration,
    /// Fail when no task of the deployment has reached RUNNING this long
    /// after it started while tasks keep failing (the circuit breaker may be
    /// off, or slower than we want).
    pub start_timeout: Duration,
    /// How long the new deployment may take to appear after the update.
    pub appear_timeout: Duration,
}

impl Default for WaitOptions {
    fn default() -> WaitOptions {
        WaitOptions {
            timeout: Duration::from_secs(15 * 60),
            start_timeout: Duration::from_secs(5 * 60),
            appear_timeout: Duration::from_secs(60),
        }
    }
}

/// Time, so tests can run a 15-minute timeout in no time.
pub trait Clock {
    /// Time since the wait started.
    fn elapsed(&self) -> Duration;
    fn sleep(&mut self, duration: Duration);
    /// A number in [0, 1) for jitter.
    fn random(&mut self) -> f64;
}

/// The wall clock.
pub struct RealClock {
    started: std::time::Instant,
    seed: u64,
}

impl RealClock {
    pub fn new() -> RealClock {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|since| since.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15)
            | 1;
        RealClock { started: std::time::Instant::now(), seed }
    }
}

impl Clock for RealClock {
    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn sleep(&mut self, duration: Duration) {
        std::thread::sleep(duration);
    }

    fn random(&mut self) -> f64 {
        // xorshift64: jitter needs no cryptography and no dependency.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        (self.seed >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A successful rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    pub deployment_id: String,
    pub running: i64,
}

/// Why a rollout did not succeed. Every variant is a failure: the deploy
/// exits non-zero and says this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutError {
    /// ECS marked the deployment FAILED and did not roll back.
    Failed {
        deployment_id: String,
        reason: String,
    },
    /// The circuit breaker failed the deployment and ECS went back to an
    /// older task definition.
    RolledBack {
        deployment_id: String,
        to_task_definition: String,
        reason: String,
    },
    /// Another deployment (someone else's deploy) replaced ours.
    Superseded {
        deployment_id: String,
        by_deployment: String,
        task_definition: String,
    },
    /// Tasks kept stopping before any reached RUNNING.
    TasksNeverStarted {
        deployment_id: String,
        failed_tasks: i64,
        reason: String,
    },
    /// No deployment of the new task definition appeared after the update.
    NeverAppeared {
        task_definition: String,
    },
    TimedOut {
        after: Duration,
        last_seen: String,
    },
    Api(ApiError),
}

impl fmt::Display for RolloutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RolloutError::Failed { deployment_id, reason } => {
                write!(f, "deployment {deployment_id} FAILED: {reason}")
            }
            RolloutError::RolledBack { deployment_id, to_task_definition, reason } => write!(
                f,
                "deployment {deployment_id} failed and ECS rolled the service back to {to_task_definition}: {reason}"
            ),
            RolloutError::Superseded { deployment_id, by_deployment, task_definition } => write!(
                f,
                "deployment {deployment_id} was replaced by deployment {by_deployment} running {task_definition}, started by someone else; check who deploys at the same time"
            ),
            RolloutError::TasksNeverStarted { deployment_id, failed_tasks, reason } => write!(
                f,
                "tasks of deployment {deployment_id} never started ({failed_tasks} failed); last stop reason: {reason}"
            ),
            RolloutError::NeverAppeared { task_definition } => write!(
                f,
                "no deployment of {task_definition} appeared on the service: was the service updated? check `aws ecs describe-services`"
            ),
            RolloutError::TimedOut { after, last_seen } => write!(
                f,
                "the rollout did not finish within {}s; last seen: {last_seen}. Look at the service events and the stopped tasks' reasons in the ECS console or `aws ecs describe-services`",
                after.as_secs()
            ),
            RolloutError::Api(err) => write!(f, "asking ECS about the rollout: {err}"),
        }
    }
}

impl std::error::Error for RolloutError {}

/// One deployment as `ecs.describe_service` reports it.
#[derive(Debug, Clone, Default)]
struct Deployment {
    id: String,
    status: String,
    task_definition: String,
    rollout_state: String,
    rollout_state_reason: String,
    desired: i64,
    running: i64,
    pending: i64,
    failed_tasks: i64,
}

impl Deployment {
    fn from_json(value: &Value) -> Deployment {
        let text = |key: &str| value[key].as_str().unwrap_or_default().to_owned();
        let number = |key: &str| value[key].as_i64().unwrap_or(0);
        Deployment {
            id: text("id"),
            status: text("status"),
            task_definition: text("task_definition"),
            rollout_state: text("rollout_state"),
            rollout_state_reason: text("rollout_state_reason"),
            desired: number("desired"),
            running: number("running"),
            pending: number("pending"),
            failed_tasks: number("failed_tasks"),
        }
    }

    fn summary(&self) -> String {
        format!(
            "deployment {} ({}, rollout {}): {}/{} running, {} pending, {} failed",
            self.id,
            self.status,
            if self.rollout_state.is_empty() { "?" } else { &self.rollout_state },
            self.running,
            self.desired,
            self.pending,
            self.failed_tasks
        )
    }
}

/// Waits for the deployment of `target.task_definition_arn`; `progress`
/// receives one line per change (counts, new service events, stop reasons).
pub fn wait_for_rollout(
    api: &mut dyn AwsApi,
    clock: &mut dyn Clock,
    target: &RolloutTarget,
    options: WaitOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Completed, RolloutError> {
    let mut deployment_id: Option<String> = None;
    let mut seen_events: Option<HashSet<String>> = None;
    let mut seen_stopped_tasks: HashSet<String> = HashSet::new();
    let mut last_summary = "nothing yet (no answer from ECS)".to_owned();
    let mut last_failed_tasks = 0;
    let mut last_stop_reason = String::new();
    let mut tracking_since = Duration::ZERO;
    let mut throttled_in_a_row = 0u32;
    let request = json!({ "cluster": target.cluster, "service": target.service });

    loop {
        if clock.elapsed() >= options.timeout {
            return Err(RolloutError::TimedOut { after: options.timeout, last_seen: last_summary });
        }
        let service = match api.call("ecs.describe_service", request.clone()) {
            Ok(service) => {
                throttled_in_a_row = 0;
                service
            }
            Err(err) if err.throttling => {
                throttled_in_a_row += 1;
                let backoff = Duration::from_secs(1u64 << throttled_in_a_row.min(5)).min(Duration::from_secs(30));
                let backoff = backoff.mul_f64(0.5 + clock.random() / 2.0);
                progress(&format!(
                    "ECS is throttling requests ({}); next try in {:.1}s",
                    err.code,
                    backoff.as_secs_f64()
                ));
                clock.sleep(backoff);
                continue;
            }
            Err(err) => return Err(RolloutError::Api(err)),
        };

        report_new_events(&service, &mut seen_events, progress);
        let deployments: Vec<Deployment> = service["deployments"]
            .as_array()
            .map(|list| list.iter().map(Deployment::from_json).collect())
            .unwrap_or_default();
        let primary = deployments.iter().find(|deployment| deployment.status == "PRIMARY");

        if deployment_id.is_none() {
            // Right after the update, ours is the PRIMARY deployment of the
            // new task definition.
            let ours = deployments
                .iter()
                .filter(|deployment| deployment.task_definition == target.task_definition_arn)
                .find(|deployment| deployment.status == "PRIMARY");
            match ours {
                Some(ours) => {
                    progress(&format!("tracking deployment {} of {}", ours.id, target.task_definition_arn));
                    deployment_id = Some(ours.id.clone());
                    tracking_since = clock.elapsed();
                }
                None if clock.elapsed() >= options.appear_timeout => {
                    return Err(RolloutError::NeverAppeared { task_definition: target.task_definition_arn.clone() });
                }
                None => {
                    last_summary = format!(
                        "waiting for a deployment of {} to appear; primary is {}",
                        target.task_definition_arn,
                        primary.map_or("none".to_owned(), |primary| primary.summary())
                    );
                    let interval = poll_interval(clock);
                    clock.sleep(interval);
                    continue;
                }
            }
        }
        let id = deployment_id.clone().unwrap_or_default();

        let Some(ours) = deployments.iter().find(|deployment| deployment.id == id) else {
            // Our deployment is gone from the list: something replaced it.
            return Err(match primary {
                Some(primary) if primary.task_definition != target.task_definition_arn && rolled_back(&service) => {
                    RolloutError::RolledBack {
                        deployment_id: id,
                        to_task_definition: primary.task_definition.clone(),
                        reason: non_empty(
                            &last_stop_reason,
                            "the deployment disappeared and an older revision is primary",
                        ),
                    }
                }
                Some(primary) => RolloutError::Superseded {
                    deployment_id: id,
                    by_deployment: primary.id.clone(),
                    task_definition: primary.task_definition.clone(),
                },
                None => RolloutError::Failed {
                    deployment_id: id,
                    reason: "the service has no primary deployment".to_owned(),
                },
            });
        };

        let summary = ours.summary();
        if summary != last_summary {
            progress(&summary);
            last_summary = summary;
        }

        if ours.failed_tasks > last_failed_tasks {
            last_failed_tasks = ours.failed_tasks;
            if let Some(reason) = report_stopped_tasks(api, target, &mut seen_stopped_tasks, progress) {
                last_stop_reason = reason;
            }
        }

        let replaced_by = primary.filter(|primary| primary.id != ours.id);
        match ours.rollout_state.as_str() {
            "FAILED" => {
                // The circuit breaker's reason is generic ("tasks failed to
                // start"); the last stopped task says why.
                let reason = match (ours.rollout_state_reason.trim(), last_stop_reason.trim()) {
                    ("", "") => "no reason given".to_owned(),
                    (state, "") => state.to_owned(),
                    ("", stop) => stop.to_owned(),
                    (state, stop) => format!("{state} The last task stopped: {stop}"),
                };
                return Err(match replaced_by {
                    Some(primary) if primary.task_definition != target.task_definition_arn => {
                        RolloutError::RolledBack {
                            deployment_id: id,
                            to_task_definition: primary.task_definition.clone(),
                            reason,
                        }
                    }
                    _ => RolloutError::Failed { deployment_id: id, reason },
                });
            }
            "COMPLETED" if ours.status == "PRIMARY" && ours.task_definition == target.task_definition_arn => {
                return Ok(Completed { deployment_id: id, running: ours.running });
            }
            _ => {}
        }
        if let Some(primary) = replaced_by {
            return Err(if primary.task_definition != target.task_definition_arn && rolled_back(&service) {
                RolloutError::RolledBack {
                    deployment_id: id,
                    to_task_definition: primary.task_definition.clone(),
                    reason: non_empty(&ours.rollout_state_reason, &non_empty(&last_stop_reason, "circuit breaker")),
                }
            } else {
                RolloutError::Superseded {
                    deployment_id: id,
                    by_deployment: primary.id.clone(),
                    task_definition: primary.task_definition.clone(),
                }
            });
        }
        let starting_for = clock.elapsed().saturating_sub(tracking_since);
        if ours.running == 0 && ours.failed_tasks > 0 && starting_for >= options.start_timeout {
            return Err(RolloutError::TasksNeverStarted {
                deployment_id: id,
                failed_tasks: ours.failed_tasks,
                reason: non_empty(&last_stop_reason, "ECS gave no stop reason"),
            });
        }
        let interval = poll_interval(clock);
        clock.sleep(interval);
    }
}

/// 1-2 s, jittered.
fn poll_interval(clock: &mut dyn Clock) -> Duration {
    Duration::from_millis(1000 + (clock.random() * 1000.0) as u64)
}

fn non_empty(text: &str, otherwise: &str) -> String {
    if text.trim().is_empty() { otherwise.to_owned() } else { text.to_owned() }
}

/// ECS announces circuit-breaker rollbacks in the service events.
fn rolled_back(service: &Value) -> bool {
    service["events"].as_array().is_some_and(|events| {
        events.iter().any(|event| {
            let message = event["message"].as_str().unwrap_or_default().to_lowercase();
            message.contains("rolling back") || message.contains("circuit breaker") || message.contains("rolled back")
        })
    })
}

/// Prints service events not seen before (the first answer only marks the
/// old ones as seen: they are history, not news).
fn report_new_events(service: &Value, seen: &mut Option<HashSet<String>>, progress: &mut dyn FnMut(&str)) {
    let events = service["events"].as_array().cloned().unwrap_or_default();
    let first_time = seen.is_none();
    let seen = seen.get_or_insert_with(HashSet::new);
    // ECS lists events newest first; show them in the order they happened.
    for event in events.iter().rev() {
        let id = event["id"].as_str().unwrap_or_default().to_owned();
        if seen.insert(id) && !first_time {
            progress(&format!("event: {}", event["message"].as_str().unwrap_or_default()));
        }
    }
}

/// Reports stopped tasks of the new task definition not seen before and
/// returns the newest reason.
fn report_stopped_tasks(
    api: &mut dyn AwsApi,
    target: &RolloutTarget,
    seen: &mut HashSet<String>,
    progress: &mut dyn FnMut(&str),
) -> Option<String> {
    let answer =
        api.call("ecs.list_stopped_tasks", json!({ "cluster": target.cluster, "service": target.service })).ok()?;
    let mut newest = None;
    for task in answer["tasks"].as_array().into_iter().flatten() {
        if task["task_definition"].as_str() != Some(target.task_definition_arn.as_str()) {
            continue;
        }
        let arn = task["task_arn"].as_str().unwrap_or_default().to_owned();
        if !seen.insert(arn.clone()) {
            continue;
        }
        let mut reason = task["stopped_reason"].as_str().unwrap_or("no reason given").to_owned();
        for container in task["containers"].as_array().into_iter().flatten() {
            let name = container["name"].as_str().unwrap_or("?");
            if let Some(code) = container["exit_code"].as_i64() {
                reason.push_str(&format!("; container {name} exited {code}"));
            }
            if let Some(why) = container["reason"].as_str() {
                reason.push_str(&format!("; container {name}: {why}"));
            }
        }
        let short_arn = arn.rsplit('/').next().unwrap_or(&arn).to_owned();
        progress(&format!("task {short_arn} stopped: {reason}"));
        newest = Some(reason);
    }
    newest
}

#[cfg(test)]
mod tests {
    //! The waiter's decisions against ECS answers shaped as AWS documents
    //! them (DescribeServices deployments and events, DescribeTasks stop
    //! reasons). moto does not simulate rollouts, so these scripts are the
    //! only way to produce a circuit-breaker rollback or throttling on
    //! purpose.

    use super::*;

    const OLD: &str = "arn:aws:ecs:us-east-1:123456789012:task-definition/guestbook-dev:6";
    const NEW: &str = "arn:aws:ecs:us-east-1:123456789012:task-definition/guestbook-dev:7";
    const OTHER: &str = "arn:aws:ecs:us-east-1:123456789012:task-definition/guestbook-dev:8";

    struct FakeClock {
        now: Duration,
        sleeps: Vec<Duration>,
    }

    impl Clock for FakeClock {
        fn elapsed(&self) -> Duration {
            self.now
        }
        fn sleep(&mut self, duration: Duration) {
            self.sleeps.push(duration);
            self.now += duration;
        }
        fn random(&mut self) -> f64 {
            0.5
        }
    }

    /// Answers describe_service from a list (the last answer repeats) and
    /// list_stopped_tasks with a fixed list.
    struct FakeEcs {
        answers: Vec<Result<Value, ApiError>>,
        stopped_tasks: Value,
        describe_calls: usize,
        list_calls: usize,
    }

    impl AwsApi for FakeEcs {
        fn call(&mut self, op: &str, params: Value) -> Result<Value, ApiError> {
            assert_eq!(params["cluster"], "guestbook-dev");
            match op {
                "ecs.describe_service" => {
                    let index = self.describe_calls.min(self.answers.len() - 1);
                    self.describe_calls += 1;
                    self.answers[index].clone()
                }
                "ecs.list_stopped_tasks" => {
                    self.list_calls += 1;
                    Ok(self.stopped_tasks.clone())
                }
                _ => panic!("unexpected call {op}"),
            }
        }
    }

    fn deployment(id: &str, status: &str, task_definition: &str, rollout: &str, counts: (i64, i64, i64)) -> Value {
        let (running, desired, failed) = counts;
        json!({
            "id": id, "status": status, "task_definition": task_definition, "rollout_state": rollout,
            "rollout_state_reason": if rollout == "FAILED" { "ECS deployment circuit breaker: tasks failed to start." } else { "" },
            "desired": desired, "running": running, "pending": desired - running, "failed_tasks": failed,
        })
    }

    fn service(deployments: Vec<Value>, events: &[(&str, &str)]) -> Result<Value, ApiError> {
        let events: Vec<Value> = events.iter().map(|(id, message)| json!({ "id": id, "message": message })).collect();
        Ok(json!({ "status": "ACTIVE", "deployments": deployments, "events": events }))
    }

    /// The service while our deployment replaces the old one, which is
    /// still COMPLETED with both tasks; no new events.
    fn replacing_old(counts: (i64, i64, i64)) -> Result<Value, ApiError> {
        service(
            vec![
                deployment("ecs-svc/new", "PRIMARY", NEW, "IN_PROGRESS", counts),
                deployment("ecs-svc/old", "ACTIVE", OLD, "COMPLETED", (2, 2, 0)),
            ],
            &[],
        )
    }

    fn target() -> RolloutTarget {
        RolloutTarget {
            cluster: "guestbook-dev".to_owned(),
            service: "guestbook-dev".to_owned(),
            task_definition_arn: NEW.to_owned(),
        }
    }

    fn run(ecs: &mut FakeEcs, options: WaitOptions) -> (Result<Completed, RolloutError>, Vec<String>, FakeClock) {
        let mut clock = FakeClock { now: Duration::ZERO, sleeps: Vec::new() };
        let mut lines = Vec::new();
        let result = wait_for_rollout(ecs, &mut clock, &target(), options, &mut |line| lines.push(line.to_owned()));
        (result, lines, clock)
    }

    fn fake(answers: Vec<Result<Value, ApiError>>) -> FakeEcs {
        FakeEcs { answers, stopped_tasks: json!({ "tasks": [] }), describe_calls: 0, list_calls: 0 }
    }

    #[test]
    fn success_needs_our_deployment_completed_and_primary() {
        let mut ecs = fake(vec![
            service(
                vec![
                    deployment("ecs-svc/new", "PRIMARY", NEW, "IN_PROGRESS", (0, 2, 0)),
                    deployment("ecs-svc/old", "ACTIVE", OLD, "COMPLETED", (2, 2, 0)),
                ],
                &[("e1", "(service guestbook-dev) has reached a steady state.")],
            ),
            service(
                vec![
                    deployment("ecs-svc/new", "PRIMARY", NEW, "IN_PROGRESS", (1, 2, 0)),
                    deployment("ecs-svc/old", "ACTIVE", OLD, "COMPLETED", (1, 2, 0)),
                ],
                &[("e2", "(service guestbook-dev) has started 1 tasks"), ("e1", "old news")],
            ),
            service(vec![deployment("ecs-svc/new", "PRIMARY", NEW, "COMPLETED", (2, 2, 0))], &[]),
        ]);
        let (result, lines, clock) = run(&mut ecs, WaitOptions::default());
        assert_eq!(result, Ok(Completed { deployment_id: "ecs-svc/new".to_owned(), running: 2 }));
        assert!(lines.iter().any(|line| line.contains("tracking deployment ecs-svc/new")), "{lines:?}");
        assert!(lines.iter().any(|line| line.contains("1/2 running, 1 pending")), "{lines:?}");
        assert!(lines.iter().any(|line| line == "event: (service guestbook-dev) has started 1 tasks"), "{lines:?}");
        assert!(!lines.iter().any(|line| line.contains("steady state")), "old events are history: {lines:?}");
        // Polls every 1-2 s, so the answer comes within 2 s of COMPLETED.
        assert!(clock.sleeps.iter().all(|sleep| *sleep >= Duration::from_secs(1) && *sleep <= Duration::from_secs(2)));
        assert_eq!(ecs.describe_calls, 3);
    }

    #[test]
    fn a_stable_service_on_the_old_revision_is_not_success() {
        // The update never produced a deployment of NEW: the old deployment
        // is COMPLETED and steady, which fools "wait services-stable".
        let mut ecs = fake(vec![service(
            vec![deployment("ecs-svc/old", "PRIMARY", OLD, "COMPLETED", (2, 2, 0))],
            &[("e1", "(service guestbook-dev) has reached a steady state.")],
        )]);
        let (result, _, _) = run(&mut ecs, WaitOptions::default());
        assert_eq!(result, Err(RolloutError::NeverAppeared { task_definition: NEW.to_owned() }));
    }

    #[test]
    fn circuit_breaker_rollback_fails_naming_the_revision_and_reason() {
        let mut ecs = fake(vec![
            replacing_old((0, 2, 0)),
            replacing_old((0, 2, 3)),
            service(
                vec![
                    deployment("ecs-svc/rollback", "PRIMARY", OLD, "IN_PROGRESS", (2, 2, 0)),
                    deployment("ecs-svc/new", "ACTIVE", NEW, "FAILED", (0, 2, 3)),
                ],
                &[(
                    "e9",
                    "(service guestbook-dev) deployment ecs-svc/new deployment failed: tasks failed to start. Rolling back to ecs-svc/old.",
                )],
            ),
        ]);
        ecs.stopped_tasks = json!({ "tasks": [{
            "task_arn": "arn:aws:ecs:us-east-1:123456789012:task/guestbook-dev/abc123",
            "task_definition": NEW,
            "stopped_reason": "Essential container in task exited",
            "containers": [{ "name": "guestbook", "exit_code": 2, "reason": null }],
        }]});
        let (result, lines, _) = run(&mut ecs, WaitOptions::default());
        let err = result.unwrap_err();
        assert!(
            matches!(&err, RolloutError::RolledBack { to_task_definition, .. } if to_task_definition == OLD),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("rolled the service back to") && message.contains("circuit breaker"), "{message}");
        assert!(
            lines.iter().any(|line| line
                .contains("task abc123 stopped: Essential container in task exited; container guestbook exited 2")),
            "{lines:?}"
        );
        assert!(lines.iter().any(|line| line.contains("Rolling back")), "{lines:?}");
        assert_eq!(ecs.list_calls, 1);
    }

    #[test]
    fn failed_without_rollback_is_a_failure() {
        let mut ecs = fake(vec![service(vec![deployment("ecs-svc/new", "PRIMARY", NEW, "FAILED", (0, 2, 4))], &[])]);
        let (result, _, _) = run(&mut ecs, WaitOptions::default());
        let err = result.unwrap_err();
        assert!(matches!(err, RolloutError::Failed { .. }), "{err:?}");
        assert!(err.to_string().contains("FAILED: ECS deployment circuit breaker"), "{err}");
    }

    #[test]
    fn tasks_that_never_start_fail_after_the_start_timeout() {
        let mut ecs = fake(vec![
            service(vec![deployment("ecs-svc/new", "PRIMARY", NEW, "IN_PROGRESS", (0, 2, 0))], &[]),
            service(vec![deployment("ecs-svc/new", "PRIMARY", NEW, "IN_PROGRESS", (0, 2, 1))], &[]),
        ]);
        ecs.stopped_tasks = json!({ "tasks": [{
            "task_arn": "arn:aws:ecs:us-east-1:123456789012:task/guestbook-dev/def456",
            "task_definition": NEW,
            "stopped_reason": "CannotPullContainerError: pull image manifest has been retried 5 time(s)",
            "containers": [],
        }]});
        let options = WaitOptions { start_timeout: Duration::from_secs(60), ..WaitOptions::default() };
        let (result, _, clock) = run(&mut ecs, options);
        let err = result.unwrap_err();
        assert!(matches!(err, RolloutError::TasksNeverStarted { failed_tasks: 1, .. }), "{err:?}");
        assert!(err.to_string().contains("CannotPullContainerError"), "{err}");
        assert!(clock.now >= Duration::from_secs(60) && clock.now < Duration::from_secs(63), "{:?}", clock.now);
    }

    #[test]
    fn a_stuck_rollout_times_out_saying_what_it_saw() {
        let mut ecs = fake(vec![service(
            vec![
                deployment("ecs-svc/new", "PRIMARY", NEW, "IN_PROGRESS", (1, 2, 0)),
                deployment("ecs-svc/old", "ACTIVE", OLD, "COMPLETED", (1, 2, 0)),
            ],
            &[],
        )]);
        let options = WaitOptions { timeout: Duration::from_secs(120), ..WaitOptions::default() };
        let (result, _, clock) = run(&mut ecs, options);
        let err = result.unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, RolloutError::TimedOut { .. }), "{err:?}");
        assert!(message.contains("within 120s") && message.contains("1/2 running, 1 pending"), "{message}");
        assert!(clock.now >= Duration::from_secs(120) && clock.now <= Duration::from_secs(122));
    }

    #[test]
    fn a_concurrent_deployment_by_someone_else_is_named() {
        let mut ecs = fake(vec![
            replacing_old((0, 2, 0)),
            service(
                vec![
                    deployment("ecs-svc/theirs", "PRIMARY", OTHER, "IN_PROGRESS", (0, 2, 0)),
                    deployment("ecs-svc/new", "ACTIVE", NEW, "IN_PROGRESS", (1, 2, 0)),
                ],
                &[],
            ),
        ]);
        let (result, _, _) = run(&mut ecs, WaitOptions::default());
        let err = result.unwrap_err();
        assert_eq!(
            err,
            RolloutError::Superseded {
                deployment_id: "ecs-svc/new".to_owned(),
                by_deployment: "ecs-svc/theirs".to_owned(),
                task_definition: OTHER.to_owned(),
            }
        );
        assert!(err.to_string().contains("started by someone else"));
    }

    #[test]
    fn throttling_backs_off_and_then_polls_fast_again() {
        let throttled = Err(ApiError {
            code: "ThrottlingException".to_owned(),
            message: "Rate exceeded".to_owned(),
            throttling: true,
        });
        let mut ecs = fake(vec![
            service(vec![deployment("ecs-svc/new", "PRIMARY", NEW, "IN_PROGRESS", (0, 1, 0))], &[]),
            throttled.clone(),
            throttled.clone(),
            throttled,
            service(vec![deployment("ecs-svc/new", "PRIMARY", NEW, "IN_PROGRESS", (0, 1, 0))], &[]),
            service(vec![deployment("ecs-svc/new", "PRIMARY", NEW, "COMPLETED", (1, 1, 0))], &[]),
        ]);
        let (result, lines, clock) = run(&mut ecs, WaitOptions::default());
        assert!(result.is_ok(), "{result:?}");
        assert!(lines.iter().filter(|line| line.contains("throttling")).count() == 3, "{lines:?}");
        // 1.5 s poll, then backoffs 1.5, 3, 6 s (2^n * 0.75), then 1.5 s again.
        let secs: Vec<f64> = clock.sleeps.iter().map(Duration::as_secs_f64).collect();
        assert_eq!(secs, vec![1.5, 1.5, 3.0, 6.0, 1.5], "{secs:?}");
    }

    #[test]
    fn other_api_errors_stop_the_wait_with_the_error() {
        let mut ecs = fake(vec![Err(ApiError {
            code: "AccessDeniedException".to_owned(),
            message: "not authorized to perform: ecs:DescribeServices".to_owned(),
            throttling: false,
        })]);
        let (result, _, _) = run(&mut ecs, WaitOptions::default());
        let message = result.unwrap_err().to_string();
        assert!(message.contains("AccessDeniedException") && message.contains("ecs:DescribeServices"), "{message}");
    }
}
