# app_name, aws_region and environment come from deploy.toml: `cargo xtask
# infra` passes them as -var (environment is repeated here so the file also
# works with plain `terraform plan -var-file=...`).
environment = "prod"
vpc_cidr    = "10.40.0.0/16"

# A zone outage must not take the egress of the other zone with it.
nat_gateway_per_az = true

desired_count            = 2
autoscaling_min_capacity = 2
autoscaling_max_capacity = 10
task_cpu                 = 512
task_memory              = 1024

log_retention_days = 365

db_instance_class        = "db.t4g.medium"
db_backup_retention_days = 14
db_skip_final_snapshot   = false

# Protected: the production choices, spelled out even where they are the
# defaults, so a change of a default cannot weaken this environment.
# certificate_arn = "arn:aws:acm:eu-west-1:ACCOUNT:certificate/ID"  # HTTPS; set before the first real apply
alb_deletion_protection         = true
enable_waf                      = true
enable_flow_logs                = true
db_multi_az                     = true
db_deletion_protection          = true
db_performance_insights_enabled = true
db_monitoring_interval          = 60
