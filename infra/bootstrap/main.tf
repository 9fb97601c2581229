# Creates the S3 bucket that holds the Terraform state of one account. Run
# once per account with local state (it cannot keep its state in the bucket
# it is creating):
#   terraform init && terraform apply -var bucket_name=tfstate-<env>
# Locking uses S3 conditional writes (use_lockfile), so no DynamoDB table.

terraform {
  required_version = ">= 1.11"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
  }
}

provider "aws" {
  region      = var.aws_region
  max_retries = var.aws_max_retries

  default_tags {
    tags = {
      Stage     = "bootstrap"
      ManagedBy = "terraform"
    }
  }
}

variable "bucket_name" {
  description = "Name of the state bucket, as in infra/backend/<env>.s3.tfbackend."
  type        = string
}

variable "aws_region" {
  description = "Region of the state bucket."
  type        = string
  default     = "us-east-1"
}

variable "aws_max_retries" {
  description = "Maximum retries of one AWS API call; null keeps the provider default."
  type        = number
  default     = null
}

resource "aws_s3_bucket" "state" {
  bucket = var.bucket_name

  lifecycle {
    prevent_destroy = true
  }
}

# Every state write is a new object version: a broken apply can be undone by
# restoring the previous version.
resource "aws_s3_bucket_versioning" "state" {
  bucket = aws_s3_bucket.state.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "state" {
  bucket = aws_s3_bucket.state.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_public_access_block" "state" {
  bucket = aws_s3_bucket.state.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

data "aws_iam_policy_document" "state_tls_only" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.state.arn,
      "${aws_s3_bucket.state.arn}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "state" {
  bucket = aws_s3_bucket.state.id
  policy = data.aws_iam_policy_document.state_tls_only.json

  depends_on = [aws_s3_bucket_public_access_block.state]
}

output "bucket" {
  description = "State bucket name."
  value       = aws_s3_bucket.state.bucket
}
