"""Repository isolation, append-only workers and immutability (issue 14 items 5 and 6), on the
synthesized multi-account templates."""

import pytest

from tests.infra.conftest import (
    BREAK_GLASS,
    PROD_A,
    PROD_B,
    as_list,
    flatten,
    resources_of,
    role_statements,
)

BUCKET = "rdsbackup-vault-123456789012-us-east-1"


@pytest.fixture(scope="module")
def control(multi_templates):
    return multi_templates["RdsBackupControl"]


def _bucket_policy(control) -> list[dict]:
    (policy,) = [p for p in resources_of(control, "AWS::S3::BucketPolicy").values()
                 if "Repository" in flatten(p["Properties"]["Bucket"])]
    return policy["Properties"]["PolicyDocument"]["Statement"]


def _worker_statements(control, account):
    return [s for s in _bucket_policy(control) if s["Effect"] == "Allow" and account in flatten(s["Principal"])]


def test_each_worker_is_named_exactly_and_reaches_only_its_own_prefix(control):
    # each policy here backs up one account: its prefix is that account's alone
    for account, policy in ((PROD_A, "orders"), (PROD_B, "billing")):
        statements = _worker_statements(control, account)
        assert statements
        for statement in statements:
            assert statement["Condition"]["ArnEquals"]["aws:PrincipalArn"] == \
                f"arn:aws:iam::{account}:role/rdsbackup-worker-us-east-1"
            for resource in as_list(statement["Resource"]):
                text = flatten(resource)
                if "/" in text:
                    own = (f"{policy}/", f"rdsbackup-results/{account}/")
                    assert text.split("/", 1)[1].startswith(own), text
            if "s3:ListBucket" in as_list(statement["Action"]):
                assert statement["Condition"]["StringLike"]["s3:prefix"] == [policy, f"{policy}/*"]


def test_workers_cannot_delete_repository_objects(control, multi_templates):
    for account in (PROD_A, PROD_B):
        for statement in _worker_statements(control, account):
            if "s3:DeleteObject" in as_list(statement["Action"]):
                assert all(flatten(r).endswith("/locks/*") for r in as_list(statement["Resource"]))
    for name, template in multi_templates.items():
        for role, statements in role_statements(template).items():
            if not role.startswith("rdsbackup-worker-"):
                continue
            for statement in statements:
                if "s3:DeleteObject" in as_list(statement["Action"]):
                    assert all(flatten(r).endswith("/locks/*") or "rdsbackup-tmp-" in flatten(r)
                               for r in as_list(statement["Resource"])), (name, statement)


def test_puts_must_use_the_repository_key(control):
    sids = {s.get("Sid"): s for s in _bucket_policy(control)}
    key_only = sids["RepositoryKeyOnly"]
    assert key_only["Effect"] == "Deny" and key_only["Action"] == "s3:PutObject"
    assert "RepositoriesKey" in flatten(key_only["Condition"]["StringNotEquals"])
    assert key_only["Condition"]["Null"] == {"s3:x-amz-server-side-encryption-aws-kms-key-id": "false"}


def test_repository_is_versioned_and_locked_in_compliance_mode(control):
    (bucket,) = [b for b in resources_of(control, "AWS::S3::Bucket").values()
                 if flatten(b["Properties"].get("BucketName", "")) == BUCKET]
    properties = bucket["Properties"]
    assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
    assert properties["ObjectLockConfiguration"]["Rule"]["DefaultRetention"] == {"Mode": "COMPLIANCE", "Days": 35}
    rules = properties["LifecycleConfiguration"]["Rules"]
    assert {"NoncurrentDays": 35} in [r.get("NoncurrentVersionExpiration") for r in rules]


def test_repositories_without_object_lock_are_versioned_too(control_template):
    for bucket in resources_of(control_template, "AWS::S3::Bucket").values():
        if "rdsbackup-main-" in flatten(bucket["Properties"].get("BucketName", "")):
            assert bucket["Properties"]["VersioningConfiguration"] == {"Status": "Enabled"}


