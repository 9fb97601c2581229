# ---------------------------------------------------------------------------
# Identity
# ---------------------------------------------------------------------------

variable "app_name" {
  description = "Name of the application; with environment it names every resource."
  type        = string
  default     = "guestbook"

  validation {
    # "<app_name>-<environment>" names the ALB, which allows 32 characters.
    condition     = can(regex("^[a-z][a-z0-9-]{1,18}[a-z0-9]$", var.app_name))
    error_message = "The app_name must be 3-20 characters of lower-case letters, digits and dashes, starting with a letter."
  }
}

variable "environment" {
  description = "Environment name (sandbox, dev, qa, preprod, prod); set by env/<name>.tfvars."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9]{1,10}$", var.environment)) && var.environment != "local"
    error_message = "The environment must be 2-11 lower-case letters or digits, and not \"local\" (local runs without AWS)."
  }
}

variable "aws_region" {
  description = "AWS region of the environment."
  type        = string
  default     = "us-east-1"
}

variable "aws_max_retries" {
  description = "Maximum retries of one AWS API call; null keeps the provider default (25). Tests against moto set 2 so an HTTP 500 fails fast."
  type        = number
  default     = null
}

# ---------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------

variable "vpc_cidr" {
  description = "CIDR block of the VPC; /16 to /20 leaves room for the subnets carved from it."
  type        = string
  default     = "10.0.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && tonumber(split("/", var.vpc_cidr)[1]) <= 20
    error_message = "The vpc_cidr must be a valid IPv4 CIDR block of /20 or larger."
  }
}

variable "availability_zones" {
  description = "Exactly two availability zones; empty picks the region's first two available ones."
  type        = list(string)
  default     = []

  validation {
    condition     = length(var.availability_zones) == 0 || length(var.availability_zones) == 2
    error_message = "Give exactly two availability_zones, or none."
  }
}

variable "nat_gateway_per_az" {
  description = "One NAT gateway per availability zone (survives the loss of a zone) instead of a single shared one (cheaper)."
  type        = bool
  default     = false
}

variable "alb_ingress_cidrs" {
  description = "IPv4 CIDR blocks allowed to reach the load balancer on ports 80 and (with a certificate) 443."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "alb_deletion_protection" {
  description = "Protect the load balancer from deletion (turn off before `terraform destroy`)."
  type        = bool
  default     = true
}

variable "certificate_arn" {
  description = "ACM certificate of the service's host name: adds an HTTPS listener on 443 (TLS 1.2/1.3 policy) and turns port 80 into a redirect to it. Empty serves plain HTTP on port 80 (the sandbox by default: its ACM issues no certificate, though it serves an imported one)."
  type        = string
  default     = ""

  validation {
    condition     = var.certificate_arn == "" || can(regex("^arn:[a-z-]+:acm:", var.certificate_arn))
    error_message = "The certificate_arn must be an ACM certificate ARN (arn:aws:acm:...), or empty for plain HTTP."
  }
}

variable "route53_zone_id" {
  description = "Route 53 hosted zone of service_hostname: Terraform requests an ACM certificate for it, validates it by DNS in this zone and points the name at the load balancer. Exclusive with certificate_arn (deploy.toml: environments.E.route53_zone_id)."
  type        = string
  default     = ""

  validation {
    condition     = var.route53_zone_id == "" || can(regex("^Z[A-Z0-9]+$", var.route53_zone_id))
    error_message = "The route53_zone_id must be a hosted zone id (Z followed by letters and digits), or empty."
  }
}

variable "service_hostname" {
  description = "Host name the certificate covers and DNS points at the load balancer; names service_url (the smoke check's address) when certificate_arn is set. Empty uses the load balancer's DNS name."
  type        = string
  default     = ""
}

variable "enable_waf" {
  description = "Put a WAFv2 web ACL in front of the load balancer (a per-IP rate limit and AWS's known-bad-inputs rules, logged to CloudWatch)."
  type        = bool
  default     = true
}

variable "waf_rate_limit" {
  description = "Requests one client IP may send in 5 minutes before WAF blocks it."
  type        = number
  default     = 2000

  validation {
    condition     = var.waf_rate_limit >= 10
    error_message = "The waf_rate_limit must be at least 10 (WAF's minimum)."
  }
}

variable "enable_flow_logs" {
  description = "Log the VPC's accepted and rejected connections (flow logs) to CloudWatch Logs."
  type        = bool
  default     = true
}

variable "kms_deletion_window_days" {
  description = "Days a deleted KMS key of the environment (logs, secret) can still be restored (7-30)."
  type        = number
  default     = 30

  validation {
    condition     = var.kms_deletion_window_days >= 7 && var.kms_deletion_window_days <= 30
    error_message = "The kms_deletion_window_days must be 7-30."
  }
}

# ---------------------------------------------------------------------------
# Service
# ---------------------------------------------------------------------------

variable "image" {
  description = "Image of the task definition template (see ecs.tf): deploys roll out their own image by digest; the deploy tool passes the template's current image back on every plan, so nothing drifts."
  type        = string

  validation {
    condition     = can(regex("^[^\\s]+(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[0-9a-f]{64})$", var.image))
    error_message = "The image must be a full reference ending in :tag or @sha256:<digest>."
  }
}

variable "container_port" {
  description = "Port the application listens on inside the container (also passed as PORT)."
  type        = number
  default     = 8080
}

variable "task_cpu" {
  description = "Task CPU units (256 = 0.25 vCPU); must be a valid Fargate cpu/memory pair."
  type        = number
  default     = 256
}

variable "task_memory" {
  description = "Task memory in MiB."
  type        = number
  default     = 512
}

variable "cpu_architecture" {
  description = "CPU architecture of the image: X86_64 or ARM64."
  type        = string
  default     = "X86_64"

  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "The cpu_architecture must be X86_64 or ARM64."
  }
}

