# Optional bastion for reaching the database by hand (psql, pg_dump). Use SSM
# Session Manager port forwarding; SSH opens only for bastion_ssh_cidrs.

data "aws_ssm_parameter" "bastion_ami" {
  count = var.enable_bastion && var.bastion_ami_id == null ? 1 : 0

  name = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
}

resource "aws_iam_role" "bastion" {
  count = var.enable_bastion ? 1 : 0

  name               = "${local.name}-bastion"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_role_policy_attachment" "bastion_ssm" {
  count = var.enable_bastion ? 1 : 0

  role       = aws_iam_role.bastion[0].name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "bastion" {
  count = var.enable_bastion ? 1 : 0

  name = "${local.name}-bastion"
  role = aws_iam_role.bastion[0].name
}

resource "aws_security_group" "bastion" {
  count = var.enable_bastion ? 1 : 0

  name        = "${local.name}-bastion"
  description = "Bastion of ${local.name}"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "${local.name}-bastion" }
}

resource "aws_vpc_security_group_ingress_rule" "bastion_ssh" {
  for_each = var.enable_bastion ? toset(var.bastion_ssh_cidrs) : toset([])

  security_group_id = aws_security_group.bastion[0].id
  description       = "SSH from ${each.value}"
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "bastion_all" {
  count = var.enable_bastion ? 1 : 0

  security_group_id = aws_security_group.bastion[0].id
  description       = "Outbound (SSM, database, package updates)"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_instance" "bastion" {
  count = var.enable_bastion ? 1 : 0

  ami                    = coalesce(var.bastion_ami_id, try(nonsensitive(data.aws_ssm_parameter.bastion_ami[0].value), null))
  instance_type          = var.bastion_instance_type
  subnet_id              = aws_subnet.public[0].id
  vpc_security_group_ids = [aws_security_group.bastion[0].id]
  iam_instance_profile   = aws_iam_instance_profile.bastion[0].name
  key_name               = var.bastion_key_name

  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required"
  }

  root_block_device {
    encrypted   = true
    volume_type = "gp3"
    volume_size = var.bastion_root_volume_size
  }

  tags = { Name = "${local.name}-bastion" }

  # A newer AMI in SSM must not replace a running bastion on every apply.
  lifecycle {
    ignore_changes = [ami]
  }
}

# A fixed public address (the public subnets do not hand out public IPs):
# the bastion needs one to reach SSM, and SSH allow-lists elsewhere can name it.
resource "aws_eip" "bastion" {
  count = var.enable_bastion ? 1 : 0

  domain   = "vpc"
  instance = aws_instance.bastion[0].id

  tags = { Name = "${local.name}-bastion" }

  depends_on = [aws_internet_gateway.main]
}
