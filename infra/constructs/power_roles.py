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
# the plaintext tag every restored resource carries (lambdas/rdsbackup_lambdas/restore/databases.py)
RESTORE_TAG = "rdsbackup:restore"
# where mode "replace" puts an original: <id>-replaced-<restore> (rdsbackup_lambdas.restore.plan.aside_name)
REPLACED_INFIX = "-replaced-"
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
class SelectedDatabases:
    """The databases the policies may select in one place: `db:<id>`/`cluster:<id>` the config names, and
    the tag sets it selects by (every tag of a set must match; the value "*" matches any)."""

    resources: list[str] = field(default_factory=list)
    tag_sets: list[dict[str, str]] = field(default_factory=list)

    def tag_conditions(self) -> list[dict]:
        """One IAM condition block per tag set, on the database's own tags (`aws:ResourceTag`)."""
        blocks = []
        for tags in self.tag_sets:
            block: dict = {}
            for key, value in sorted(tags.items()):
                operator = "StringLike" if value == "*" else "StringEquals"
                block.setdefault(operator, {})[f"aws:ResourceTag/{key}"] = value
            blocks.append(block)
        return blocks

    def renamed_resources(self) -> list[str]:
        """The named databases as mode "replace" renames them: the database, its renamed original
        (`<id>-replaced-*`), and for a cluster its member instances named after it (`db:<id>-*`, the
        console's `<id>-instance-1`; it covers the members' renamed originals too)."""
        found: set[str] = set()
        for resource in self.resources:
            kind, identifier = resource.split(":", 1)
            found.update({resource, f"{resource}{REPLACED_INFIX}*"})
            if kind == "cluster":
                found.add(f"db:{identifier}-*")
        # db:<id>-* covers db:<id>-replaced-*
        return sorted(r for r in found if not (r.startswith("db:") and r.endswith(REPLACED_INFIX + "*")
                                               and f"db:{r[3:-len(REPLACED_INFIX) - 1]}-*" in found))


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


def allow_modify_selected(role: ScopedRole, databases: SelectedDatabases, *, whose: str,
                          renames: bool = False) -> None:
    """ModifyDBInstance/ModifyDBCluster only on the databases the policies may select, and on those a
    restore made (`rdsbackup:restore` tag). IAM cannot limit which parameters a call sends: the
    DbModificationWatch reports anything else (docs/security.md). `renames`: also the names mode
    "replace" gives the originals and their cluster members (the restore role)."""
    actions = ["rds:ModifyDBInstance", "rds:ModifyDBCluster"]
    named = databases.renamed_resources() if renames else databases.resources
    if named:
        role.allow(actions, [RDS_HERE + resource for resource in named],
                   "The databases the policies name" + (
                       ", their renamed originals (<id>-replaced-*) and a cluster's members named after it "
                       "(<id>-*)." if renames else "."))
    everything = [RDS_HERE + "db:*", RDS_HERE + "cluster:*"]
    for conditions in databases.tag_conditions():
        role.allow(actions, everything, "Databases selected by their tags (condition on the database's tags).",
                   conditions=conditions)
    role.allow(actions, everything, f"Databases a restore made ({whose}), by their tag.",
               conditions={"StringLike": {f"aws:ResourceTag/{RESTORE_TAG}": "restore-*"}})


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
