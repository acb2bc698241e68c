"""Stacks in the accounts the control plane reaches: production access, and replica targets.

Each holds a role the control plane assumes (trusting the control account only) and a
customer-managed KMS key. Their names come from `infra.topology`, so the control stack can name them
without cross-account references.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from infra.constructs.restore_role import RestoreRole
from infra.constructs.worker_cluster import TEMP_BUCKET_PREFIX, WorkerCluster
from infra.nag import acknowledge
from infra.topology import (
    ACCESS_ROLE_PREFIX,
    REPLICA_KEY_ALIAS,
    REPLICA_ROLE_PREFIX,
    STAGING_KEY_ALIAS,
    WORKER_CLUSTER,
    WORKER_TASK_FAMILY,
)

# Snapshots this tool makes are all named rdsbackup-...; it deletes and shares nothing else.
MANAGED_SNAPSHOT_PREFIX = "rdsbackup-"
_DESCRIBE_ACTIONS = [
    "rds:DescribeDBInstances", "rds:DescribeDBClusters", "rds:DescribeDBSnapshots",
    "rds:DescribeDBClusterSnapshots", "rds:DescribeDBSnapshotAttributes",
    "rds:DescribeDBClusterSnapshotAttributes", "rds:ListTagsForResource",
]
_KMS_FOR_RDS_ACTIONS = ["kms:CreateGrant", "kms:DescribeKey", "kms:Decrypt", "kms:ReEncryptFrom",
                        "kms:ReEncryptTo", "kms:GenerateDataKeyWithoutPlaintext"]
@dataclass(frozen=True)
class WorkerSettingsForPlace:
    """What the worker of one production place needs to know about the rest of the app."""

    repository_buckets: list[str]
    control_region: str
    secret_arns: list[str] = field(default_factory=list)
    capacity_providers: list[str] = field(default_factory=list)


_MANAGED = [f"snapshot:{MANAGED_SNAPSHOT_PREFIX}*", f"cluster-snapshot:{MANAGED_SNAPSHOT_PREFIX}*"]


class _ScopedRole:
    """Adds statements to a role from ARN templates, and acknowledges each wildcard with its reason.

    Templates use {partition}, {region} and {account}; cdk-nag names a finding by the rendered ARN,
    with pseudo-parameter tokens shown as <AWS::...>, so both forms come from the same template.
    """

    def __init__(self, stack: Stack, role: iam.Role):
        self._stack, self.role = stack, role

    def _render(self, template: str, nag: bool) -> str:
        stack = self._stack
        # str.replace, not format: an unresolved token's text contains braces
        # tokens of pseudo parameters become <AWS::...> in infra.nag.acknowledge
        partition = "<AWS::Partition>" if nag else stack.partition
        return (template.replace("{partition}", partition).replace("{region}", stack.region)
                .replace("{account}", stack.account))

    def allow(self, actions: list[str], templates: list[str], reason: str, conditions: dict | None = None):
        self.role.add_to_policy(iam.PolicyStatement(
            actions=actions, resources=[self._render(t, nag=False) for t in templates], conditions=conditions))
        for template in templates:
            if "*" in template:
                acknowledge(self.role, f"AwsSolutions-IAM5[Resource::{self._render(template, nag=True)}]", reason)


_WHY_DESCRIBE = "Describe/list calls cover this account and region only; tag selection finds databases at run time."
_WHY_MANAGED = "Only snapshots named rdsbackup-* (the ones this tool makes) in this account and region."
_WHY_KMS = ("Sources may be encrypted with any of the user's keys: key use is limited to RDS "
            "(kms:ViaService) in the named account.")


class ProductionAccessStack(Stack):
    """Per production account and region: the role that snapshots, tags, shares and prunes there, and
    (when a policy backs up images here) the worker's cluster, task definition and role."""

    def __init__(self, scope: Construct, id_: str, *, control_account: str,
                 share_with_accounts: list[str], worker: WorkerSettingsForPlace | None = None, **kwargs):
        super().__init__(scope, id_, **kwargs)
        self.role = iam.Role(
            self, "AccessRole",
            role_name=f"{ACCESS_ROLE_PREFIX}-{self.region}",
            assumed_by=iam.AccountPrincipal(control_account),
            description="rds-backup control plane: snapshot, tag, copy, share and prune managed snapshots",
        )
        self.staging_key = kms.Key(
            self, "StagingKey", enable_key_rotation=True, removal_policy=RemovalPolicy.RETAIN,
            description="rds-backup: re-encrypts default-key snapshots so they can be shared",
        )
        self.staging_key.add_alias(STAGING_KEY_ALIAS)
        for account in sorted(set(share_with_accounts)):
            # The replica account copies the shared staging snapshot, which needs this key through RDS.
            self.staging_key.add_to_resource_policy(iam.PolicyStatement(
                principals=[iam.AccountPrincipal(account)],
                actions=["kms:CreateGrant", "kms:DescribeKey", "kms:Decrypt", "kms:ReEncryptFrom"],
                resources=["*"],  # in a key policy, "*" means this key
                conditions={"StringEquals": {"kms:ViaService": f"rds.{self.region}.amazonaws.com"}},
            ))
        role = _ScopedRole(self, self.role)
        here = "arn:{partition}:rds:{region}:{account}:"
        role.allow(_DESCRIBE_ACTIONS, [here + "*"], _WHY_DESCRIBE)
        # the manual-snapshot quota (Used, Max) is checked before each snapshot
        role.allow(["rds:DescribeAccountAttributes"], ["*"],
                   "DescribeAccountAttributes (RDS quotas of this account and region) has no resource type.")
        role.allow(["rds:CreateDBSnapshot"], [here + "db:*", here + _MANAGED[0]],
                   "Tag selection finds DB instances at run time; snapshots are named rdsbackup-*.")
        role.allow(["rds:CreateDBClusterSnapshot"], [here + "cluster:*", here + _MANAGED[1]],
                   "Tag selection finds Aurora clusters at run time; snapshots are named rdsbackup-*.")
        role.allow(["rds:AddTagsToResource", "rds:RemoveTagsFromResource", "rds:CopyDBSnapshot",
                    "rds:CopyDBClusterSnapshot",
                    "rds:ModifyDBSnapshotAttribute", "rds:ModifyDBClusterSnapshotAttribute",
                    "rds:DeleteDBSnapshot", "rds:DeleteDBClusterSnapshot"],
                   [here + managed for managed in _MANAGED], _WHY_MANAGED)
        role.allow(_KMS_FOR_RDS_ACTIONS, ["arn:{partition}:kms:{region}:{account}:key/*"], _WHY_KMS,
                   conditions={"StringEquals": {"kms:ViaService": f"rds.{self.region}.amazonaws.com"}})
        self.worker: WorkerCluster | None = None
        if worker is not None:
            self.worker = WorkerCluster(
                self, "Worker", repository_buckets=worker.repository_buckets, control_account=control_account,
                control_region=worker.control_region, secret_arns=worker.secret_arns,
                capacity_providers=worker.capacity_providers)
            self._allow_image_backup(role, self.worker)
        self.restore = RestoreRole(self, "Restore", control_account=control_account)

    def _allow_image_backup(self, role: _ScopedRole, worker: WorkerCluster) -> None:
        """What prepare/start/check/cleanup_worker and the sweeper do through this role."""
        here = "arn:{partition}:ec2:{region}:{account}:"
        temporary = {"StringEquals": {"aws:ResourceTag/rdsbackup:temporary": "true"}}
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["ec2:DescribeSecurityGroups", "ec2:DescribeSecurityGroupRules", "ec2:DescribeSubnets",
                     "ec2:DescribeVpcs", "ec2:DescribeNetworkInterfaces"], resources=["*"]))
        acknowledge(self.role, "AwsSolutions-IAM5[Resource::*]",
                    "EC2 Describe* and s3:ListAllMyBuckets support no resource-level permissions.")
        role.allow(["ec2:CreateSecurityGroup"], [here + "vpc/*", here + "security-group/*"],
                   "The DB's VPC is known only at run time; new groups must carry the temporary tag.",
                   conditions=None)
        role.allow(["ec2:CreateTags"], [here + "security-group/*"],
                   "Tags only temporary groups (at creation, or for the sweeper).")
        role.allow(["ec2:AuthorizeSecurityGroupIngress", "ec2:AuthorizeSecurityGroupEgress",
                    "ec2:RevokeSecurityGroupIngress", "ec2:RevokeSecurityGroupEgress",
                    "ec2:DeleteSecurityGroup"], [here + "security-group/*"],
                   "Only groups tagged rdsbackup:temporary=true (condition) are changed or deleted.",
                   conditions=temporary)
        rds = "arn:{partition}:rds:{region}:{account}:"
        role.allow(["rds:ModifyDBInstance", "rds:ModifyDBCluster"], [rds + "db:*", rds + "cluster:*"],
                   "Adds and removes the temporary DB security group on databases found at run time.")
        role.allow(["rds:DescribeOptionGroups", "rds:DescribeDBSubnetGroups"],
                   [rds + "og:*", rds + "subgrp:*"], "Reads the DB's option group and subnet group.")
        ecs_arn = "arn:{partition}:ecs:{region}:{account}:"
        role.allow(["ecs:RunTask"], [ecs_arn + f"task-definition/{WORKER_TASK_FAMILY}:*"],
                   "Any revision of the worker task definition.")
        role.allow(["ecs:StopTask", "ecs:DescribeTasks", "ecs:ListTasks", "ecs:TagResource"],
                   [ecs_arn + f"task/{WORKER_CLUSTER}/*", ecs_arn + f"container-instance/{WORKER_CLUSTER}/*",
                    ecs_arn + f"cluster/{WORKER_CLUSTER}"],
                   "Worker tasks of the rds-backup cluster only.")
        passed = [worker.task_role.role_arn]
        if worker.task_definition.execution_role is not None:
            passed.append(worker.task_definition.execution_role.role_arn)
        self.role.add_to_policy(iam.PolicyStatement(actions=["iam:PassRole"], resources=passed))
        bucket = f"arn:{{partition}}:s3:::{TEMP_BUCKET_PREFIX}-{{account}}-{{region}}"
        role.allow(["s3:CreateBucket", "s3:DeleteBucket", "s3:PutBucketPolicy", "s3:GetBucketPolicy",
                    "s3:PutEncryptionConfiguration", "s3:PutBucketPublicAccessBlock", "s3:PutBucketTagging",
                    "s3:GetBucketTagging", "s3:ListBucket", "s3:PutBucketOwnershipControls",
                    "s3:PutLifecycleConfiguration", "s3:ListBucketMultipartUploads"], [bucket],
                   "The SQL Server temporary bucket of this account and region only.")
        role.allow(["s3:DeleteObject", "s3:GetObject", "s3:AbortMultipartUpload"], [bucket + "/*"],
                   "Emptying the temporary bucket before it is deleted.")
        # the sweeper finds temporary buckets by listing (no resource-level permission exists)
        self.role.add_to_policy(iam.PolicyStatement(actions=["s3:ListAllMyBuckets"], resources=["*"]))


