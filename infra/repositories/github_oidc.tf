# GitHub Actions' way into this account: OIDC instead of stored access keys.
# A workflow job asks GitHub for a token naming its repository, ref and
# environment; STS trades it for short-lived credentials of the deploy role
# only when the trust policy below matches. Nothing is created while
# github_repository is empty.

locals {
  github_enabled    = var.github_repository != ""
  github_oidc_host  = "token.actions.githubusercontent.com"
  account_id        = data.aws_caller_identity.current.account_id
  account_arn_infix = "${data.aws_partition.current.partition}:iam::${local.account_id}"

  # Known before apply (an account holds one provider per URL, so its ARN is
  # fixed): a plan shows the exact trust policy, also when the provider
  # already exists and create_github_oidc_provider is false.
  github_oidc_provider_arn = "arn:${local.account_arn_infix}:oidc-provider/${local.github_oidc_host}"

  # The `sub` claims that may assume the role, exactly (no wildcard): a job
  # on main without an environment, and a job in one of the deploy
  # environments (GitHub then names the environment, not the ref).
  github_deploy_subjects = concat(
    ["repo:${var.github_repository}:ref:refs/heads/main"],
    [for environment in var.github_environments : "repo:${var.github_repository}:environment:${environment}"],
  )

  # What the deploy tool touches at run time, named as Terraform names it in
  # infra/environments (`<app>-<env>` clusters, services, families, roles
  # and `/ecs/<app>-<env>` log groups).
  app_resources = "${data.aws_partition.current.partition}:ecs:${var.aws_region}:${local.account_id}"
}

data "aws_caller_identity" "current" {}

resource "aws_iam_openid_connect_provider" "github" {
  count = local.github_enabled && var.create_github_oidc_provider ? 1 : 0

  url            = "https://${local.github_oidc_host}"
  client_id_list = ["sts.amazonaws.com"]
}

data "aws_iam_policy_document" "github_deploy_trust" {
  #checkov:skip=CKV_AWS_358:false positive: checkov cannot resolve local.github_deploy_subjects, which are exact repo:OWNER/REPO:ref:refs/heads/main and repo:OWNER/REPO:environment:NAME subjects (StringEquals, no wildcard; see xtask/tests/oidc.rs)
  count = local.github_enabled ? 1 : 0

  statement {
    sid     = "GitHubActionsDeploy"
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [local.github_oidc_provider_arn]
    }

    # The token was minted for STS (configure-aws-credentials' audience).
    condition {
      test     = "StringEquals"
      variable = "${local.github_oidc_host}:aud"
      values   = ["sts.amazonaws.com"]
    }

    # Only this repository's main branch and deploy environments: a pull
    # request's token says `repo:<owner>/<repo>:pull_request` and matches
    # neither.
    condition {
      test     = "StringEquals"
      variable = "${local.github_oidc_host}:sub"
      values   = local.github_deploy_subjects
    }
  }
}

resource "aws_iam_role" "github_deploy" {
  count = local.github_enabled ? 1 : 0

  name                 = "${var.app_name}-github-deploy"
  description          = "Assumed by GitHub Actions (OIDC) to deploy ${var.app_name} from ${var.github_repository}."
  assume_role_policy   = data.aws_iam_policy_document.github_deploy_trust[0].json
  max_session_duration = 3600

  # The provider must exist before a token can be traded.
  depends_on = [aws_iam_openid_connect_provider.github]
}

