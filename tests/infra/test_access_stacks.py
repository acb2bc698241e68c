"""Production-access and replica-target stacks: keys, scoped permissions (the roles per power: test_powers)."""

from tests.e2e.configs import CONTROL_ACCOUNT, REPLICA_REGION, TARGET_ACCOUNT
from tests.infra.conftest import flatten, resources_of


def _statements(template, role_prefix: str | tuple[str, ...] = ""):
    for logical, policy in resources_of(template, "AWS::IAM::Policy").items():
        if logical.startswith(role_prefix):
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


def test_access_role_deletes_and_shares_only_managed_snapshots(templates):
    destructive = {"rds:DeleteDBSnapshot", "rds:DeleteDBClusterSnapshot", "rds:ModifyDBSnapshotAttribute",
                   "rds:ModifyDBClusterSnapshotAttribute", "rds:AddTagsToResource"}
    # the roles of the snapshot powers (the restore role tags the databases it makes: its own test)
    for statement in _statements(templates["RdsBackupAccess"], ("ReadRole", "SnapshotRole", "ShareRole", "DeleteRole")):
        actions = set(statement["Action"]) if isinstance(statement["Action"], list) else {statement["Action"]}
        if actions & destructive:
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            for resource in resources:
                assert flatten(resource).split(":")[-1].startswith("rdsbackup-"), resource


def _place(stack_name: str) -> tuple[str, str]:
    parts = stack_name.split("-", 2)
    return (parts[1], parts[2]) if len(parts) == 3 else (CONTROL_ACCOUNT, "us-east-1")


def test_a_restore_role_in_every_place_deletes_only_what_a_restore_made(templates):
    places: dict[tuple[str, str], int] = {}
    for name, template in templates.items():
        if name == "RdsBackupControl":
            continue
        roles = [r["Properties"] for logical, r in resources_of(template, "AWS::IAM::Role").items()
                 if logical.startswith("RestoreRole")]
        places[_place(name)] = places.get(_place(name), 0) + len(roles)
        for role in roles:
            assert role["RoleName"].startswith("rdsbackup-restore-"), name
            trust = role["AssumeRolePolicyDocument"]["Statement"]
            assert len(trust) == 1 and f"iam::{CONTROL_ACCOUNT}:root" in flatten(trust[0]["Principal"]["AWS"])
            deletes = [s for s in _statements(template, "RestoreRole")
                       if {"rds:DeleteDBInstance", "rds:DeleteDBCluster"} & set(s["Action"])]
            assert deletes, name
            for statement in deletes:
                assert statement["Condition"] == {"StringLike": {"aws:ResourceTag/rdsbackup:restore": "restore-*"}}
    # one role per account and region (a place with both a production and a replica stack has it once)
    assert set(places.values()) == {1}, places


def test_production_accounts_may_copy_replicas_back_through_rds(templates):
    replica = templates[f"RdsBackupReplica-{TARGET_ACCOUNT}-us-east-1"]
    (key,) = resources_of(replica, "AWS::KMS::Key").values()
    statements = [s for s in key["Properties"]["KeyPolicy"]["Statement"]
                  if f"iam::{CONTROL_ACCOUNT}:root" in flatten(s["Principal"].get("AWS", ""))]
    assert statements and all("kms:Decrypt" in s["Action"] and s["Condition"] == {
        "StringEquals": {"kms:ViaService": "rds.us-east-1.amazonaws.com"}} for s in statements)


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


def test_worker_task_role_names_the_repository_bucket_and_key(templates):
    access = templates["RdsBackupAccess"]
    (task_role,) = [logical for logical, r in resources_of(access, "AWS::IAM::Role").items()
                    if "TaskRole" in logical]
    statements = [s for logical, p in resources_of(access, "AWS::IAM::Policy").items()
                  if flatten(p["Properties"]["Roles"]).find(task_role) >= 0
                  for s in p["Properties"]["PolicyDocument"]["Statement"]]
    resources = {flatten(r) for s in statements
                 for r in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])}
    assert "arn:aws:s3:::rdsbackup-main-123456789012-us-east-1/images/*" in resources
    assert "arn:aws:s3:::rdsbackup-main-123456789012-us-east-1/*" not in resources
    # rdsbackup-cold: the policy's archive, read only (tests/infra/test_archive_retrieval.py)
    assert all(r.startswith(("arn:aws:s3:::rdsbackup-main-", "arn:aws:s3:::rdsbackup-cold-",
                             "arn:aws:s3:::rdsbackup-tmp-", "arn:aws:kms:", "arn:aws:secretsmanager:"))
               for r in resources), resources
    kms = [s for s in statements if "kms:GenerateDataKey" in s["Action"]]
    assert kms[0]["Condition"] == {"ForAnyValue:StringEquals": {"kms:ResourceAliases": "alias/rdsbackup-repository"}}
    secrets = [s for s in statements if s["Action"] == "secretsmanager:GetSecretValue"]
    assert flatten(secrets[0]["Resource"]).endswith(":secret:rds!*")


def test_worker_cluster_only_where_a_policy_backs_up_images(templates):
    assert resources_of(templates["RdsBackupAccess"], "AWS::ECS::Cluster")
    assert not resources_of(templates[f"RdsBackupAccess-{CONTROL_ACCOUNT}-{REPLICA_REGION}"], "AWS::ECS::Cluster")
