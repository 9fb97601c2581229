# One customer-managed key per environment for the data it keeps at rest and
# can point at a key of its own: the CloudWatch log groups (app, VPC flow
# logs, WAF), the database secret and Performance Insights. A key of our own
# lets the key policy name exactly who may use it, and CloudTrail shows every
# use.

resource "aws_kms_key" "main" {
  description             = "Logs and secrets of ${local.name}"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_days
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "main" {
  name          = "alias/${local.name}"
  target_key_id = aws_kms_key.main.key_id
}

data "aws_iam_policy_document" "kms" {
  # In a key policy "*" means this key. The account keeps full control, so
  # IAM policies (the execution role's, an operator's) decide the rest.
  #checkov:skip=CKV_AWS_109:a key policy's resource "*" is the key itself; the account root must administer it or the key becomes unmanageable
  #checkov:skip=CKV_AWS_111:a key policy's resource "*" is the key itself; write access is granted to the account, then narrowed by IAM
  #checkov:skip=CKV_AWS_356:a key policy's resource "*" is the key itself, not every resource
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }

  # CloudWatch Logs encrypts the environment's log groups, and only log
  # groups of this account and region.
  statement {
    sid = "CloudWatchLogsEncrypt"
    actions = [
      "kms:Decrypt*",
      "kms:Describe*",
      "kms:Encrypt*",
      "kms:GenerateDataKey*",
      "kms:ReEncrypt*",
    ]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["logs.${var.aws_region}.amazonaws.com"]
    }

    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${data.aws_partition.current.partition}:logs:${var.aws_region}:${data.aws_caller_identity.current.account_id}:log-group:*"]
    }
  }
}
