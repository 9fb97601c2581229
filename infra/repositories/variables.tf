variable "app_name" {
  description = "Name of the application; names the ECR repository and the DynamoDB tables."
  type        = string
  default     = "guestbook"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.app_name))
    error_message = "The app_name must be 3-32 characters of lower-case letters, digits and dashes, starting with a letter."
  }
}

variable "aws_region" {
  description = "AWS region of the shared stage."
  type        = string
  default     = "us-east-1"
}

variable "aws_max_retries" {
  description = "Maximum retries of one AWS API call; null keeps the provider default (25). Tests against moto set 2 so an HTTP 500 fails fast."
  type        = number
  default     = null
}

variable "untagged_image_expiry_days" {
  description = "Untagged images (superseded manifests, failed pushes) are expired this many days after push."
  type        = number
  default     = 7

  validation {
    condition     = var.untagged_image_expiry_days >= 1
    error_message = "The untagged_image_expiry_days must be at least 1."
  }
}

variable "branch_images_to_keep" {
  description = "Only the most recent N images tagged `branch-*` are kept."
  type        = number
  default     = 20

  validation {
    condition     = var.branch_images_to_keep >= 1
    error_message = "The branch_images_to_keep must be at least 1."
  }
}

variable "force_delete_repository" {
  description = "Let `terraform destroy` delete the repository even when it still holds images. Keep false outside throwaway accounts."
  type        = bool
  default     = false
}

variable "deploy_lock_ttl_attribute" {
  description = "Attribute of the deploy-lock table holding an epoch-seconds expiry; DynamoDB TTL removes stale locks left by a crashed deploy."
  type        = string
  default     = "expires_at"
}

variable "pull_account_ids" {
  description = "Other AWS accounts whose environments pull images from this repository (adds a repository policy); empty for a single-account setup."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for id in var.pull_account_ids : can(regex("^[0-9]{12}$", id))])
    error_message = "Each pull_account_ids entry must be a 12-digit AWS account id."
  }
}

variable "github_repository" {
  description = "The GitHub repository (`owner/name`) whose workflows may deploy through OIDC; empty creates no OIDC provider and no deploy role. The workspace's Cargo.toml `repository` names it."
  type        = string
  default     = ""

  validation {
    condition     = var.github_repository == "" || can(regex("^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", var.github_repository))
    error_message = "The github_repository must be `owner/name` (no wildcard), or empty to disable the deploy role."
  }
}

variable "github_environments" {
  description = "GitHub environments whose jobs may assume the deploy role (the ci deploy job's, XTASK_CI_DEPLOY_ENV, and every promote target hosted in this account)."
  type        = list(string)
  default     = ["dev"]

  validation {
    condition     = alltrue([for name in var.github_environments : can(regex("^[A-Za-z0-9_.-]+$", name))])
    error_message = "Each github_environments entry must be an environment name, without wildcards."
  }
}

variable "create_github_oidc_provider" {
  description = "Create the account's OIDC provider for token.actions.githubusercontent.com; false when the account already has one (there can be only one per URL)."
  type        = bool
  default     = true
}

variable "terraform_state_bucket" {
  description = "The S3 state bucket (deploy.toml `state_bucket`); the deploy role may read and write the app's keys in it. Required with github_repository."
  type        = string
  default     = ""

  validation {
    condition     = var.github_repository == "" || var.terraform_state_bucket != ""
    error_message = "Set terraform_state_bucket (deploy.toml state_bucket) when github_repository is set: a deploy reads the Terraform state."
  }
}

variable "github_deploy_policy_arns" {
  description = "Managed policies also attached to the deploy role, for deploys that apply infrastructure changes (the role alone can only roll out releases)."
  type        = list(string)
  default     = []
}