data "aws_iam_policy_document" "github_deploy" {
  count = local.github_enabled ? 1 : 0

  # Not resource-scoped by ECR: the login token is account-wide.
  statement {
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid = "EcrPushAndInspect"
    actions = [
      "ecr:BatchCheckLayerAvailability",
      "ecr:BatchGetImage",
      "ecr:CompleteLayerUpload",
      "ecr:DescribeImageScanFindings",
      "ecr:DescribeImages",
      "ecr:DescribeRepositories",
      "ecr:GetDownloadUrlForLayer",
      "ecr:InitiateLayerUpload",
      "ecr:ListImages",
      "ecr:PutImage",
      "ecr:StartImageScan",
      "ecr:UploadLayerPart",
    ]
    resources = [aws_ecr_repository.app.arn]
  }

  statement {
    sid = "ReleaseLedgerAndLock"
    actions = [
      "dynamodb:DeleteItem",
      "dynamodb:DescribeTable",
      "dynamodb:GetItem",
      "dynamodb:PutItem",
      "dynamodb:Query",
      "dynamodb:UpdateItem",
    ]
    resources = [aws_dynamodb_table.releases.arn, aws_dynamodb_table.deploy_locks.arn]
  }

  # Task definitions are registered and described without a resource ARN
  # (ECS supports none for these actions).
  statement {
    sid = "EcsTaskDefinitions"
    actions = [
      "ecs:DescribeTaskDefinition",
      "ecs:ListTaskDefinitions",
      "ecs:RegisterTaskDefinition",
    ]
    resources = ["*"]
  }

  statement {
    sid = "EcsAppServicesAndTasks"
    actions = [
      "ecs:DescribeClusters",
      "ecs:DescribeServices",
      "ecs:DescribeTasks",
      "ecs:ListTasks",
      "ecs:RunTask",
      "ecs:StopTask",
      "ecs:TagResource",
      "ecs:UpdateService",
    ]
    resources = [
      "arn:${local.app_resources}:cluster/${var.app_name}-*",
      "arn:${local.app_resources}:service/${var.app_name}-*/*",
      "arn:${local.app_resources}:task/${var.app_name}-*/*",
      "arn:${local.app_resources}:task-definition/${var.app_name}-*:*",
      "arn:${local.app_resources}:container-instance/${var.app_name}-*/*",
    ]
  }

  # A new revision runs with the environment's task and execution roles.
  statement {
    sid       = "PassAppTaskRoles"
    actions   = ["iam:PassRole"]
    resources = ["arn:${local.account_arn_infix}:role/${var.app_name}-*"]

    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ecs-tasks.amazonaws.com"]
    }
  }

  # The migration task's log, shown when it fails.
  statement {
    sid = "AppLogs"
    actions = [
      "logs:DescribeLogStreams",
      "logs:FilterLogEvents",
      "logs:GetLogEvents",
    ]
    resources = [
      "arn:${data.aws_partition.current.partition}:logs:${var.aws_region}:${local.account_id}:log-group:/ecs/${var.app_name}-*",
      "arn:${data.aws_partition.current.partition}:logs:${var.aws_region}:${local.account_id}:log-group:/ecs/${var.app_name}-*:*",
    ]
  }

  # The app's Terraform states (`<app>/...` keys and their lock files): the
  # deploy reads the environments' outputs and records what it applied.
  statement {
    sid       = "TerraformStateList"
    actions   = ["s3:ListBucket"]
    resources = ["arn:${data.aws_partition.current.partition}:s3:::${var.terraform_state_bucket}"]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.app_name}/*"]
    }
  }

  statement {
    sid       = "TerraformStateObjects"
    actions   = ["s3:DeleteObject", "s3:GetObject", "s3:PutObject"]
    resources = ["arn:${data.aws_partition.current.partition}:s3:::${var.terraform_state_bucket}/${var.app_name}/*"]
  }
}

resource "aws_iam_role_policy" "github_deploy" {
  count = local.github_enabled ? 1 : 0

  name   = "deploy"
  role   = aws_iam_role.github_deploy[0].id
  policy = data.aws_iam_policy_document.github_deploy[0].json
}

# A deploy that finds the infrastructure changed applies it first; that
# needs whatever the environment's resources need (VPC, ALB, RDS, IAM...),
# which the team grants here deliberately.
resource "aws_iam_role_policy_attachment" "github_deploy_extra" {
  for_each = local.github_enabled ? toset(var.github_deploy_policy_arns) : toset([])

  role       = aws_iam_role.github_deploy[0].name
  policy_arn = each.value
}
