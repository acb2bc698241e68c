"""The role a restore uses in an account and region: restore snapshots, add cluster instances, rename a
database aside (mode replace) and back, and delete only what a restore created.

Mode replace renames only what the policies may select in that place (and what a restore made): the
same databases the launch role may modify, plus the names the renamed originals and a named cluster's
members carry. The restore planner refuses any other target before it renames anything
(`rdsbackup_lambdas.restore.replaceable` mirrors these statements; a test holds both together).
"""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.constructs.power_roles import (
    RESTORE_TAG,
    SWEEP_TAG,
    ScopedRole,
    SelectedDatabases,
    Trust,
    allow_modify_selected,
)
from infra.nag import acknowledge
from infra.powers import Power
from infra.topology import names_of


class RestoreRole(Construct):
    """`<prefix>-restore-<region>` (the restore power), trusted by the restore steps; one per account and region."""

    def __init__(self, scope: Construct, id_: str, *, trust: Trust, databases: SelectedDatabases):
        super().__init__(scope, id_)
        stack = Stack.of(self)
        self.role = iam.Role(
            self, "Role", role_name=names_of(self).restore_role(stack.region),
            # only the restore workflow's steps (infra.powers), by role ARN
            assumed_by=trust.principal(Power.RESTORE),
            description="rds-backup restore: restore snapshots into new or replacing DB instances and clusters")
        here = f"arn:{stack.partition}:rds:{stack.region}:{stack.account}:"
        nag_here = f"arn:<AWS::Partition>:rds:{stack.region}:{stack.account}:"
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["rds:DescribeDBInstances", "rds:DescribeDBClusters", "rds:DescribeDBSnapshots",
                     "rds:DescribeDBClusterSnapshots", "rds:ListTagsForResource",
                     # a restore names the snapshot, subnet group, option and parameter groups it uses
                     "rds:RestoreDBInstanceFromDBSnapshot", "rds:RestoreDBClusterFromSnapshot",
                     "rds:CreateDBInstance"],
            resources=[here + "*"]))
        # mode replace renames a database aside and back: only those the policies here may select
        allow_modify_selected(ScopedRole(stack, self.role), databases, renames=True,
                              whose="replacing a restored database, or renaming its original back")
        # tags at creation: every database a restore creates carries rdsbackup:restore in the request
        # (RDS authorizes a create's tags as AddTagsToResource on the new database)
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["rds:AddTagsToResource"], resources=[here + "db:*", here + "cluster:*"],
            conditions={"StringLike": {f"aws:RequestTag/{RESTORE_TAG}": "restore-*"}}))
        # afterwards only the sweeper's mark, on what a restore made
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["rds:AddTagsToResource"], resources=[here + "db:*", here + "cluster:*"],
            conditions={"StringLike": {f"aws:ResourceTag/{RESTORE_TAG}": "restore-*"},
                        "ForAllValues:StringEquals": {"aws:TagKeys": [SWEEP_TAG]}}))
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["rds:DeleteDBInstance", "rds:DeleteDBCluster"],
            resources=[here + "db:*", here + "cluster:*"],
            conditions={"StringLike": {f"aws:ResourceTag/{RESTORE_TAG}": "restore-*"}}))
        # a restore into another account/region: the source shares its snapshot, the target copies it in
        managed = [here + "snapshot:rdsbackup-*", here + "cluster-snapshot:rdsbackup-*"]
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["rds:ModifyDBSnapshotAttribute", "rds:ModifyDBClusterSnapshotAttribute", "rds:CopyDBSnapshot",
                     "rds:CopyDBClusterSnapshot", "rds:AddTagsToResource"], resources=managed))
        copies = [here + "snapshot:rdsbackup-restore-*", here + "cluster-snapshot:rdsbackup-restore-*"]
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["rds:DeleteDBSnapshot", "rds:DeleteDBClusterSnapshot"], resources=copies))
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["rds:CopyDBSnapshot", "rds:CopyDBClusterSnapshot"],
            resources=[f"arn:{stack.partition}:rds:*:*:snapshot:rdsbackup-*",
                       f"arn:{stack.partition}:rds:*:*:cluster-snapshot:rdsbackup-*"]))
        via_rds = {"StringEquals": {"kms:ViaService": f"rds.{stack.region}.amazonaws.com"}}
        keys_here = [f"arn:{stack.partition}:kms:{stack.region}:{stack.account}:key/*"]
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["kms:DescribeKey", "kms:Decrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo",
                     "kms:GenerateDataKeyWithoutPlaintext"], resources=keys_here, conditions=via_rds))
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["kms:CreateGrant"], resources=keys_here,
            conditions={**via_rds, "Bool": {"kms:GrantIsForAWSResource": "true"}}))
        for resource, reason in (
                (nag_here + "*", "A restore reaches the snapshot, subnet/option/parameter groups and databases "
                                 "the input names, found at run time, in this account and region only."),
                (nag_here + "db:*", "Tags DB instances only with rdsbackup:restore in the request (at creation) "
                                    "or rdsbackup:sweep on those tagged rdsbackup:restore; deletes only those "
                                    "(condition)."),
                (nag_here + "cluster:*", "Tags DB clusters only with rdsbackup:restore in the request (at creation) "
                                         "or rdsbackup:sweep on those tagged rdsbackup:restore; deletes only those "
                                         "(condition)."),
                (nag_here + "snapshot:rdsbackup-*", "Shares and copies only snapshots rds-backup made."),
                (nag_here + "cluster-snapshot:rdsbackup-*", "Shares and copies only snapshots rds-backup made."),
                (nag_here + "snapshot:rdsbackup-restore-*", "Deletes only a restore's own snapshot copies."),
                (nag_here + "cluster-snapshot:rdsbackup-restore-*", "Deletes only a restore's own snapshot copies."),
                ("arn:<AWS::Partition>:rds:*:*:snapshot:rdsbackup-*",
                 "The source of a copy: a snapshot rds-backup made, in whichever account/region it is."),
                ("arn:<AWS::Partition>:rds:*:*:cluster-snapshot:rdsbackup-*",
                 "The source of a copy: a snapshot rds-backup made, in whichever account/region it is."),
                (f"arn:<AWS::Partition>:kms:{stack.region}:{stack.account}:key/*",
                 "Snapshots may be encrypted with any of the user's keys: key use is limited to RDS "
                 "(kms:ViaService) in this account.")):
            acknowledge(self.role, f"AwsSolutions-IAM5[Resource::{resource}]", reason)
