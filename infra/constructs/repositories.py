"""Backup repositories: one S3 bucket per configured repository, and the KMS key their data and master
keys are protected with. Workers in production accounts reach them by name (see infra.topology)."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.config import Repository
from infra.nag import acknowledge
from infra.topology import REPOSITORY_KEY_ALIAS, RESULT_PREFIX, WORKER_ROLE_PREFIX, Place, repository_bucket_name

# What a worker does in a repository: read, write, list, and delete (prune, forget, lock expiry).
_WORKER_OBJECT_ACTIONS = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
_WORKER_KEY_ACTIONS = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"]


def _lock_retention(mode: str | None, days: int | None) -> s3.ObjectLockRetention | None:
    """The bucket's default Object Lock retention (config: object_lock_mode, object_lock_days)."""
    if not days:
        return None
    if mode == "COMPLIANCE":
        return s3.ObjectLockRetention.compliance(Duration.days(days))
    return s3.ObjectLockRetention.governance(Duration.days(days))


class Repositories(Construct):
    """Buckets (KMS-encrypted, TLS-only, versioned, access-logged, public access blocked) and their key."""

    def __init__(self, scope: Construct, id_: str, *, repositories: dict[str, Repository], control: Place,
                 worker_accounts: list[str], lock_modes: dict[str, str | None] | None = None):
        super().__init__(scope, id_)
        self.key = kms.Key(self, "Key", enable_key_rotation=True, removal_policy=RemovalPolicy.RETAIN,
                           description="rds-backup: repository objects and the repositories' master keys")
        self.key.add_alias(REPOSITORY_KEY_ALIAS)
        self.access_logs = s3.Bucket(
            self, "AccessLogs", encryption=s3.BucketEncryption.S3_MANAGED, enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL, removal_policy=RemovalPolicy.RETAIN,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(365))],
        )
        acknowledge(self.access_logs, "AwsSolutions-S1",
                    "This is the access-log bucket of the repositories; logging it into itself would loop.")
        self.buckets: dict[str, s3.Bucket] = {}
        lock_modes = lock_modes or {}
        for name, settings in repositories.items():
            bucket = s3.Bucket(
                self, f"Repository-{name}",
                bucket_name=repository_bucket_name(name, control),
                encryption=s3.BucketEncryption.KMS, encryption_key=self.key, bucket_key_enabled=True,
                enforce_ssl=True, versioned=settings.object_lock_days is not None,
                object_lock_enabled=settings.object_lock_days is not None,
                object_lock_default_retention=_lock_retention(lock_modes.get(name), settings.object_lock_days),
                block_public_access=s3.BlockPublicAccess.BLOCK_ALL, removal_policy=RemovalPolicy.RETAIN,
                server_access_logs_bucket=self.access_logs, server_access_logs_prefix=f"{name}/",
                lifecycle_rules=[s3.LifecycleRule(prefix=RESULT_PREFIX, expiration=Duration.days(30)),
                                 s3.LifecycleRule(abort_incomplete_multipart_upload_after=Duration.days(2))],
            )
            for account in sorted(set(worker_accounts)):
                # Principals by account with the role named in a condition: a bucket policy naming a role
                # that does not exist yet (the access stacks deploy independently) would be refused.
                bucket.add_to_resource_policy(iam.PolicyStatement(
                    principals=[iam.AccountPrincipal(account)],
                    actions=_WORKER_OBJECT_ACTIONS, resources=[bucket.arn_for_objects("*")],
                    conditions={"ArnLike": {"aws:PrincipalArn": f"arn:aws:iam::{account}:role/{WORKER_ROLE_PREFIX}-*"}},
                ))
                bucket.add_to_resource_policy(iam.PolicyStatement(
                    principals=[iam.AccountPrincipal(account)],
                    actions=["s3:ListBucket", "s3:GetBucketLocation"], resources=[bucket.bucket_arn],
                    conditions={"ArnLike": {"aws:PrincipalArn": f"arn:aws:iam::{account}:role/{WORKER_ROLE_PREFIX}-*"}},
                ))
            self.buckets[name] = bucket
        for account in sorted(set(worker_accounts)):
            self.key.add_to_resource_policy(iam.PolicyStatement(
                principals=[iam.AccountPrincipal(account)], actions=_WORKER_KEY_ACTIONS, resources=["*"],
                conditions={"ArnLike": {"aws:PrincipalArn": f"arn:aws:iam::{account}:role/{WORKER_ROLE_PREFIX}-*"}},
            ))