class ReplicaTargetStack(Stack):
    """Per replication target account and region: the role that copies replicas in, and their key."""

    def __init__(self, scope: Construct, id_: str, *, control_account: str, source_accounts: list[str],
                 restore_role: bool = True, **kwargs):
        super().__init__(scope, id_, **kwargs)
        self.key = kms.Key(self, "ReplicaKey", enable_key_rotation=True, removal_policy=RemovalPolicy.RETAIN,
                           description="rds-backup: encrypts snapshot replicas in this account and region")
        self.key.add_alias(REPLICA_KEY_ALIAS)
        self.role = iam.Role(
            self, "ReplicaRole",
            role_name=f"{REPLICA_ROLE_PREFIX}-{self.region}",
            assumed_by=iam.AccountPrincipal(control_account),
            description="rds-backup control plane: copy snapshot replicas in, tag and prune them",
        )
        role = _ScopedRole(self, self.role)
        here = "arn:{partition}:rds:{region}:{account}:"
        role.allow(_DESCRIBE_ACTIONS, [here + "*"], _WHY_DESCRIBE)
        role.allow(["rds:CopyDBSnapshot", "rds:CopyDBClusterSnapshot", "rds:AddTagsToResource",
                    "rds:RemoveTagsFromResource", "rds:DeleteDBSnapshot", "rds:DeleteDBClusterSnapshot"],
                   [here + managed for managed in _MANAGED], _WHY_MANAGED)
        # The source of a copy: a managed snapshot in a source account, in any region (cross-region).
        sources = sorted(set(source_accounts))
        role.allow(["rds:CopyDBSnapshot", "rds:CopyDBClusterSnapshot"],
                   [f"arn:{{partition}}:rds:*:{account}:{managed}" for account in sources for managed in _MANAGED],
                   "Copy sources are the managed snapshots (rdsbackup-*) of the named source accounts, "
                   "in whichever region they were taken.")
        self.key.grant(self.role, *_KMS_FOR_RDS_ACTIONS)
        for account in sources:
            # a restore into a production account copies the shared replica there, through RDS
            self.key.add_to_resource_policy(iam.PolicyStatement(
                principals=[iam.AccountPrincipal(account)],
                actions=["kms:CreateGrant", "kms:DescribeKey", "kms:Decrypt", "kms:ReEncryptFrom"],
                resources=["*"],  # in a key policy, "*" means this key
                conditions={"StringEquals": {"kms:ViaService": f"rds.{self.region}.amazonaws.com"}},
            ))
        # replicas restore where they are; a place that is also a production place has its role there
        self.restore = RestoreRole(self, "Restore", control_account=control_account) if restore_role else None
        role.allow(_KMS_FOR_RDS_ACTIONS, [f"arn:{{partition}}:kms:*:{account}:key/*" for account in sources],
                   _WHY_KMS, conditions={"StringLike": {"kms:ViaService": "rds.*.amazonaws.com"}})
