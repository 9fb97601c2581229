resource "aws_db_subnet_group" "main" {
  name       = local.name
  subnet_ids = aws_subnet.private[*].id
}

# TLS is mandatory (the app's sqlx connects with sslmode=prefer, so it
# upgrades), and DDL plus statements slower than a second are logged and
# exported to CloudWatch Logs.
resource "aws_db_parameter_group" "main" {
  name_prefix = "${local.name}-"
  description = "Postgres settings of ${local.name}"
  family      = "postgres${split(".", var.db_engine_version)[0]}"

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }

  parameter {
    name  = "log_statement"
    value = "ddl"
  }

  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }

  # The instance switches to a new group (a new major version's family)
  # before the old one is deleted.
  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_db_instance" "main" {
  identifier     = local.name
  engine         = "postgres"
  engine_version = var.db_engine_version
  instance_class = var.db_instance_class
  port           = local.db_port

  db_name  = local.db_name
  username = var.db_username
  # Write-only: the password reaches the RDS API but never the plan or the
  # state. Terraform cannot diff it, hence db_password_version.
  password_wo         = var.db_password
  password_wo_version = var.db_password_version

  allocated_storage     = var.db_allocated_storage
  max_allocated_storage = var.db_max_allocated_storage
  storage_type          = "gp3"
  storage_encrypted     = true

  parameter_group_name = aws_db_parameter_group.main.name

  # IAM authentication is available next to the password (short-lived
  # tokens for people and tools); the app itself keeps the password.
  iam_database_authentication_enabled = true
  enabled_cloudwatch_logs_exports     = ["postgresql", "upgrade"]

  performance_insights_enabled          = var.db_performance_insights_enabled
  performance_insights_kms_key_id       = var.db_performance_insights_enabled ? aws_kms_key.main.arn : null
  performance_insights_retention_period = var.db_performance_insights_enabled ? 7 : null

  monitoring_interval = var.db_monitoring_interval
  monitoring_role_arn = var.db_monitoring_interval > 0 ? aws_iam_role.rds_monitoring[0].arn : null

  db_subnet_group_name   = aws_db_subnet_group.main.name
  vpc_security_group_ids = [aws_security_group.db.id]
  publicly_accessible    = false
  multi_az               = var.db_multi_az

  backup_retention_period    = var.db_backup_retention_days
  auto_minor_version_upgrade = true
  copy_tags_to_snapshot      = true
  deletion_protection        = var.db_deletion_protection
  skip_final_snapshot        = var.db_skip_final_snapshot
  final_snapshot_identifier  = var.db_skip_final_snapshot ? null : "${local.name}-final"
  apply_immediately          = var.db_apply_immediately
}

resource "aws_secretsmanager_secret" "db" {
  #checkov:skip=CKV2_AWS_57:the password is write-only in Terraform and rotated by bumping db_password_version with the encrypted secrets file; a rotation Lambda would fight that
  name                    = "${local.name}/db"
  description             = "Postgres connection of ${local.name} (username, password, host, port, dbname)"
  recovery_window_in_days = var.secret_recovery_window_days
  kms_key_id              = aws_kms_key.main.arn
}

locals {
  # Everything in the secret except the password. It is not secret, so a
  # hash of it may sit in the state.
  db_connection = {
    engine   = "postgres"
    username = var.db_username
    host     = aws_db_instance.main.address
    # A string like every other value: ECS injects one JSON key into one
    # environment variable, and string values are the documented case.
    port   = tostring(local.db_port)
    dbname = local.db_name
  }
}

resource "aws_secretsmanager_secret_version" "db" {
  secret_id = aws_secretsmanager_secret.db.id

  # Write-only like the RDS password. Terraform rewrites a write-only value
  # only when its version number changes, so the version combines
  # db_password_version with a hash of the non-secret fields: a new password
  # or a new host, user or database name both produce a new secret version.
  secret_string_wo = jsonencode(merge(local.db_connection, { password = var.db_password }))
  secret_string_wo_version = (
    var.db_password_version * 16777216 +
    parseint(substr(sha256(jsonencode(local.db_connection)), 0, 6), 16)
  )
}

# The service's own login: data rights only, no DDL. `app migrate`, run as
# the master user (the schema's owner), creates or updates this role with
# this password (APP_DB_ROLE, APP_DB_ROLE_PASSWORD) on every deploy that
# migrates; the service's tasks read only this secret, never the master's.
locals {
  db_app_role       = "${replace(var.app_name, "-", "_")}_app"
  db_app_connection = merge(local.db_connection, { username = local.db_app_role })
}

resource "aws_secretsmanager_secret" "db_app" {
  #checkov:skip=CKV2_AWS_57:the password is write-only in Terraform and rotated by bumping db_password_version with the encrypted secrets file; the next migration applies it to the role
  name                    = "${local.name}/db-app"
  description             = "Postgres connection of ${local.name}'s service role (data rights only): username, password, host, port, dbname"
  recovery_window_in_days = var.secret_recovery_window_days
  kms_key_id              = aws_kms_key.main.arn
}

resource "aws_secretsmanager_secret_version" "db_app" {
  secret_id        = aws_secretsmanager_secret.db_app.id
  secret_string_wo = jsonencode(merge(local.db_app_connection, { password = var.db_app_password }))
  secret_string_wo_version = (
    var.db_password_version * 16777216 +
    parseint(substr(sha256(jsonencode(local.db_app_connection)), 0, 6), 16)
  )
}

# Enhanced monitoring: RDS publishes OS metrics through this role.
data "aws_iam_policy_document" "rds_monitoring_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["monitoring.rds.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "rds_monitoring" {
  count = var.db_monitoring_interval > 0 ? 1 : 0

  name               = "${local.name}-rds-monitoring"
  assume_role_policy = data.aws_iam_policy_document.rds_monitoring_assume.json
}

resource "aws_iam_role_policy_attachment" "rds_monitoring" {
  count = var.db_monitoring_interval > 0 ? 1 : 0

  role       = aws_iam_role.rds_monitoring[0].name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}
