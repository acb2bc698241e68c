"""Production-access and replica-target stacks: trust only the control account, scoped permissions."""

from tests.e2e.configs import CONTROL_ACCOUNT, REPLICA_REGION, TARGET_ACCOUNT
from tests.infra.conftest import flatten, resources_of


def _role(template):
    (role,) = resources_of(template, "AWS::IAM::Role").values()
    return role["Properties"]


def _statements(template):
    for policy in resources_of(template, "AWS::IAM::Policy").values():
        yield from policy["Properties"]["PolicyDocument"]["Statement"]


def test_stacks_exist_for_every_place(templates):
    assert set(templates) == {
        "RdsBackupControl",
        f"RdsBackupAccess-{CONTROL_ACCOUNT}-{REPLICA_REGION}",  # staging key for the region+account chain
        "RdsBackupAccess",
        f"RdsBackupReplica-{CONTROL_ACCOUNT}-{REPLICA_REGION}",
        f"RdsBackupReplica-{TARGET_ACCOUNT}-{REPLICA_REGION}",
        f"RdsBackupReplica-{TARGET_ACCOUNT}-us-east-1",
    }


def test_roles_trust_only_the_control_account(templates):
    for name, template in templates.items():
        if name == "RdsBackupControl":
            continue
        trust = _role(template)["AssumeRolePolicyDocument"]["Statement"]
        assert len(trust) == 1
        assert f"iam::{CONTROL_ACCOUNT}:root" in flatten(trust[0]["Principal"]["AWS"])


def test_access_role_deletes_and_shares_only_managed_snapshots(templates):
    destructive = {"rds:DeleteDBSnapshot", "rds:DeleteDBClusterSnapshot", "rds:ModifyDBSnapshotAttribute",
                   "rds:ModifyDBClusterSnapshotAttribute", "rds:AddTagsToResource"}
    for statement in _statements(templates["RdsBackupAccess"]):
        actions = set(statement["Action"]) if isinstance(statement["Action"], list) else {statement["Action"]}
        if actions & destructive:
            for resource in statement["Resource"]:
                assert flatten(resource).split(":")[-1] == "rdsbackup-*", resource


def test_kms_use_is_limited_to_rds(templates):
    for name, template in templates.items():
        for statement in _statements(template):
            if any(flatten(r).startswith("arn:<AWS::Partition>:kms:") and flatten(r).endswith("key/*")
                   for r in (statement["Resource"] if isinstance(statement["Resource"], list)
                             else [statement["Resource"]])):
                assert "kms:ViaService" in flatten(statement.get("Condition", {})), name


def test_replica_key_and_staging_key_rotate_and_have_aliases(templates):
    replica = templates[f"RdsBackupReplica-{TARGET_ACCOUNT}-{REPLICA_REGION}"]
    (alias,) = resources_of(replica, "AWS::KMS::Alias").values()
    assert alias["Properties"]["AliasName"] == "alias/rdsbackup-replica"
    access = templates["RdsBackupAccess"]
    (key,) = resources_of(access, "AWS::KMS::Key").values()
    assert key["Properties"]["EnableKeyRotation"] is True
    # the staging key lets the replica account copy the shared staging snapshot, through RDS only
    shared = [s for s in key["Properties"]["KeyPolicy"]["Statement"]
              if TARGET_ACCOUNT in flatten(s["Principal"])]
    assert shared and all("kms:ViaService" in flatten(s["Condition"]) for s in shared)
