# Sandbox: the throwaway environment, also the one the moto-backed tests
# apply. Cheapest settings and nothing that blocks `terraform destroy`.

# app_name, aws_region and environment come from deploy.toml: `cargo xtask
# infra` passes them as -var (environment is repeated here so the file also
# works with plain `terraform plan -var-file=...`).
environment = "sandbox"

desired_count = 1

# The sandbox runs the service's tasks as real containers behind a load
# balancer on loopback: the fastest health checks an ALB allows, a short
# drain and grace, so a rollout takes seconds (the same rules as on AWS).
health_check_interval_seconds     = 5
health_check_grace_period_seconds = 10
deregistration_delay_seconds      = 5

# Off because moto (the AWS emulator the sandbox tests run against) does
# not implement Application Auto Scaling TagResource/ListTagsForResource:
# with default_tags the aws_appautoscaling_target never finishes creating.
enable_autoscaling = false

enable_container_insights = false
log_retention_days        = 7
kms_deletion_window_days  = 7

# Off because moto does not implement them (WAFv2 association with a load
# balancer, RDS Performance Insights and enhanced monitoring); the sandbox
# also has no certificate, so it serves plain HTTP (certificate_arn empty).
enable_waf                      = false
db_performance_insights_enabled = false
db_monitoring_interval          = 0

# Throwaway: nothing may block `terraform destroy`, and one zone is enough.
alb_deletion_protection = false
db_multi_az             = false

db_backup_retention_days    = 0
db_deletion_protection      = false
db_skip_final_snapshot      = true
db_apply_immediately        = true
secret_recovery_window_days = 0
