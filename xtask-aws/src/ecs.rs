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