def test_only_break_glass_may_change_the_bucket_or_bypass_retention(control):
    sids = {s.get("Sid"): s for s in _bucket_policy(control)}
    for sid, needed in (("ProtectSettings", {"s3:PutBucketPolicy", "s3:PutLifecycleConfiguration"}),
                        ("ProtectVersions", {"s3:BypassGovernanceRetention", "s3:PutObjectRetention"})):
        statement = sids[sid]
        assert statement["Effect"] == "Deny" and statement["Principal"] == {"AWS": "*"}
        assert needed <= set(statement["Action"])
        assert BREAK_GLASS in statement["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]


def test_repository_key_cannot_be_deleted_disabled_or_repolicied_but_by_break_glass(control):
    keys = [k for k in resources_of(control, "AWS::KMS::Key").values()
            if "repository" in k["Properties"].get("Description", "")]
    (key,) = keys
    (deny,) = [s for s in key["Properties"]["KeyPolicy"]["Statement"] if s["Effect"] == "Deny"]
    assert set(deny["Action"]) == {"kms:ScheduleKeyDeletion", "kms:DisableKey", "kms:PutKeyPolicy"}
    assert BREAK_GLASS in deny["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]


def test_workers_use_the_repository_key_only_as_themselves(control):
    (key,) = [k for k in resources_of(control, "AWS::KMS::Key").values()
              if "repository" in k["Properties"].get("Description", "")]
    worker_statements = [s for s in key["Properties"]["KeyPolicy"]["Statement"]
                         if PROD_A in flatten(s["Principal"]) or PROD_B in flatten(s["Principal"])]
    assert worker_statements
    for statement in worker_statements:
        roles = as_list(statement["Condition"]["ArnEquals"]["aws:PrincipalArn"])
        assert all(role.endswith(":role/rdsbackup-worker-us-east-1") for role in roles)
        assert "kms:ViaService" in flatten(statement["Condition"]) or \
            "kms:EncryptionContextKeys" in flatten(statement["Condition"])


def _worker_secret_statements(template):
    return [s for role, statements in role_statements(template).items() if role.startswith("rdsbackup-worker-")
            for s in statements if "secretsmanager:GetSecretValue" in as_list(s["Action"])]


def test_a_worker_of_named_databases_reads_only_their_secrets(multi_templates):
    statements = _worker_secret_statements(multi_templates[f"RdsBackupAccess-{PROD_A}-us-east-1"])
    assert statements and all("Condition" in s for s in statements)
    tags = {k: v for s in statements for k, v in s["Condition"]["StringEquals"].items()}
    assert tags == {
        "secretsmanager:ResourceTag/aws:rds:primaryDBInstanceArn": [f"arn:aws:rds:us-east-1:{PROD_A}:db:orders-db"],
        "secretsmanager:ResourceTag/aws:rds:primaryDBClusterArn": [f"arn:aws:rds:us-east-1:{PROD_A}:cluster:orders-db"]}


def test_worker_root_filesystem_is_read_only_with_a_scratch_volume(multi_templates):
    (task,) = resources_of(multi_templates[f"RdsBackupAccess-{PROD_A}-us-east-1"], "AWS::ECS::TaskDefinition").values()
    (container,) = task["Properties"]["ContainerDefinitions"]
    assert container["ReadonlyRootFilesystem"] is True
    assert container["MountPoints"] == [{"ContainerPath": "/scratch", "ReadOnly": False, "SourceVolume": "scratch"}]
    assert {"Name": "TMPDIR", "Value": "/scratch"} in container["Environment"]


@pytest.fixture(params=["e2e", "multi-account"], scope="module")
def any_control(request, templates, multi_templates):
    return (templates if request.param == "e2e" else multi_templates)["RdsBackupControl"]


def _repository_policies(control) -> list[list[dict]]:
    return [p["Properties"]["PolicyDocument"]["Statement"]
            for p in resources_of(control, "AWS::S3::BucketPolicy").values()
            if "Repository" in flatten(p["Properties"]["Bucket"])]


def test_production_workers_may_create_objects_but_never_overwrite_one(any_control):
    checked = 0
    for statements in _repository_policies(any_control):
        writes = [s for s in statements if s.get("Sid", "").startswith("Write")]
        if not writes:
            continue  # no production worker writes here (an archive repository)
        (deny,) = [s for s in statements if s.get("Sid") == "WorkersNeverOverwrite"]
        assert deny["Effect"] == "Deny" and deny["Action"] == "s3:PutObject" and deny["Principal"] == {"AWS": "*"}
        # every worker that may write here, named exactly
        workers = {flatten(s["Condition"]["ArnEquals"]["aws:PrincipalArn"]) for s in writes}
        assert set(as_list(deny["Condition"]["ArnEquals"]["aws:PrincipalArn"])) == workers
        # refused unless the put (PutObject, CompleteMultipartUpload) carries If-None-Match
        assert deny["Condition"]["Null"] == {"s3:if-none-match": "true"}
        assert deny["Condition"]["Bool"] == {"s3:ObjectCreationOperation": "true"}
        # on everything but the lock objects of the writers' prefixes and the result documents
        prefixes = {flatten(r).split("/", 1)[1].split("/", 1)[0] for s in writes for r in as_list(s["Resource"])}
        exempt = sorted(flatten(r).split("/", 1)[1] for r in as_list(deny["NotResource"]))
        assert exempt == sorted({f"{p}/locks/*" for p in prefixes - {"rdsbackup-results"}} | {"rdsbackup-results/*"})
        checked += 1
    assert checked
