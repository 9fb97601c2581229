//! ECS operations used by rollouts: describe the service and its
//! deployments, tasks and their stop reasons.

use serde_json::{Value, json};

use crate::{ApiError, epoch_seconds, string_param};

pub async fn call(client: &aws_sdk_ecs::Client, name: &str, params: &Value) -> Result<Value, ApiError> {
    match name {
        "describe_service" => {
            let cluster = string_param(params, "cluster")?;
            let service = string_param(params, "service")?;
            let output =
                client.describe_services().cluster(cluster).services(service).send().await.map_err(ecs_error)?;
            let service = output
                .services()
                .first()
                .ok_or_else(|| ApiError::new("ServiceNotFoundException", format!("service {service} not found")))?;
            let deployments: Vec<Value> = service
                .deployments()
                .iter()
                .map(|deployment| {
                    json!({
                        "id": deployment.id(),
                        "status": deployment.status(),
                        "task_definition": deployment.task_definition(),
                        "rollout_state": deployment.rollout_state().map(|s| s.as_str().to_owned()),
                        "rollout_state_reason": deployment.rollout_state_reason(),
                        "desired": deployment.desired_count(),
                        "running": deployment.running_count(),
                        "pending": deployment.pending_count(),
                        "failed_tasks": deployment.failed_tasks(),
                        "created_at": epoch_seconds(deployment.created_at()),
                    })
                })
                .collect();
            let events: Vec<Value> = service
                .events()
                .iter()
                .take(20)
                .map(|event| json!({ "id": event.id(), "at": epoch_seconds(event.created_at()), "message": event.message() }))
                .collect();
            Ok(json!({
                "status": service.status(),
                "task_definition": service.task_definition(),
                "desired": service.desired_count(),
                "running": service.running_count(),
                "pending": service.pending_count(),
                "deployments": deployments,
                "events": events,
            }))
        }
        "list_stopped_tasks" => {
            // Why tasks stopped is the most useful thing a failing rollout
            // can show; ECS keeps stopped tasks for about an hour.
            let cluster = string_param(params, "cluster")?;
            let service = string_param(params, "service")?;
            let listed = client
                .list_tasks()
                .cluster(cluster)
                .service_name(service)
                .desired_status(aws_sdk_ecs::types::DesiredStatus::Stopped)
                .max_results(20)
                .send()
                .await
                .map_err(ecs_error)?;
            if listed.task_arns().is_empty() {
                return Ok(json!({ "tasks": [] }));
            }
            let described = client
                .describe_tasks()
                .cluster(cluster)
                .set_tasks(Some(listed.task_arns().to_vec()))
                .send()
                .await
                .map_err(ecs_error)?;
            let tasks: Vec<Value> = described
                .tasks()
                .iter()
                .map(|task| {
                    let containers: Vec<Value> = task
                        .containers()
                        .iter()
                        .map(|container| {
                            json!({ "name": container.name(), "exit_code": container.exit_code(), "reason": container.reason() })
                        })
                        .collect();
                    json!({
                        "task_arn": task.task_arn(),
                        "task_definition": task.task_definition_arn(),
                        "last_status": task.last_status(),
                        "stopped_reason": task.stopped_reason(),
                        "stop_code": task.stop_code().map(|code| code.as_str().to_owned()),
                        "stopped_at": epoch_seconds(task.stopped_at()),
                        "containers": containers,
                    })
                })
                .collect();
            Ok(json!({ "tasks": tasks }))
        }
        _ => Err(ApiError::new("UnknownOperation", format!("xtask-aws does not know ecs.{name}"))),
    }
}

fn ecs_error<E, R>(err: aws_sdk_ecs::error::SdkError<E, R>) -> ApiError
where
    E: aws_sdk_ecs::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use aws_sdk_ecs::error::ProvideErrorMetadata;
    ApiError {
        code: err.code().unwrap_or("TransportError").to_owned(),
        message: err
            .message()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{}", aws_sdk_ecs::error::DisplayErrorContext(&err))),
    }
}
