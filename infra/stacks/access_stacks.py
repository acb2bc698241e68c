"""Stacks in the accounts the control plane reaches: production access, and replica targets.

Each holds one role per power (`infra.powers`), each trusting only the control stack's step roles
that need it, and a customer-managed KMS key. Names come from `infra.topology` and `infra.powers`, so
the control stack can name them without cross-account references.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from infra.constructs.db_modification_watch import ForwardDbModifications
from infra.constructs.power_roles import (
    MANAGED,
    MANAGED_TAG_CONDITION,
    RDS_HERE,
    RESTORE_TEST_TAG,
    STAGING,
    SWEEP_TAG,
    TEMPORARY_GROUP_TAG_KEYS,
    TEMPORARY_TAG,
    WHY_MANAGED,
    ScopedRole,
    SelectedDatabases,
    Trust,
    allow_delete_managed,
    allow_describe,
    allow_kms_through_rds,
    allow_modify_selected,
    make_power_role,
)
from infra.constructs.restore_role import RestoreRole
from infra.constructs.worker_cluster import TEMP_BUCKET_PREFIX, WorkerCluster
from infra.powers import Power
from infra.topology import names_of


@dataclass(frozen=True)
class WorkerSettingsForPlace:
    """What the worker of one production place needs to know about the rest of the app."""

    repository_buckets: list[str]
    control_region: str
    secret_arns: list[str] = field(default_factory=list)
    capacity_providers: list[str] = field(default_factory=list)
    # (bucket, prefix) of each repository prefix this place's worker writes
    repository_prefixes: list[tuple[str, str]] = field(default_factory=list)
    # (bucket, prefix) of each archive prefix this place's worker restores from (read only)
    archive_prefixes: list[tuple[str, str]] = field(default_factory=list)
    # the databases whose RDS-managed secrets the worker may read; None: any of this place (tag selection)
    secret_sources: list[str] | None = None
    # the databases whose security groups the worker's launch may change (item 4 of docs/security.md)
    databases: SelectedDatabases = field(default_factory=SelectedDatabases)


class ProductionAccessStack(Stack):
    """Per production account and region: a role per power (read, snapshot, share, delete, launch) and
    (when a policy backs up images here) the worker's cluster, task definition and role."""

    def __init__(self, scope: Construct, id_: str, *, trust: Trust, share_with_accounts: list[str],
                 worker: WorkerSettingsForPlace | None = None, forward_to_control: bool = True,
                 restore_databases: SelectedDatabases | None = None, **kwargs):
        super().__init__(scope, id_, **kwargs)
        self.staging_key = kms.Key(
            self, "StagingKey", enable_key_rotation=True, removal_policy=RemovalPolicy.RETAIN,
            description="rds-backup: re-encrypts default-key snapshots so they can be shared",
        )
        self.staging_key.add_alias(names_of(self).key_alias("staging"))
        for account in sorted(set(share_with_accounts)):
            # The replica account copies the shared staging snapshot, which needs this key through RDS.
            self.staging_key.add_to_resource_policy(iam.PolicyStatement(
                principals=[iam.AccountPrincipal(account)],
                actions=["kms:DescribeKey", "kms:Decrypt", "kms:ReEncryptFrom"],
                resources=["*"],  # in a key policy, "*" means this key
                conditions={"StringEquals": {"kms:ViaService": f"rds.{self.region}.amazonaws.com"}},
            ))
            self.staging_key.add_to_resource_policy(iam.PolicyStatement(
                principals=[iam.AccountPrincipal(account)], actions=["kms:CreateGrant"], resources=["*"],
                conditions={"StringEquals": {"kms:ViaService": f"rds.{self.region}.amazonaws.com"},
                            "Bool": {"kms:GrantIsForAWSResource": "true"}},
            ))
        via_rds = {"StringEquals": {"kms:ViaService": f"rds.{self.region}.amazonaws.com"}}
        keys_here = ["arn:{partition}:kms:{region}:{account}:key/*"]
        self.roles: dict[Power, iam.Role] = {}

        read = self._role(Power.READ, trust, "describe databases and snapshots, read their tags")
        allow_describe(read)

        snapshot = self._role(Power.SNAPSHOT, trust, "create snapshots and tag them")
        allow_describe(snapshot)
        snapshot.allow(["rds:CreateDBSnapshot"], [RDS_HERE + "db:*", RDS_HERE + MANAGED[0]],
                       "Tag selection finds DB instances at run time; snapshots are named rdsbackup-*.")
        snapshot.allow(["rds:CreateDBClusterSnapshot"], [RDS_HERE + "cluster:*", RDS_HERE + MANAGED[1]],
                       "Tag selection finds Aurora clusters at run time; snapshots are named rdsbackup-*.")
        snapshot.allow(["rds:AddTagsToResource", "rds:RemoveTagsFromResource"],
                       [RDS_HERE + managed for managed in MANAGED], WHY_MANAGED)

        share = self._role(Power.SHARE, trust, "copy managed snapshots to staging and share them with targets")
        allow_describe(share)
        share.allow(["rds:CopyDBSnapshot", "rds:CopyDBClusterSnapshot", "rds:AddTagsToResource",
                     "rds:RemoveTagsFromResource"], [RDS_HERE + managed for managed in MANAGED], WHY_MANAGED)
        share.allow(["rds:ModifyDBSnapshotAttribute"], [RDS_HERE + MANAGED[0]], WHY_MANAGED,
                    conditions=MANAGED_TAG_CONDITION["snapshot"])
        share.allow(["rds:ModifyDBClusterSnapshotAttribute"], [RDS_HERE + MANAGED[1]], WHY_MANAGED,
                    conditions=MANAGED_TAG_CONDITION["cluster-snapshot"])
        allow_delete_managed(share, STAGING, "Only the staging copies (rdsbackup-*-staging) that replication "
                                             "made and removes once the target has its copy.")
        allow_kms_through_rds(share, keys_here, via_rds)

        delete = self._role(Power.DELETE, trust, "delete managed snapshots (retention)")
        allow_describe(delete)
        allow_delete_managed(delete, MANAGED, WHY_MANAGED)

        self.worker: WorkerCluster | None = None
        if worker is not None:
            self.worker = WorkerCluster(
                self, "Worker", repository_buckets=worker.repository_buckets, control_account=trust.control.account,
                control_region=worker.control_region, secret_arns=worker.secret_arns,
                capacity_providers=worker.capacity_providers, repository_prefixes=worker.repository_prefixes,
                secret_sources=worker.secret_sources, archive_prefixes=worker.archive_prefixes)
            launch = self._role(Power.LAUNCH, trust, "run the image-level backup worker")
            allow_describe(launch)
            self._allow_image_backup(launch, self.worker, worker.databases)
        # mode replace renames only what the policies here may select (and what a restore made)
        self.restore = RestoreRole(self, "Restore", trust=trust, databases=restore_databases or SelectedDatabases())
        self.roles[Power.RESTORE] = self.restore.role
        if forward_to_control:
            watched = [self.restore.role] + ([self.roles[Power.LAUNCH]] if Power.LAUNCH in self.roles else [])
            ForwardDbModifications(self, "DbModificationWatch", role_arns=[role.role_arn for role in watched],
                                   control=trust.control)

    def _role(self, power: Power, trust: Trust, what: str) -> ScopedRole:
        role = make_power_role(self, f"{power.name.title().replace('_', '')}Role", power=power, trust=trust,
                               description=f"rds-backup control plane ({power.value}): {what}")
        self.roles[power] = role.role
        return role

    def _allow_image_backup(self, role: ScopedRole, worker: WorkerCluster, databases: SelectedDatabases) -> None:
        """What prepare/start/check/cleanup_worker and the sweeper do through the launch role."""
        here = "arn:{partition}:ec2:{region}:{account}:"
        temporary = {"StringEquals": {f"aws:ResourceTag/{TEMPORARY_TAG}": "true"}}
        role.allow_unscoped(["ec2:DescribeSecurityGroups", "ec2:DescribeSecurityGroupRules", "ec2:DescribeSubnets",
                             "ec2:DescribeVpcs", "ec2:DescribeNetworkInterfaces", "s3:ListAllMyBuckets"],
                            "EC2 Describe* and s3:ListAllMyBuckets (the sweeper finds temporary buckets by "
                            "listing) support no resource-level permissions.")
        role.allow(["ec2:CreateSecurityGroup"], [here + "vpc/*"],
                   "The DB's VPC is known only at run time; the new group itself must carry the temporary tag.")
        # A new group must be tagged temporary in the request, with only our tag keys.
        role.allow(["ec2:CreateSecurityGroup"], [here + "security-group/*"],
                   "New groups only, tagged rdsbackup:temporary=true in the request.",
                   conditions={"StringEquals": {f"aws:RequestTag/{TEMPORARY_TAG}": "true"},
                               "ForAllValues:StringEquals": {"aws:TagKeys": TEMPORARY_GROUP_TAG_KEYS}})
        # Tags at creation only; afterwards only the sweeper's mark, on groups already temporary. No
        # existing group can be tagged temporary (and then opened).
        role.allow(["ec2:CreateTags"], [here + "security-group/*"], "Tags a group only while creating it.",
                   conditions={"StringEquals": {"ec2:CreateAction": "CreateSecurityGroup"}})
        role.allow(["ec2:CreateTags"], [here + "security-group/*"],
                   "Marks temporary groups for the sweeper (rdsbackup:sweep only).",
                   conditions={**temporary, "ForAllValues:StringEquals": {"aws:TagKeys": [SWEEP_TAG]}})
        role.allow(["ec2:AuthorizeSecurityGroupIngress", "ec2:AuthorizeSecurityGroupEgress",
                    "ec2:RevokeSecurityGroupIngress", "ec2:RevokeSecurityGroupEgress",
                    "ec2:DeleteSecurityGroup"], [here + "security-group/*"],
                   "Only groups tagged rdsbackup:temporary=true (condition) are changed or deleted.",
                   conditions=temporary)
        allow_modify_selected(role, databases, whose="a restore test's throwaway")
        # The sweeper deletes restore tests' leftover throwaways (no final snapshot): only those named
        # <prefix>-test-* (Names.throwaway_prefix, the Lambdas' THROWAWAY_PREFIX) AND tagged as a restore test's.
        throwaway = names_of(self).throwaway_prefix
        role.allow(["rds:DeleteDBInstance", "rds:DeleteDBCluster"],
                   [RDS_HERE + f"db:{throwaway}*", RDS_HERE + f"cluster:{throwaway}*"],
                   f"Restore tests' throwaways only: named {throwaway}*, tagged temporary and restore-test.",
                   conditions={**temporary, "Null": {f"aws:ResourceTag/{RESTORE_TEST_TAG}": "false"}})
        role.allow(["rds:DescribeOptionGroups", "rds:DescribeDBSubnetGroups"],
                   [RDS_HERE + "og:*", RDS_HERE + "subgrp:*"], "Reads the DB's option group and subnet group.")
        ecs_arn = "arn:{partition}:ecs:{region}:{account}:"
        names = names_of(self)
        cluster = role.render(ecs_arn + f"cluster/{names.worker_cluster}")
        role.allow(["ecs:RunTask"], [ecs_arn + f"task-definition/{names.worker_task_family}:*"],
                   "Any revision of the worker task definition, in the worker cluster only.",
                   conditions={"ArnEquals": {"ecs:cluster": cluster}})
        role.allow(["ecs:StopTask", "ecs:DescribeTasks", "ecs:ListTasks", "ecs:TagResource"],
                   [ecs_arn + f"task/{names.worker_cluster}/*", ecs_arn + f"cluster/{names.worker_cluster}",
                    ecs_arn + f"container-instance/{names.worker_cluster}/*"],
                   "Worker tasks of the rds-backup cluster only.")
        passed = [worker.task_role.role_arn]
        if worker.task_definition.execution_role is not None:
            passed.append(worker.task_definition.execution_role.role_arn)
        role.role.add_to_policy(iam.PolicyStatement(
            actions=["iam:PassRole"], resources=passed,
            conditions={"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}))
        # the name ends in a suffix others cannot predict (lambdas/rdsbackup_lambdas/image/names.py)
        bucket = f"arn:{{partition}}:s3:::{TEMP_BUCKET_PREFIX}-{{account}}-{{region}}-*"
        role.allow(["s3:CreateBucket", "s3:DeleteBucket", "s3:PutBucketPolicy", "s3:GetBucketPolicy",
                    "s3:PutEncryptionConfiguration", "s3:PutBucketPublicAccessBlock", "s3:PutBucketTagging",
                    "s3:GetBucketTagging", "s3:ListBucket", "s3:PutBucketOwnershipControls",
                    "s3:PutLifecycleConfiguration", "s3:ListBucketMultipartUploads"], [bucket],
                   "The SQL Server temporary bucket of this account and region only (its name ends in a "
                   "suffix only the control plane knows).")
        role.allow(["s3:DeleteObject", "s3:GetObject", "s3:AbortMultipartUpload"], [bucket + "/*"],
                   "Emptying the temporary bucket before it is deleted.")


class ReplicaTargetStack(Stack):
    """Per replication target account and region: the roles that copy replicas in (and prune them), and
    their key."""

    def __init__(self, scope: Construct, id_: str, *, trust: Trust, source_accounts: list[str],
                 restore_role: bool = True, forward_to_control: bool = True, **kwargs):
        super().__init__(scope, id_, **kwargs)
        self.key = kms.Key(self, "ReplicaKey", enable_key_rotation=True, removal_policy=RemovalPolicy.RETAIN,
                           description="rds-backup: encrypts snapshot replicas in this account and region")
        self.key.add_alias(names_of(self).key_alias("replica"))
        self.roles: dict[Power, iam.Role] = {}
        copy = make_power_role(self, "ReplicaRole", power=Power.REPLICA, trust=trust,
                               description="rds-backup control plane (replica): copy snapshot replicas in, tag them")
        self.roles[Power.REPLICA] = self.role = copy.role
        allow_describe(copy)
        copy.allow(["rds:CopyDBSnapshot", "rds:CopyDBClusterSnapshot", "rds:AddTagsToResource",
                    "rds:RemoveTagsFromResource"], [RDS_HERE + managed for managed in MANAGED], WHY_MANAGED)
        # The source of a copy: a managed snapshot in a source account, in any region (cross-region).
        sources = sorted(set(source_accounts))
        copy.allow(["rds:CopyDBSnapshot", "rds:CopyDBClusterSnapshot"],
                   [f"arn:{{partition}}:rds:*:{account}:{managed}" for account in sources for managed in MANAGED],
                   "Copy sources are the managed snapshots (rdsbackup-*) of the named source accounts, "
                   "in whichever region they were taken.")
        self.key.grant(copy.role, "kms:DescribeKey", "kms:Decrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo",
                       "kms:GenerateDataKeyWithoutPlaintext")
        allow_kms_through_rds(copy, ["arn:{partition}:kms:{region}:{account}:key/*"],
                              {"StringEquals": {"kms:ViaService": f"rds.{self.region}.amazonaws.com"}})
        allow_kms_through_rds(copy, [f"arn:{{partition}}:kms:*:{account}:key/*" for account in sources],
                              {"StringLike": {"kms:ViaService": "rds.*.amazonaws.com"}})
        delete = make_power_role(self, "ReplicaDeleteRole", power=Power.REPLICA_DELETE, trust=trust,
                                 description="rds-backup control plane (replica-delete): delete managed replicas")
        self.roles[Power.REPLICA_DELETE] = delete.role
        allow_describe(delete)
        allow_delete_managed(delete, MANAGED, WHY_MANAGED)
        for account in sources:
            # a restore into a production account copies the shared replica there, through RDS
            self.key.add_to_resource_policy(iam.PolicyStatement(
                principals=[iam.AccountPrincipal(account)],
                actions=["kms:CreateGrant", "kms:DescribeKey", "kms:Decrypt", "kms:ReEncryptFrom"],
                resources=["*"],  # in a key policy, "*" means this key
                conditions={"StringEquals": {"kms:ViaService": f"rds.{self.region}.amazonaws.com"}},
            ))
        # replicas restore where they are; a place that is also a production place has its role there
        # no policy selects a database here: mode replace renames only what a restore made
        self.restore = (RestoreRole(self, "Restore", trust=trust, databases=SelectedDatabases()) if restore_role
                        else None)
        if self.restore is not None:
            self.roles[Power.RESTORE] = self.restore.role
            if forward_to_control:
                ForwardDbModifications(self, "DbModificationWatch", role_arns=[self.restore.role.role_arn],
                                       control=trust.control)
