# The shared stage: things every environment uses, applied once per AWS
# account that hosts them (not once per environment).

resource "aws_ecr_repository" "app" {
  #checkov:skip=CKV_AWS_136:images are encrypted at rest (AES256); the encryption type cannot change in place, and switching would replace the repository with every released image
  name = var.app_name

  # Tags are never moved: a deploy always names an image by a tag that meant
  # the same bytes when it was tested (and in practice by digest).
  image_tag_mutability = "IMMUTABLE"
  force_delete         = var.force_delete_repository

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "AES256"
  }
}

resource "aws_ecr_lifecycle_policy" "app" {
  repository = aws_ecr_repository.app.name

  policy = jsonencode({
    rules = [
      {
        rulePriority = 1
        description  = "Expire untagged images after ${var.untagged_image_expiry_days} days"
        selection = {
          tagStatus   = "untagged"
          countType   = "sinceImagePushed"
          countUnit   = "days"
          countNumber = var.untagged_image_expiry_days
        }
        action = { type = "expire" }
      },
      {
        rulePriority = 2
        description  = "Keep only the last ${var.branch_images_to_keep} branch-* images"
        selection = {
          tagStatus     = "tagged"
          tagPrefixList = ["branch-"]
          countType     = "imageCountMoreThan"
          countNumber   = var.branch_images_to_keep
        }
        action = { type = "expire" }
      },
    ]
  })
}

# Environments in other accounts (e.g. preprod and prod) pull the very
# images that were tested, by digest, from this one repository.
data "aws_iam_policy_document" "cross_account_pull" {
  count = length(var.pull_account_ids) > 0 ? 1 : 0

  statement {
    sid = "CrossAccountPull"
    actions = [
      "ecr:BatchCheckLayerAvailability",
      "ecr:BatchGetImage",
      "ecr:GetDownloadUrlForLayer",
    ]

    principals {
      type        = "AWS"
      identifiers = [for id in var.pull_account_ids : "arn:${data.aws_partition.current.partition}:iam::${id}:root"]
    }
  }
}

data "aws_partition" "current" {}

resource "aws_ecr_repository_policy" "cross_account_pull" {
  count = length(var.pull_account_ids) > 0 ? 1 : 0

  repository = aws_ecr_repository.app.name
  policy     = data.aws_iam_policy_document.cross_account_pull[0].json
}

# Release ledger: one item per deploy attempt, in every environment. The
# range key is an RFC 3339 UTC timestamp, so a Query on one environment
# returns its history in order (ScanIndexForward=false for the newest).
resource "aws_dynamodb_table" "releases" {
  #checkov:skip=CKV_AWS_119:encrypted at rest with the AWS-managed key; the deploy history holds no secret that a customer key would be worth its key-policy upkeep for
  name         = "${var.app_name}-releases"
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "environment"
  range_key    = "deployed_at"

  attribute {
    name = "environment"
    type = "S"
  }

  attribute {
    name = "deployed_at"
    type = "S"
  }

  # The ledger is the audit trail of what ran where; keep it recoverable.
  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled = true
  }
}

# One item per environment while a deploy holds it (conditional PutItem with
# attribute_not_exists(environment)). TTL only cleans up locks a crashed
# deploy left behind; the deploy tool still checks expires_at itself because
# TTL deletion can lag by hours.
resource "aws_dynamodb_table" "deploy_locks" {
  #checkov:skip=CKV_AWS_119:encrypted at rest with the AWS-managed key; lock items hold no secret
  #checkov:skip=CKV_AWS_28:holds only short-lived lock items that TTL removes; there is nothing to recover
  name         = "${var.app_name}-deploy-locks"
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "environment"

  attribute {
    name = "environment"
    type = "S"
  }

  ttl {
    attribute_name = var.deploy_lock_ttl_attribute
    enabled        = true
  }

  server_side_encryption {
    enabled = true
  }
}
