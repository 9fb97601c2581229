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
