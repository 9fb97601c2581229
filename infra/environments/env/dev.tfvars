# app_name, aws_region and environment come from deploy.toml: `cargo xtask
# infra` passes them as -var (environment is repeated here so the file also
# works with plain `terraform plan -var-file=...`).
environment = "dev"
vpc_cidr    = "10.10.0.0/16"

desired_count            = 1
autoscaling_min_capacity = 1
autoscaling_max_capacity = 2

enable_container_insights = false
enable_execute_command    = true
log_retention_days        = 14
rust_log                  = "debug"

db_backup_retention_days    = 1
db_deletion_protection      = false
db_skip_final_snapshot      = true
db_apply_immediately        = true
secret_recovery_window_days = 0

# Not protected: one database zone, no enhanced monitoring, and nothing that
# blocks `terraform destroy`. WAF, flow logs and HTTPS (set certificate_arn)
# stay as in production.
alb_deletion_protection  = false
db_multi_az              = false
db_monitoring_interval   = 0
kms_deletion_window_days = 7