variable "desired_count" {
  description = "Number of tasks when the service is created. Terraform ignores later changes (autoscaling owns the count); see ecs.tf."
  type        = number
  default     = 2
}

variable "deployment_minimum_healthy_percent" {
  description = "Lower limit of running tasks during a deployment, as a percent of desired_count."
  type        = number
  default     = 100
}

variable "deployment_maximum_percent" {
  description = "Upper limit of running tasks during a deployment, as a percent of desired_count."
  type        = number
  default     = 200
}

variable "deployment_circuit_breaker_enabled" {
  description = "Let ECS mark a deployment FAILED when its tasks keep failing to start or to become healthy."
  type        = bool
  default     = true
}

variable "deployment_circuit_breaker_rollback" {
  description = "Roll a FAILED deployment back to the last COMPLETED one."
  type        = bool
  default     = true
}

variable "health_check_grace_period_seconds" {
  description = "Seconds ECS ignores failing load-balancer health checks of a new task (startup, migrations)."
  type        = number
  default     = 60
}

variable "health_check_path" {
  description = "HTTP path the load balancer polls on each task."
  type        = string
  default     = "/healthz"
}

variable "health_check_interval_seconds" {
  description = "Seconds between the load balancer's health checks of a task (5 to 300); a task is in service after 2 passes in a row."
  type        = number
  default     = 15
  validation {
    condition     = var.health_check_interval_seconds >= 5 && var.health_check_interval_seconds <= 300
    error_message = "health_check_interval_seconds must be 5 to 300 (the ALB's range)."
  }
}

variable "deregistration_delay_seconds" {
  description = "Seconds the load balancer drains a task before it is stopped."
  type        = number
  default     = 30
}

variable "rust_log" {
  description = "Value of RUST_LOG in the container."
  type        = string
  default     = "info"
}

variable "db_sslmode" {
  description = "DB_SSLMODE of the app: TLS to RDS, by default verified against the RDS CA bundle the image carries (DB_SSLROOTCERT) and the endpoint's name. require encrypts without checking who answers; it is only for an image whose bundle lacks the instance's CA."
  type        = string
  default     = "verify-full"
  validation {
    condition     = contains(["require", "verify-ca", "verify-full"], var.db_sslmode)
    error_message = "db_sslmode must be require, verify-ca or verify-full: RDS forces TLS (rds.force_ssl), so nothing weaker connects."
  }
}

