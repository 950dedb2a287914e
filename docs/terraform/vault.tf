# Strata vault onboarding: the vault bucket with Object Lock and the four
# least-privilege roles. Apply in the dedicated vault account.
# See docs/operations.md.

terraform {
  required_providers {
    aws = { source = "hashicorp/aws", version = ">= 5.0" }
  }
}

variable "bucket" { type = string }
variable "prefix" {
  type    = string
  default = "prod"
}
variable "retention_days" {
  type    = number
  default = 35
}
variable "ingest_principals" { type = list(string) }
variable "verify_principals" {
  type    = list(string)
  default = []
}
variable "restore_principals" {
  type    = list(string)
  default = []
}
variable "retention_admin_principals" {
  type    = list(string)
  default = []
}

resource "aws_s3_bucket" "vault" {
  bucket              = var.bucket
  object_lock_enabled = true
}

resource "aws_s3_bucket_versioning" "vault" {
  bucket = aws_s3_bucket.vault.id
  versioning_configuration { status = "Enabled" }
}

resource "aws_s3_bucket_object_lock_configuration" "vault" {
  bucket = aws_s3_bucket.vault.id
  rule {
    default_retention {
      mode = "COMPLIANCE"
      days = var.retention_days
    }
  }
}

resource "aws_s3_bucket_public_access_block" "vault" {
  bucket                  = aws_s3_bucket.vault.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "vault" {
  bucket = aws_s3_bucket.vault.id
  rule {
    apply_server_side_encryption_by_default { sse_algorithm = "AES256" }
  }
}

data "aws_iam_policy_document" "bucket" {
  statement {
    sid       = "TlsOnly"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.vault.arn, "${aws_s3_bucket.vault.arn}/*"]
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
  statement {
    sid       = "CreateOnlyWrites"
    effect    = "Deny"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.vault.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Null"
      variable = "s3:if-none-match"
      values   = ["true"]
    }
  }
}

resource "aws_s3_bucket_policy" "vault" {
  bucket = aws_s3_bucket.vault.id
  policy = data.aws_iam_policy_document.bucket.json
}

locals {
  objects = "${aws_s3_bucket.vault.arn}/${var.prefix}/*"
  list_actions = ["s3:ListBucket", "s3:ListBucketVersions", "s3:GetBucketVersioning", "s3:GetBucketObjectLockConfiguration"]
  roles = {
    ingest = {
      principals = var.ingest_principals
      allow      = ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "s3:PutObjectRetention"]
      deny       = ["s3:DeleteObject", "s3:DeleteObjectVersion", "s3:BypassGovernanceRetention"]
    }
    verify = {
      principals = var.verify_principals
      allow      = ["s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectRetention", "s3:GetObjectLegalHold"]
      deny       = ["s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:BypassGovernanceRetention"]
    }
    restore = {
      principals = var.restore_principals
      allow      = ["s3:GetObject", "s3:GetObjectVersion"]
      deny       = ["s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:BypassGovernanceRetention"]
    }
    retention-admin = {
      principals = var.retention_admin_principals
      allow      = ["s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectRetention", "s3:PutObjectRetention", "s3:DeleteObjectVersion"]
      deny       = ["s3:BypassGovernanceRetention"]
    }
  }
}

data "aws_iam_policy_document" "trust" {
  for_each = { for k, v in local.roles : k => v if length(v.principals) > 0 }
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "AWS"
      identifiers = each.value.principals
    }
  }
}

data "aws_iam_policy_document" "role" {
  for_each = { for k, v in local.roles : k => v if length(v.principals) > 0 }
  statement {
    effect    = "Allow"
    actions   = each.value.allow
    resources = [local.objects]
  }
  statement {
    effect    = "Allow"
    actions   = local.list_actions
    resources = [aws_s3_bucket.vault.arn]
  }
  statement {
    effect    = "Deny"
    actions   = each.value.deny
    resources = [aws_s3_bucket.vault.arn, "${aws_s3_bucket.vault.arn}/*"]
  }
}

resource "aws_iam_role" "strata" {
  for_each           = data.aws_iam_policy_document.trust
  name               = "strata-${each.key}"
  assume_role_policy = each.value.json
}

resource "aws_iam_role_policy" "strata" {
  for_each = data.aws_iam_policy_document.role
  name     = "strata-${each.key}"
  role     = aws_iam_role.strata[each.key].id
  policy   = each.value.json
}

output "vault_url" { value = "s3://${aws_s3_bucket.vault.bucket}/${var.prefix}" }
output "roles" { value = { for k, r in aws_iam_role.strata : k => r.arn } }
