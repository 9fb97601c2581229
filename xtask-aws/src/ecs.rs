//! ECS operations used by rollouts: describe the service and its
//! deployments, tasks and their stop reasons.

use serde_json::{Value, json};

use crate::{ApiError, epoch_seconds, sdk_error, string_param};

pub async fn call(client: &aws_sdk_ecs::Client, name: &str, params: &Value) -> Result<Value, ApiError> {
    match name {
        "describe_service" => {
            let cluster = string_param(params, "cluster")?;
            let service = string_param(params, "service")?;
            let output =
                client.describe_services().cluster(cluster).services(service).send().await.map_err(sdk_error)?;
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
            let strategy: Vec<Value> = service
                .capacity_provider_strategy()
                .iter()
                .map(|item| json!({ "capacity_provider": item.capacity_provider(), "weight": item.weight(), "base": item.base() }))
                .collect();
            let network =
                service.network_configuration().and_then(|network| network.awsvpc_configuration()).map(|vpc| {
                    json!({
                        "subnets": vpc.subnets(),
                        "security_groups": vpc.security_groups(),
                        "assign_public_ip": vpc.assign_public_ip().map(|assign| assign.as_str().to_owned()),
                    })
                });
            Ok(json!({
                "status": service.status(),
                "task_definition": service.task_definition(),
                "launch_type": service.launch_type().map(|launch| launch.as_str().to_owned()),
                "capacity_provider_strategy": strategy,
                "network": network,
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
                .map_err(sdk_error)?;
            if listed.task_arns().is_empty() {
                return Ok(json!({ "tasks": [] }));
            }
            let described = client
                .describe_tasks()
                .cluster(cluster)
                .set_tasks(Some(listed.task_arns().to_vec()))
                .send()
                .await
                .map_err(sdk_error)?;
            let tasks: Vec<Value> = described
                .tasks()
                .iter()
                .map(|task| {
                    let containers = containers_json(task);
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
        "clone_task_definition" => {
            // A copy of a revision with another image: the rollout's new
            // revision (same family as the template Terraform registered) and
            // the one-off migration task's (a family of its own).
            let from = string_param(params, "from")?;
            let family = string_param(params, "family")?;
            let image = string_param(params, "image")?;
            let container = string_param(params, "container")?;
            let described = client
                .describe_task_definition()
                .task_definition(from)
                .include(aws_sdk_ecs::types::TaskDefinitionField::Tags)
                .send()
                .await
                .map_err(sdk_error)?;
            let source = described
                .task_definition()
                .ok_or_else(|| ApiError::new("ClientException", format!("task definition {from} not found")))?;
            let containers = with_image(source.container_definitions(), container, image)
                .map_err(|message| ApiError::new("ClientException", format!("{from}: {message}")))?;
            // Every field of the template but the app container's image, so
            // what Terraform declares (volumes, sidecars, ephemeral storage,
            // a proxy, tags) reaches the service unchanged.
            let registered = client
                .register_task_definition()
                .family(family)
                .set_container_definitions(Some(containers))
                .set_task_role_arn(source.task_role_arn().map(str::to_owned))
                .set_execution_role_arn(source.execution_role_arn().map(str::to_owned))
                .set_network_mode(source.network_mode().cloned())
                .set_requires_compatibilities(Some(source.requires_compatibilities().to_vec()))
                .set_cpu(source.cpu().map(str::to_owned))
                .set_memory(source.memory().map(str::to_owned))
                .set_runtime_platform(source.runtime_platform().cloned())
                .set_volumes(Some(source.volumes().to_vec()))
                .set_placement_constraints(Some(source.placement_constraints().to_vec()))
                .set_ephemeral_storage(source.ephemeral_storage().cloned())
                .set_proxy_configuration(source.proxy_configuration().cloned())
                .set_pid_mode(source.pid_mode().cloned())
                .set_ipc_mode(source.ipc_mode().cloned())
                .set_tags((!described.tags().is_empty()).then(|| described.tags().to_vec()))
                .send()
                .await
                .map_err(sdk_error)?;
            let arn = registered.task_definition().and_then(|definition| definition.task_definition_arn());
            Ok(json!({ "task_definition_arn": arn }))
        }
        "update_service" => {
            // The rollout itself: ECS starts a deployment of this revision.
            let cluster = string_param(params, "cluster")?;
            let service = string_param(params, "service")?;
            let task_definition = string_param(params, "task_definition")?;
            let output = client
                .update_service()
                .cluster(cluster)
                .service(service)
                .task_definition(task_definition)
                .send()
                .await
                .map_err(sdk_error)?;
            let running = output.service().and_then(|service| service.task_definition());
            Ok(json!({ "task_definition": running }))
        }
        "run_task" => {
            use aws_sdk_ecs::types::{
                AssignPublicIp, AwsVpcConfiguration, CapacityProviderStrategyItem, ContainerOverride, LaunchType,
                NetworkConfiguration, TaskOverride,
            };
            let cluster = string_param(params, "cluster")?;
            let task_definition = string_param(params, "task_definition")?;
            let container = string_param(params, "container")?;
            let strings = |key: &str| -> Vec<String> {
                params[key].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect()
            };
            let network = AwsVpcConfiguration::builder()
                .set_subnets(Some(strings("subnets")))
                .set_security_groups(Some(strings("security_groups")))
                .assign_public_ip(match params["assign_public_ip"].as_str() {
                    Some("ENABLED") => AssignPublicIp::Enabled,
                    _ => AssignPublicIp::Disabled,
                })
                .build()
                .map_err(|err| ApiError::new("BadRequest", err.to_string()))?;
            // Where the service runs, the one-off task runs: its launch type
            // (FARGATE), or its capacity provider strategy (EC2 capacity);
            // with neither, the cluster's default strategy decides.
            let strategy: Vec<CapacityProviderStrategyItem> = params["capacity_provider_strategy"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|item| {
                    CapacityProviderStrategyItem::builder()
                        .capacity_provider(item["capacity_provider"].as_str().unwrap_or_default())
                        .weight(item["weight"].as_i64().unwrap_or(1) as i32)
                        .base(item["base"].as_i64().unwrap_or(0) as i32)
                        .build()
                        .map_err(|err| ApiError::new("BadRequest", err.to_string()))
                })
                .collect::<Result<_, _>>()?;
            // A service has one or the other (ECS API reference, Service):
            // its launch type wins when both were passed.
            let launch_type = params["launch_type"].as_str().map(LaunchType::from);
            let strategy = if launch_type.is_some() { Vec::new() } else { strategy };
            let overrides = TaskOverride::builder()
                .container_overrides(
                    ContainerOverride::builder().name(container).set_command(Some(strings("command"))).build(),
                )
                .build();
            let output = client
                .run_task()
                .cluster(cluster)
                .task_definition(task_definition)
                .set_launch_type(launch_type)
                .set_capacity_provider_strategy((!strategy.is_empty()).then_some(strategy))
                .network_configuration(NetworkConfiguration::builder().awsvpc_configuration(network).build())
                .overrides(overrides)
                .started_by(string_param(params, "started_by").unwrap_or("xtask"))
                .send()
                .await
                .map_err(sdk_error)?;
            if let Some(failure) = output.failures().first() {
                return Err(ApiError::new(
                    "RunTaskFailure",
                    format!("{}: {}", failure.reason().unwrap_or("?"), failure.detail().unwrap_or("")),
                ));
            }
            let arn = output.tasks().first().and_then(|task| task.task_arn());
            Ok(json!({ "task_arn": arn }))
        }
        "stop_task" => {
            // A one-off task the deploy gave up on, or left on Ctrl-C.
            let cluster = string_param(params, "cluster")?;
            let task = string_param(params, "task_arn")?;
            client
                .stop_task()
                .cluster(cluster)
                .task(task)
                .reason(string_param(params, "reason").unwrap_or("stopped by xtask"))
                .send()
                .await
                .map_err(sdk_error)?;
            Ok(json!({}))
        }
        "describe_task" => {
            let cluster = string_param(params, "cluster")?;
            let task = string_param(params, "task_arn")?;
            let output = client.describe_tasks().cluster(cluster).tasks(task).send().await.map_err(sdk_error)?;
            let task = output
                .tasks()
                .first()
                .ok_or_else(|| ApiError::new("TaskNotFound", format!("task {task} not found")))?;
            let containers = containers_json(task);
            Ok(json!({
                "last_status": task.last_status(),
                "stopped_reason": task.stopped_reason(),
                "stop_code": task.stop_code().map(|code| code.as_str().to_owned()),
                "containers": containers,
            }))
        }
        _ => Err(ApiError::new("UnknownOperation", format!("xtask-aws does not know ecs.{name}"))),
    }
}

/// The template's containers with `image` on the one named `container`
/// (the app's); sidecars keep their own images.
fn with_image(
    containers: &[aws_sdk_ecs::types::ContainerDefinition],
    container: &str,
    image: &str,
) -> Result<Vec<aws_sdk_ecs::types::ContainerDefinition>, String> {
    if !containers.iter().any(|definition| definition.name() == Some(container)) {
        let names: Vec<&str> = containers.iter().filter_map(|definition| definition.name()).collect();
        return Err(format!("no container named {container:?} (it has {names:?})"));
    }
    Ok(containers
        .iter()
        .cloned()
        .map(|mut definition| {
            if definition.name() == Some(container) {
                definition.image = Some(image.to_owned());
            }
            definition
        })
        .collect())
}

/// A task's containers as xtask reads them: why each stopped.
fn containers_json(task: &aws_sdk_ecs::types::Task) -> Vec<Value> {
    task.containers()
        .iter()
        .map(|container| json!({ "name": container.name(), "exit_code": container.exit_code(), "reason": container.reason() }))
        .collect()
}

#[cfg(test)]
mod tests {
    use aws_sdk_ecs::types::ContainerDefinition;

    use super::with_image;

    #[test]
    fn only_the_app_container_gets_the_new_image() {
        let template = [
            ContainerDefinition::builder().name("guestbook").image("old-app").build(),
            ContainerDefinition::builder().name("envoy").image("envoy:1.30").build(),
        ];
        let copied = with_image(&template, "guestbook", "repo@sha256:new").unwrap();
        assert_eq!(copied[0].image(), Some("repo@sha256:new"));
        assert_eq!(copied[1].image(), Some("envoy:1.30"), "the sidecar got the app's image");
        let err = with_image(&template, "app", "x").unwrap_err();
        assert!(err.contains("no container named \"app\"") && err.contains("envoy"), "{err}");
    }
}
