# One root module for every AWS environment; env/<name>.tfvars holds what
# differs between them and each has its own state key.

data "aws_availability_zones" "available" {
  #checkov:skip=CKV_AWS_394:only the first two zones are used (slice below) and availability_zones pins them by name; a new zone appended by AWS changes nothing

  state = "available"
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  name = "${var.app_name}-${var.environment}"
  azs  = length(var.availability_zones) > 0 ? var.availability_zones : slice(data.aws_availability_zones.available.names, 0, 2)

  # The container is named after the app so the deploy tool and one-off
  # tasks can address it without knowing the environment.
  container_name = var.app_name

  # Postgres identifiers may not contain dashes.
  db_name = coalesce(var.db_name, replace(var.app_name, "-", "_"))
  db_port = 5432

  is_fargate = var.capacity == "fargate"
}
