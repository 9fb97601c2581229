output "repository_url" {
  description = "Repository URL without tag, e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com/guestbook."
  value       = aws_ecr_repository.app.repository_url
}

output "repository_name" {
  description = "Name of the ECR repository."
  value       = aws_ecr_repository.app.name
}

output "registry_id" {
  description = "Registry (AWS account) id holding the repository."
  value       = aws_ecr_repository.app.registry_id
}

output "release_table_name" {
  description = "DynamoDB table recording every deploy attempt (hash key environment, range key deployed_at)."
  value       = aws_dynamodb_table.releases.name
}

output "deploy_lock_table_name" {
  description = "DynamoDB table holding one lock item per environment during a deploy (hash key environment)."
  value       = aws_dynamodb_table.deploy_locks.name
}

output "deploy_lock_ttl_attribute" {
  description = "Attribute of the lock table that DynamoDB TTL reads (epoch seconds)."
  value       = var.deploy_lock_ttl_attribute
}

output "github_deploy_role_arn" {
  description = "The role GitHub Actions assumes through OIDC (the AWS_DEPLOY_ROLE_ARN variable of the workflows); null without github_repository."
  value       = one(aws_iam_role.github_deploy[*].arn)
}
