"""The roles the control plane assumes in a production or replica-target account: one per power.

Each role trusts only the control stack's step roles that need its power (`aws:PrincipalArn`, and
`aws:PrincipalOrgID` when the config names the organization): a human or any other role in the
control account that may call `sts:AssumeRole` gets nothing. Statements name resources by ARN
templates; each wildcard is acknowledged for cdk-nag with its reason where it is granted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.nag import acknowledge
from infra.powers import Power, power_role_name, trusted_principals
from infra.topology import Names, Place, names_of

# Snapshots this tool makes are all named rdsbackup-...; it deletes and shares nothing else.
MANAGED_SNAPSHOT_PREFIX = "rdsbackup-"
MANAGED_TAG = "rdsbackup:managed"
TEMPORARY_TAG = "rdsbackup:temporary"
SWEEP_TAG = "rdsbackup:sweep"
RESTORE_TEST_TAG = "rdsbackup:restore-test"  # on a restore test's throwaway (rdsbackup_lambdas.image.names)
# Every tag key prepare_worker puts on a temporary security group (rdsbackup_lambdas.image.names).
TEMPORARY_GROUP_TAG_KEYS = ["rdsbackup:temporary", "rdsbackup:session", "rdsbackup:resource",
                            "rdsbackup:created-at", "Name"]
DESCRIBE_ACTIONS = [
    "rds:DescribeDBInstances", "rds:DescribeDBClusters", "rds:DescribeDBSnapshots",
    "rds:DescribeDBClusterSnapshots", "rds:DescribeDBSnapshotAttributes",
    "rds:DescribeDBClusterSnapshotAttributes", "rds:ListTagsForResource",
]
MANAGED = [f"snapshot:{MANAGED_SNAPSHOT_PREFIX}*", f"cluster-snapshot:{MANAGED_SNAPSHOT_PREFIX}*"]
STAGING = [f"snapshot:{MANAGED_SNAPSHOT_PREFIX}*-staging", f"cluster-snapshot:{MANAGED_SNAPSHOT_PREFIX}*-staging"]
# A snapshot is deletable only when it carries the managed marker (defence in depth: retention
# also checks the encrypted metadata before it deletes).
MANAGED_TAG_CONDITION = {
    "snapshot": {"StringEquals": {f"rds:snapshot-tag/{MANAGED_TAG}": "true"}},
    "cluster-snapshot": {"StringEquals": {f"rds:cluster-snapshot-tag/{MANAGED_TAG}": "true"}},
}
KMS_COPY_ACTIONS = ["kms:DescribeKey", "kms:Decrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo",
                    "kms:GenerateDataKeyWithoutPlaintext"]

WHY_DESCRIBE = "Describe/list calls cover this account and region only; tag selection finds databases at run time."
WHY_MANAGED = "Only snapshots named rdsbackup-* (the ones this tool makes) in this account and region."
WHY_KMS = ("Sources may be encrypted with any of the user's keys: key use is limited to RDS "
           "(kms:ViaService) in the named account.")


@dataclass(frozen=True)
class Trust:
    """Who may assume the roles of a stack: the control stack's step roles, optionally in one org."""

    control: Place
    organization_id: str | None = None
    extra_conditions: dict = field(default_factory=dict)
    names: Names = field(default_factory=Names)

    def principal(self, power: Power) -> iam.IPrincipal:
        conditions: dict = {"ArnEquals": {"aws:PrincipalArn": trusted_principals(power, self.control, self.names)}}
        if self.organization_id:
            conditions["StringEquals"] = {"aws:PrincipalOrgID": self.organization_id}
        # The account is the principal (a role ARN in a trust policy must exist when it is deployed;
        # stacks in other accounts deploy independently); the condition names the roles.
        return iam.AccountPrincipal(self.control.account).with_conditions(conditions)


class ScopedRole:
    """Adds statements to a role from ARN templates, and acknowledges each wildcard with its reason.

    Templates use {partition}, {region} and {account}; cdk-nag names a finding by the rendered ARN,
    with pseudo-parameter tokens shown as <AWS::...>, so both forms come from the same template.
    """

    def __init__(self, stack: Stack, role: iam.Role):
        self._stack, self.role = stack, role

    def render(self, template: str, nag: bool = False) -> str:
        stack = self._stack
        # str.replace, not format: an unresolved token's text contains braces
        partition = "<AWS::Partition>" if nag else stack.partition
        return (template.replace("{partition}", partition).replace("{region}", stack.region)
                .replace("{account}", stack.account))

    def allow(self, actions: list[str], templates: list[str], reason: str, conditions: dict | None = None):
        self.role.add_to_policy(iam.PolicyStatement(
            actions=actions, resources=[self.render(t) for t in templates], conditions=conditions))
        for template in templates:
            if "*" in template:
                acknowledge(self.role, f"AwsSolutions-IAM5[Resource::{self.render(template, nag=True)}]", reason)

    def allow_unscoped(self, actions: list[str], reason: str) -> None:
        """Actions that support no resource-level permission (Describe*, List*)."""
        self.role.add_to_policy(iam.PolicyStatement(actions=actions, resources=["*"]))
        acknowledge(self.role, "AwsSolutions-IAM5[Resource::*]", reason)


def make_power_role(scope: Construct, id_: str, *, power: Power, trust: Trust, description: str) -> ScopedRole:
    """The role of one power in this stack's account and region, trusted as `trust` says."""
    stack = Stack.of(scope)
    role = iam.Role(scope, id_, role_name=power_role_name(power, stack.region, names_of(scope)),
                    assumed_by=trust.principal(power), description=description)
    return ScopedRole(stack, role)


RDS_HERE = "arn:{partition}:rds:{region}:{account}:"


def allow_describe(role: ScopedRole) -> None:
    role.allow(DESCRIBE_ACTIONS, [RDS_HERE + "*"], WHY_DESCRIBE)
    # the manual-snapshot quota (Used, Max) is checked before snapshots and copies
    role.allow_unscoped(["rds:DescribeAccountAttributes"],
                        "DescribeAccountAttributes (RDS quotas of this account and region) has no resource type.")


def allow_delete_managed(role: ScopedRole, snapshots: list[str], reason: str) -> None:
    """Delete only managed snapshots (by name) that carry the managed marker (by tag)."""
    for template in snapshots:
        kind = template.split(":")[0]
        action = "rds:DeleteDBSnapshot" if kind == "snapshot" else "rds:DeleteDBClusterSnapshot"
        role.allow([action], [RDS_HERE + template], reason, conditions=MANAGED_TAG_CONDITION[kind])


def allow_kms_through_rds(role: ScopedRole, key_templates: list[str], via_service: dict) -> None:
    """Key use for copies, through RDS only; grants only for AWS resources (RDS's own grants)."""
    role.allow(KMS_COPY_ACTIONS, key_templates, WHY_KMS, conditions=via_service)
    role.allow(["kms:CreateGrant"], key_templates, WHY_KMS,
               conditions={**via_service, "Bool": {"kms:GrantIsForAWSResource": "true"}})
