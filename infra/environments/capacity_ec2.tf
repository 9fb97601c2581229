# capacity = "ec2": tasks run on container instances of an Auto Scaling group
# in the private subnets, scaled by ECS managed scaling through a capacity
# provider. Nothing here exists with the default capacity = "fargate".

locals {
  ec2_count = local.is_fargate ? 0 : 1
}

data "aws_ssm_parameter" "ecs_ami" {
  count = local.ec2_count == 1 && var.ec2_ami_id == null ? 1 : 0

  name = "/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id"
}

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "ecs_instance" {
  count = local.ec2_count

  name               = "${local.name}-ecs-instance"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_role_policy_attachment" "ecs_instance" {
  for_each = local.ec2_count == 1 ? toset([
    "service-role/AmazonEC2ContainerServiceforEC2Role",
    "AmazonSSMManagedInstanceCore",
  ]) : toset([])

  role       = aws_iam_role.ecs_instance[0].name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/${each.value}"
}

resource "aws_iam_instance_profile" "ecs_instance" {
  count = local.ec2_count

  name = "${local.name}-ecs-instance"
  role = aws_iam_role.ecs_instance[0].name
}

# Tasks use awsvpc and get their own ENIs in the app security group; the
# instance itself only talks outwards (ECS agent, image pulls, SSM).
resource "aws_security_group" "ecs_instance" {
  count = local.ec2_count

  name        = "${local.name}-ecs-instance"
  description = "ECS container instances of ${local.name}"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "${local.name}-ecs-instance" }
}

resource "aws_vpc_security_group_egress_rule" "ecs_instance_all" {
  count = local.ec2_count

  security_group_id = aws_security_group.ecs_instance[0].id
  description       = "Outbound (ECS, ECR, SSM)"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_launch_template" "ecs" {
  count = local.ec2_count

  name_prefix            = "${local.name}-ecs-"
  image_id               = coalesce(var.ec2_ami_id, try(nonsensitive(data.aws_ssm_parameter.ecs_ami[0].value), null))
  instance_type          = var.ec2_instance_type
  vpc_security_group_ids = [aws_security_group.ecs_instance[0].id]

  iam_instance_profile {
    arn = aws_iam_instance_profile.ecs_instance[0].arn
  }

  # IMDSv2 only. Tasks are kept away from the instance's credentials by
  # ECS_AWSVPC_BLOCK_IMDS below; they use the task role instead.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  user_data = base64encode(<<-EOT
    #!/bin/bash
    cat >> /etc/ecs/ecs.config <<'CONFIG'
    ECS_CLUSTER=${local.name}
    ECS_AWSVPC_BLOCK_IMDS=true
    ECS_ENABLE_CONTAINER_METADATA=true
    CONFIG
  EOT
  )

  tag_specifications {
    resource_type = "instance"
    tags = {
      Name        = "${local.name}-ecs"
      App         = var.app_name
      Environment = var.environment
    }
  }
}

resource "aws_autoscaling_group" "ecs" {
  count = local.ec2_count

  name                = "${local.name}-ecs"
  vpc_zone_identifier = aws_subnet.private[*].id
  min_size            = var.ec2_min_size
  max_size            = var.ec2_max_size

  # ECS managed termination protection only drains instances it has
  # unprotected, so new instances start protected.
  protect_from_scale_in = true

  launch_template {
    id      = aws_launch_template.ecs[0].id
    version = aws_launch_template.ecs[0].latest_version
  }

  tag {
    key                 = "AmazonECSManaged"
    value               = "true"
    propagate_at_launch = true
  }

  # ECS managed scaling sets the desired capacity.
  lifecycle {
    ignore_changes = [desired_capacity]
  }
}

resource "aws_ecs_capacity_provider" "ec2" {
  count = local.ec2_count

  name = "${local.name}-ec2"

  auto_scaling_group_provider {
    auto_scaling_group_arn         = aws_autoscaling_group.ecs[0].arn
    managed_termination_protection = "ENABLED"

    managed_scaling {
      status          = "ENABLED"
      target_capacity = 100
    }
  }
}