variable "extra_environment" {
  description = "Further plain (non-secret) environment variables for the container."
  type        = map(string)
  default     = {}
}

variable "log_retention_days" {
  description = "Retention of the CloudWatch log groups (app, flow logs, WAF), in days; a year by default, for audits."
  type        = number
  default     = 365
}

variable "enable_container_insights" {
  description = "Turn on CloudWatch Container Insights for the cluster."
  type        = bool
  default     = true
}

variable "enable_execute_command" {
  description = "Allow `aws ecs execute-command` into running tasks (grants the task role the SSM channel permissions)."
  type        = bool
  default     = false
}

variable "wait_for_steady_state" {
  description = "Make `terraform apply` wait for the service to reach a steady state. The deploy tool watches the rollout itself, so false by default."
  type        = bool
  default     = false
}

# ---------------------------------------------------------------------------
# Capacity
# ---------------------------------------------------------------------------

variable "capacity" {
  description = "Where tasks run: \"fargate\", or \"ec2\" (an Auto Scaling group in the private subnets as an ECS capacity provider)."
  type        = string
  default     = "fargate"

  validation {
    condition     = contains(["fargate", "ec2"], var.capacity)
    error_message = "The capacity must be \"fargate\" or \"ec2\"."
  }
}

variable "ec2_instance_type" {
  description = "Instance type of the ECS container instances (capacity = \"ec2\")."
  type        = string
  default     = "t3.small"
}

variable "ec2_min_size" {
  description = "Minimum size of the container-instance Auto Scaling group (capacity = \"ec2\")."
  type        = number
  default     = 1
}

variable "ec2_max_size" {
  description = "Maximum size of the container-instance Auto Scaling group (capacity = \"ec2\")."
  type        = number
  default     = 4
}

variable "ec2_ami_id" {
  description = "AMI of the container instances; null uses the current ECS-optimized Amazon Linux 2023 AMI from SSM."
  type        = string
  default     = null
}

# ---------------------------------------------------------------------------
# Autoscaling
# ---------------------------------------------------------------------------

variable "enable_autoscaling" {
  description = "Scale the service on average CPU (Application Auto Scaling target-tracking)."
  type        = bool
  default     = true
}

variable "autoscaling_min_capacity" {
  description = "Fewest tasks autoscaling keeps."
  type        = number
  default     = 2
}

variable "autoscaling_max_capacity" {
  description = "Most tasks autoscaling starts."
  type        = number
  default     = 6

  validation {
    condition     = var.autoscaling_max_capacity >= var.autoscaling_min_capacity
    error_message = "The autoscaling_max_capacity must be at least autoscaling_min_capacity."
  }
}

variable "autoscaling_cpu_target" {
  description = "Average service CPU utilisation, in percent, that autoscaling aims for."
  type        = number
  default     = 60
}

variable "autoscaling_scale_in_cooldown" {
  description = "Seconds after a scale-in before another scale-in."
  type        = number
  default     = 300
}

variable "autoscaling_scale_out_cooldown" {
  description = "Seconds after a scale-out before another scale-out."
  type        = number
  default     = 60
}

# ---------------------------------------------------------------------------
# Database
# ---------------------------------------------------------------------------

variable "db_password" {
  description = "Master password of the Postgres instance. Supplied as TF_VAR_db_password from the encrypted secrets file; ephemeral, so it is never written to the plan or the state."
  type        = string
  sensitive   = true
  ephemeral   = true

  validation {
    # RDS rejects '/', '@', '"' and spaces in a master password.
    condition     = length(var.db_password) >= 16 && length(var.db_password) <= 128 && !can(regex("[/@\" ]", var.db_password))
    error_message = "The db_password must be 16-128 characters without '/', '@', '\"' or spaces."
  }
}

