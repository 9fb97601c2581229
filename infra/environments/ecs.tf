resource "aws_cloudwatch_log_group" "app" {
  name              = "/ecs/${local.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

resource "aws_ecs_cluster" "main" {
  name = local.name

  setting {
    name  = "containerInsights"
    value = var.enable_container_insights ? "enabled" : "disabled"
  }
}

resource "aws_ecs_cluster_capacity_providers" "main" {
  cluster_name       = aws_ecs_cluster.main.name
  capacity_providers = local.is_fargate ? ["FARGATE", "FARGATE_SPOT"] : [aws_ecs_capacity_provider.ec2[0].name]

  default_capacity_provider_strategy {
    capacity_provider = local.is_fargate ? "FARGATE" : aws_ecs_capacity_provider.ec2[0].name
    weight            = 1
  }
}

locals {
  # Maps iterate in key order, so both lists come out sorted the way ECS
  # returns them and the task definition does not show a spurious diff.
  #
  # The ALB appends the client's address to X-Forwarded-For (one hop), so
  # the app's write rate limit reads the client from there and not from the
  # ALB's own address; extra_environment may change it (e.g. to 2 behind a
  # CDN) but not the settings after it.
  #
  # DB_SSLROOTCERT is the RDS CA bundle the image carries (docker/Dockerfile,
  # the rds-ca stages), which the app verifies the database's certificate
  # against.
  container_environment = merge({ TRUSTED_PROXY_HOPS = "1" }, var.extra_environment, {
    PORT           = tostring(var.container_port)
    RUST_LOG       = var.rust_log
    APP_ENV        = var.environment
    DB_SSLMODE     = var.db_sslmode
    DB_SSLROOTCERT = "/etc/ssl/certs/rds-global-bundle.pem"
  })

  # What the service's container and the migration task's have in common:
  # the app's image (each deploy pins it) and its logs.
  container_base = {
    name      = local.container_name
    image     = var.image
    essential = true

    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.app.name
        awslogs-region        = var.aws_region
        awslogs-stream-prefix = "app"
      }
    }
  }

  # "<secret arn>:<json key>:<version stage>:<version id>"; empty stage and
  # id mean AWSCURRENT, read when each task starts.
  container_secrets = {
    DB_HOST     = "host"
    DB_PORT     = "port"
    DB_NAME     = "dbname"
    DB_USER     = "username"
    DB_PASSWORD = "password"
  }
}

# Terraform owns the task definition's template: this revision, with
# everything but the release's image. A deploy (`cargo xtask deploy`)
# registers a revision of the same family from it, pinned to the image
# digest, and points the service at it through the ECS API; the service's
# task_definition is therefore ignored below, and `terraform plan` after a
# deploy shows no drift. A change here reaches the service with the next
# deploy, which copies the new template. var.image is only the template's
# placeholder image (the first deploy's, or any pushed one).
resource "aws_ecs_task_definition" "app" {
  family                   = local.name
  requires_compatibilities = [local.is_fargate ? "FARGATE" : "EC2"]
  network_mode             = "awsvpc"
  cpu                      = tostring(var.task_cpu)
  memory                   = tostring(var.task_memory)
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  container_definitions = jsonencode([
    merge(local.container_base, {
      portMappings = [
        {
          containerPort = var.container_port
          hostPort      = var.container_port
          protocol      = "tcp"
        },
      ]

      environment = [for name, value in local.container_environment : { name = name, value = value }]
      secrets = [
        for name, key in local.container_secrets : {
          name      = name
          valueFrom = "${aws_secretsmanager_secret.db_app.arn}:${key}::"
        }
      ]
    }),
  ])

  # Keep superseded revisions registered: the circuit breaker and a manual
  # rollback (update-service to the previous revision) need them, and tasks
  # of the old revision are still draining while the new one rolls out.
  skip_destroy = true

  # The execution role must be able to read the secret before any task of
  # this revision starts.
  depends_on = [aws_iam_role_policy.execution_secrets, aws_iam_role_policy_attachment.execution_managed]
}

# The template of the one-off migration task (`app migrate`), which a
# deploy copies with the release's image like the service's: the same
# container, but as the master user (the schema's owner, from its own
# secret, through its own execution role), and told which role the service
# runs as and that role's password, which `migrate` applies.
resource "aws_ecs_task_definition" "migration" {
  family                   = "${local.name}-migrate"
  requires_compatibilities = [local.is_fargate ? "FARGATE" : "EC2"]
  network_mode             = "awsvpc"
  cpu                      = tostring(var.task_cpu)
  memory                   = tostring(var.task_memory)
  execution_role_arn       = aws_iam_role.migration_execution.arn
  task_role_arn            = aws_iam_role.task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  container_definitions = jsonencode([
    merge(local.container_base, {
      command = ["migrate"]

      environment = [
        for name, value in merge(local.container_environment, { APP_DB_ROLE = local.db_app_role }) : { name = name, value = value }
      ]
      secrets = concat(
        [
          for name, key in local.container_secrets : {
            name      = name
            valueFrom = "${aws_secretsmanager_secret.db.arn}:${key}::"
          }
        ],
        [{ name = "APP_DB_ROLE_PASSWORD", valueFrom = "${aws_secretsmanager_secret.db_app.arn}:password::" }],
      )
    }),
  ])

  skip_destroy = true

  depends_on = [aws_iam_role_policy.migration_execution_secrets, aws_iam_role_policy_attachment.migration_execution_managed]
}

resource "aws_ecs_service" "app" {
  name            = local.name
  cluster         = aws_ecs_cluster.main.id
  task_definition = aws_ecs_task_definition.app.arn
  desired_count   = var.desired_count

  launch_type = local.is_fargate ? "FARGATE" : null

  dynamic "capacity_provider_strategy" {
    for_each = local.is_fargate ? [] : [aws_ecs_capacity_provider.ec2[0].name]

    content {
      capacity_provider = capacity_provider_strategy.value
      weight            = 1
    }
  }

  deployment_minimum_healthy_percent = var.deployment_minimum_healthy_percent
  deployment_maximum_percent         = var.deployment_maximum_percent
  health_check_grace_period_seconds  = var.health_check_grace_period_seconds
  enable_execute_command             = var.enable_execute_command
  propagate_tags                     = "SERVICE"
  wait_for_steady_state              = var.wait_for_steady_state

  deployment_controller {
    type = "ECS"
  }

  deployment_circuit_breaker {
    enable   = var.deployment_circuit_breaker_enabled
    rollback = var.deployment_circuit_breaker_rollback
  }

  network_configuration {
    subnets          = aws_subnet.private[*].id
    security_groups  = [aws_security_group.app.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.app.arn
    container_name   = local.container_name
    container_port   = var.container_port
  }

  # desired_count only seeds a new service: afterwards autoscaling (or an
  # operator) owns it, and Terraform resetting it on every deploy would undo
  # a scale-out under load. Change the running count with the autoscaling
  # bounds instead. task_definition belongs to the deploy tool (see the task
  # definition above).
  lifecycle {
    ignore_changes = [desired_count, task_definition]
  }

  depends_on = [
    aws_lb_listener.http,
    aws_lb_listener.https,
    aws_ecs_cluster_capacity_providers.main,
    aws_iam_role_policy.execution_secrets,
  ]
}
