terraform {
  required_version = ">= 1.11"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
  }

  # Partial configuration: bucket, key, region and use_lockfile are passed by
  # `cargo xtask infra` as `terraform init -backend-config=...`, one state key
  # per environment (see infra/backend/*.s3.tfbackend and infra/README.md).
  backend "s3" {}
}

# A plain production provider: tests point it at moto through the standard
# AWS_ENDPOINT_URL variable, never through settings here.
provider "aws" {
  region      = var.aws_region
  max_retries = var.aws_max_retries

  default_tags {
    tags = {
      App         = var.app_name
      Environment = var.environment
      ManagedBy   = "terraform"
    }
  }
}
