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
  #checkov:skip=CKV2_AWS_62:nothing consumes events of state writes; the access logs record every request
  #checkov:skip=CKV_AWS_144:versioning already keeps every state version; a second region's replica is left to the account's backup plan
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
      sse_algorithm = "aws:kms"
    }
    # One data key per bucket instead of a KMS request per object.
    bucket_key_enabled = true
  }
}

# Superseded state versions are kept for 90 days (time to notice and undo a
# bad apply), then expire; failed multipart uploads are cleaned up.
resource "aws_s3_bucket_lifecycle_configuration" "state" {
  bucket = aws_s3_bucket.state.id

  rule {
    id     = "expire-old-state-versions"
    status = "Enabled"

    filter {}

    noncurrent_version_expiration {
      noncurrent_days = 90
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.state]
}

# Server access logs of the state bucket: who read or wrote which state.
resource "aws_s3_bucket_logging" "state" {
  bucket        = aws_s3_bucket.state.id
  target_bucket = aws_s3_bucket.access_logs.id
  target_prefix = "state/"
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

# The access logs' own bucket. S3 delivers server access logs only into a
# bucket encrypted with SSE-S3, so it cannot use KMS.
resource "aws_s3_bucket" "access_logs" {
  #checkov:skip=CKV_AWS_18:the access-log bucket itself; logging it would log the log deliveries
  #checkov:skip=CKV_AWS_145:S3 server access logs can only be delivered to an SSE-S3 (AES256) bucket
  #checkov:skip=CKV_AWS_144:access logs are an audit trail of this region's bucket; no replica
  #checkov:skip=CKV2_AWS_62:nothing consumes events of log deliveries
  bucket = "${var.bucket_name}-access-logs"

  lifecycle {
    prevent_destroy = true
  }
}

resource "aws_s3_bucket_versioning" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_public_access_block" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

# Access logs are kept for a year.
resource "aws_s3_bucket_lifecycle_configuration" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id

  rule {
    id     = "expire-access-logs"
    status = "Enabled"

    filter {}

    expiration {
      days = 365
    }

    noncurrent_version_expiration {
      noncurrent_days = 30
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.access_logs]
}

# The S3 logging service writes the logs (bucket-owner-enforced ownership,
# so a bucket policy grants it instead of an ACL).
data "aws_iam_policy_document" "access_logs" {
  statement {
    sid       = "S3ServerAccessLogsDelivery"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.access_logs.arn}/state/*"]

    principals {
      type        = "Service"
      identifiers = ["logging.s3.amazonaws.com"]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = [aws_s3_bucket.state.arn]
    }
  }

  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.access_logs.arn,
      "${aws_s3_bucket.access_logs.arn}/*",
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

resource "aws_s3_bucket_policy" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  policy = data.aws_iam_policy_document.access_logs.json

  depends_on = [aws_s3_bucket_public_access_block.access_logs]
}

output "bucket" {
  description = "State bucket name."
  value       = aws_s3_bucket.state.bucket
}