variable "db_app_password" {
  description = "Password of the service's own database role (data rights only). Supplied as TF_VAR_db_app_password from the encrypted secrets file; ephemeral, never in the plan or the state."
  type        = string
  sensitive   = true
  ephemeral   = true

  validation {
    condition     = length(var.db_app_password) >= 16 && length(var.db_app_password) <= 128 && !can(regex("[/@\" ]", var.db_app_password))
    error_message = "The db_app_password must be 16-128 characters without '/', '@', '\"' or spaces."
  }
}

variable "db_password_version" {
  description = "Bump this number whenever db_password or db_app_password changes: the passwords are write-only, so Terraform cannot see a new value by itself."
  type        = number
  default     = 1
}

variable "db_engine_version" {
  description = "Postgres engine version; a major version alone lets RDS pick and upgrade the minor one."
  type        = string
  default     = "15"
}

variable "db_instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.t4g.micro"
}

variable "db_allocated_storage" {
  description = "Initial storage in GiB."
  type        = number
  default     = 20
}

variable "db_max_allocated_storage" {
  description = "Upper limit of storage autoscaling in GiB (0 turns it off)."
  type        = number
  default     = 100
}

variable "db_name" {
  description = "Name of the application database; null derives it from app_name."
  type        = string
  default     = null
}

variable "db_username" {
  description = "Master user name of the Postgres instance."
  type        = string
  default     = "app"
}

variable "db_multi_az" {
  description = "Run a standby in a second availability zone."
  type        = bool
  default     = true
}

variable "db_performance_insights_enabled" {
  description = "Turn on Performance Insights (7 days, free tier), encrypted with the environment's key."
  type        = bool
  default     = true
}

variable "db_monitoring_interval" {
  description = "Seconds between enhanced-monitoring samples of the database host (0 turns it off; 1, 5, 10, 15, 30 or 60)."
  type        = number
  default     = 60

  validation {
    condition     = contains([0, 1, 5, 10, 15, 30, 60], var.db_monitoring_interval)
    error_message = "The db_monitoring_interval must be 0, 1, 5, 10, 15, 30 or 60."
  }
}

variable "db_backup_retention_days" {
  description = "Days of automated backups (0 turns them off)."
  type        = number
  default     = 7
}

variable "db_deletion_protection" {
  description = "Protect the database from deletion."
  type        = bool
  default     = true
}

variable "db_skip_final_snapshot" {
  description = "Skip the final snapshot when the database is destroyed."
  type        = bool
  default     = false
}

variable "db_apply_immediately" {
  description = "Apply database changes now instead of in the next maintenance window."
  type        = bool
  default     = false
}

variable "secret_recovery_window_days" {
  description = "Days a deleted DB secret can be restored (0 deletes at once, so a throwaway environment can be recreated under the same name)."
  type        = number
  default     = 7

  validation {
    condition     = var.secret_recovery_window_days == 0 || (var.secret_recovery_window_days >= 7 && var.secret_recovery_window_days <= 30)
    error_message = "The secret_recovery_window_days must be 0 or 7-30."
  }
}

# ---------------------------------------------------------------------------
# Bastion
# ---------------------------------------------------------------------------

variable "enable_bastion" {
  description = "Run a bastion host in a public subnet that can reach the database (reach it with SSM Session Manager, or SSH from bastion_ssh_cidrs)."
  type        = bool
  default     = false
}

variable "bastion_instance_type" {
  description = "Instance type of the bastion host."
  type        = string
  default     = "t3.micro"
}

variable "bastion_ami_id" {
  description = "AMI of the bastion; null uses the current Amazon Linux 2023 AMI from SSM."
  type        = string
  default     = null
}

variable "bastion_root_volume_size" {
  description = "Root volume of the bastion in GiB; at least the AMI's snapshot (8 GiB for Amazon Linux 2023)."
  type        = number
  default     = 10
}

variable "bastion_key_name" {
  description = "EC2 key pair for SSH to the bastion; null means SSM Session Manager only."
  type        = string
  default     = null
}

variable "bastion_ssh_cidrs" {
  description = "IPv4 CIDR blocks allowed to SSH to the bastion; empty opens no SSH port."
  type        = list(string)
  default     = []
}
