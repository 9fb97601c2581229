output "service_url" {
  description = "Public URL of the service: https://<service_hostname> with a certificate, else http://<the load balancer's DNS name>."
  value       = local.https ? "https://${coalesce(var.service_hostname, aws_lb.app.dns_name)}" : "http://${aws_lb.app.dns_name}"
}

output "cluster_name" {
  description = "ECS cluster of the environment."
  value       = aws_ecs_cluster.main.name
}

output "service_name" {
  description = "ECS service running the app."
  value       = aws_ecs_service.app.name
}

output "task_definition_family" {
  description = "Family of the Terraform-managed task definition."
  value       = aws_ecs_task_definition.app.family
}

output "task_definition_arn" {
  description = "The template revision Terraform registered; each deploy copies it with its image digest."
  value       = aws_ecs_task_definition.app.arn
}

output "migration_task_definition_arn" {
  description = "Template revision of the migration task (master credentials, APP_DB_ROLE); a deploy copies it with the release's image."
  value       = aws_ecs_task_definition.migration.arn
}

output "container_name" {
  description = "Name of the app container in the task definition."
  value       = local.container_name
}

output "image" {
  description = "Placeholder image of the template revision (deploys set theirs); pass it back as -var image=... for a drift check."
  value       = var.image
}

output "log_group_name" {
  description = "CloudWatch log group of the app (stream prefix \"app\")."
  value       = aws_cloudwatch_log_group.app.name
}

output "private_subnet_ids" {
  description = "Private subnets, for one-off awsvpc tasks such as migrations."
  value       = aws_subnet.private[*].id
}

output "app_security_group_id" {
  description = "Security group of the tasks, for one-off awsvpc tasks such as migrations."
  value       = aws_security_group.app.id
}

output "db_secret_arn" {
  description = "Secrets Manager secret with the Postgres connection (JSON: username, password, host, port, dbname)."
  value       = aws_secretsmanager_secret.db.arn
}

output "execution_role_arn" {
  description = "Task execution role (image pull, logs, DB secret)."
  value       = aws_iam_role.execution.arn
}

output "task_role_arn" {
  description = "Role the application code runs as."
  value       = aws_iam_role.task.arn
}

output "vpc_id" {
  description = "VPC of the environment."
  value       = aws_vpc.main.id
}

output "db_endpoint" {
  description = "Postgres host:port (private)."
  value       = "${aws_db_instance.main.address}:${aws_db_instance.main.port}"
}

output "bastion_public_ip" {
  description = "Public address of the bastion, or null when disabled."
  value       = var.enable_bastion ? aws_eip.bastion[0].public_ip : null
}

output "bastion_instance_id" {
  description = "Bastion instance for `aws ssm start-session`, or null when disabled."
  value       = var.enable_bastion ? aws_instance.bastion[0].id : null
}

output "db_resource_id" {
  description = "The database instance's unique id: a deploy keys the migrations it applied to it (a recreated database gets a new one)."
  value       = aws_db_instance.main.resource_id
}
