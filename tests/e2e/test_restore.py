"""The synthesized restore state machine, executed by moto with the real handlers, end to end.

Snapshots are made by the backup state machine first (so they carry real encrypted metadata); every
restore runs with databases that report `creating` for a few checks, as RDS's do.
"""

from __future__ import annotations

import json

import boto3
import pytest
from moto.rds import exceptions as rds_errors
from moto.rds import models as rds_models

from tests.e2e import faults
from tests.e2e.configs import CONTROL_ACCOUNT, REGION, REPLICA_REGION, TARGET_ACCOUNT
from tests.e2e.conftest import report_of
from tests.e2e.fixtures import cluster_snapshots, create_aurora_cluster, db_snapshots, rds
from tests.e2e.server_harness import network

pytestmark = pytest.mark.slow


def _source_instance(identifier: str, net: dict, **extra) -> str:
    client = rds()
    client.create_db_parameter_group(DBParameterGroupName=f"{identifier}-params", DBParameterGroupFamily="postgres16",
                                     Description="the source's own parameters")
    created = client.create_db_instance(
        DBInstanceIdentifier=identifier, Engine="postgres", DBInstanceClass="db.m6g.large", AllocatedStorage=50,
        MasterUsername="admin_user", MasterUserPassword="not-a-real-secret-1", Port=5433,
        DBSubnetGroupName="app-subnets", VpcSecurityGroupIds=[net["app_group"]],
        DBParameterGroupName=f"{identifier}-params", StorageType="io1", Iops=3000, MultiAZ=False,
        AvailabilityZone=f"{REGION}b", EnableIAMDatabaseAuthentication=True, PubliclyAccessible=True,
        Tags=[{"Key": "team", "Value": "orders"}, {"Key": "cost-center", "Value": "42"}], **extra)
    return created["DBInstance"]["DBInstanceArn"]


def _backup(harness, arn: str, name: str, policy: str = "nightly") -> dict:
    report = report_of(harness.run({"policy": policy, "resources": [arn]}, name=name))
    (resource,) = report["resources"]
    assert resource["status"] == "Success", resource
    return resource


def _restore(harness, execution_input: dict, name: str) -> tuple[dict, dict]:
    with faults.slow_databases(describes_before_available=2):
        described = harness.run(execution_input, name=name, workflow="Restore")
    return described, report_of(described)


def _instance(identifier: str, region: str = REGION, session: boto3.Session | None = None) -> dict:
    return rds(region, session).describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]


def _instances(cluster: str) -> list[dict]:
    found = rds().describe_db_instances(Filters=[{"Name": "db-cluster-id", "Values": [cluster]}])["DBInstances"]
    return sorted(found, key=lambda i: i["DBInstanceIdentifier"])


def _identifiers(session: boto3.Session | None = None, region: str = REGION) -> set[str]:
    client = rds(region, session)
    return ({i["DBInstanceIdentifier"] for i in client.describe_db_instances()["DBInstances"]}
            | {c["DBClusterIdentifier"] for c in client.describe_db_clusters()["DBClusters"]})


def _creating_fails(identifier: str, message: str):
    """create_db_instance of `identifier` fails as AWS's does when a zone has no capacity left."""
    def named(args: tuple, kwargs: dict) -> bool:
        db_kwargs = args[0] if args else kwargs.get("db_kwargs", {})
        return db_kwargs.get("db_instance_identifier") == identifier

    return faults.failing_method(rds_models.RDSBackend, "create_db_instance",
                                 lambda: rds_errors.RDSClientError("InsufficientDBInstanceCapacity", message),
                                 when=named)


def _topic(harness):
    from moto.sns.models import sns_backends

    return sns_backends[CONTROL_ACCOUNT][REGION].topics[harness.app.control.outputs["FailureTopicArn"]]


def _vault_session() -> boto3.Session:
    credentials = boto3.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{TARGET_ACCOUNT}:role/rdsbackup-restore-{REGION}", RoleSessionName="test")["Credentials"]
    return boto3.Session(aws_access_key_id=credentials["AccessKeyId"],
                         aws_secret_access_key=credentials["SecretAccessKey"],
                         aws_session_token=credentials["SessionToken"])


def _transitions(harness, described: dict) -> int:
    return sum(1 for event in harness.history(described["executionArn"]) if event["type"].endswith("StateEntered"))


def test_instance_snapshot_restores_to_a_new_instance_with_the_recorded_settings(harness):
    net = network()
    arn = _source_instance("orders-db", net)
    snapshot = _backup(harness, arn, "backup")["snapshot_arn"]
    described, report = _restore(harness, {"restore": "snapshot", "snapshot_arn": snapshot,
                                           "target": {"identifier": "orders-db-restored"}}, "restore-instance")
    assert described["status"] == "SUCCEEDED", report
    restored, source = _instance("orders-db-restored"), _instance("orders-db")
    for setting in ("DBInstanceClass", "Engine", "StorageType", "Iops", "MultiAZ", "AvailabilityZone",
                    "IAMDatabaseAuthenticationEnabled", "DBSubnetGroup", "VpcSecurityGroups", "DBParameterGroups"):
        assert restored[setting] == source[setting], setting
    assert restored["Endpoint"]["Port"] == 5433
    assert restored["PubliclyAccessible"] is False, "never public unless the input says so"
    tags = {t["Key"]: t["Value"] for t in restored["TagList"]}
    assert tags["team"] == "orders" and tags["cost-center"] == "42"
    assert tags["rdsbackup:restore"] == report["restore_id"]
    assert report["status"] == "Success" and report["metadata_verified"] is True
    assert {"instance_class", "subnet_group", "security_groups", "parameter_group", "port", "iops",
            "tags"} <= set(report["settings_from_metadata"])
    assert report["settings_from_input"] == []
    (created,) = report["created"]
    assert created["arn"] == restored["DBInstanceArn"] and created["status"] == "available"
    record = boto3.client("dynamodb", region_name=REGION).get_item(
        TableName=harness.app.control.outputs["SessionTableName"], Key={"pk": {"S": f"restore#{report['restore_id']}"}})
    assert json.loads(record["Item"]["report"]["S"])["created"] == report["created"]
    checks = [e for e in harness.history(described["executionArn"])
              if e["type"] == "TaskStateEntered" and e["stateEnteredEventDetails"]["name"] == "Check restore"]
    assert len(checks) == 3, "restored instances pass through `creating` before they are available"
    print(f"\ninstance restore: {_transitions(harness, described)} state transitions")


def test_input_overrides_recorded_settings_and_says_so(harness):
    net = network()
    snapshot = _backup(harness, _source_instance("orders-db", net), "backup")["snapshot_arn"]
    described, report = _restore(harness, {"restore": "snapshot", "snapshot_arn": snapshot, "target": {
        "identifier": "orders-db-small", "instance_class": "db.t4g.micro", "port": 6543, "multi_az": True,
        "tags": {"purpose": "drill"}}}, "restore-overrides")
    assert described["status"] == "SUCCEEDED", report
    restored = _instance("orders-db-small")
    assert restored["DBInstanceClass"] == "db.t4g.micro" and restored["MultiAZ"] is True
    assert restored["Endpoint"]["Port"] == 6543
    assert {t["Key"]: t["Value"] for t in restored["TagList"]}.get("purpose") == "drill"
    assert {"instance_class", "port", "multi_az", "tags"} <= set(report["settings_from_input"])
    assert "instance_class" not in report["settings_from_metadata"]


def test_cluster_snapshot_restores_the_cluster_and_all_three_instances(harness):
    arn = create_aurora_cluster("ledger", instances=3, tags={"backup": "nightly"})
    snapshot = _backup(harness, arn, "backup-cluster")["snapshot_arn"]
    described, report = _restore(harness, {"restore": "snapshot", "snapshot_arn": snapshot,
                                           "target": {"identifier": "ledger-copy"}}, "restore-cluster")
    assert described["status"] == "SUCCEEDED", report
    cluster = rds().describe_db_clusters(DBClusterIdentifier="ledger-copy")["DBClusters"][0]
    assert cluster["Engine"] == "aurora-postgresql" and cluster["Status"] == "available"
    restored, source = _instances("ledger-copy"), _instances("ledger")
    assert [i["DBInstanceIdentifier"] for i in restored] == ["ledger-copy-1", "ledger-copy-2", "ledger-copy-3"]
    for new, old in zip(restored, source, strict=True):
        for setting in ("DBInstanceClass", "AvailabilityZone", "PromotionTier", "Engine"):
            assert new[setting] == old[setting], (new["DBInstanceIdentifier"], setting)
        assert new["PubliclyAccessible"] is False
    writers = [m["DBInstanceIdentifier"] for m in cluster["DBClusterMembers"] if m["IsClusterWriter"]]
    assert writers == ["ledger-copy-1"], "the recorded writer (promotion tier 0) is created first"
    assert [c["identifier"] for c in report["created"]] == ["ledger-copy", "ledger-copy-1", "ledger-copy-2",
                                                            "ledger-copy-3"]
    history = harness.history(described["executionArn"])
    entered = [e["stateEnteredEventDetails"]["name"] for e in history if e["type"] == "TaskStateEntered"]
    assert entered.index("Create writer") < entered.index("Create readers")
    print(f"\n3-instance cluster restore: {_transitions(harness, described)} state transitions")


def test_replace_mode_renames_the_original_aside_and_restores_under_its_name(harness):
    net = network()
    arn = _source_instance("orders-db", net)
    snapshot = _backup(harness, arn, "backup")["snapshot_arn"]
    described, report = _restore(harness, {"restore": "snapshot", "snapshot_arn": snapshot, "mode": "replace",
                                           "target": {"identifier": "orders-db"}}, "replace")
    assert described["status"] == "SUCCEEDED", report
    (aside,) = report["renamed_aside"]
    assert aside["original"] == "orders-db" and aside["renamed"].startswith("orders-db-replaced-")
    original = _instance(aside["renamed"])
    assert "rdsbackup:restore" not in {t["Key"] for t in original["TagList"]}, "the original is left running"
    assert {t["Key"]: t["Value"] for t in _instance("orders-db")["TagList"]}["rdsbackup:restore"] == \
        report["restore_id"]


def test_replace_mode_renames_the_original_back_when_the_restore_fails(harness):
    net = network()
    arn = _source_instance("orders-db", net)
    snapshot = _backup(harness, arn, "backup")["snapshot_arn"]
    with faults.failing("restore_db_instance_from_db_snapshot",
                        lambda: rds_errors.RDSClientError("StorageQuotaExceeded", "no storage left")):
        described, report = _restore(harness, {"restore": "snapshot", "snapshot_arn": snapshot, "mode": "replace",
                                               "target": {"identifier": "orders-db"}}, "replace-fails")
    assert described["status"] == "FAILED" and report["status"] == "Failed"
    assert "StorageQuotaExceeded" in report["error"]
    assert _identifiers() == {"orders-db"}, "the original has its name back and nothing else is left"
    assert "rdsbackup:restore" not in {t["Key"] for t in _instance("orders-db")["TagList"]}
    assert report["cleanup"]["renamed_back"] == ["orders-db"]


def test_replace_of_a_database_no_policy_selects_is_refused_before_anything_is_renamed(harness):
    """The restore role may rename only what the policies may select (and what a restore made): IAM would
    refuse the rename on AWS, so the planner refuses first, naming the database and what to do."""
    net = network()
    snapshot = _backup(harness, _source_instance("orders-db", net), "backup")["snapshot_arn"]
    rds().create_db_instance(DBInstanceIdentifier="payroll-db", Engine="postgres", DBInstanceClass="db.t4g.micro",
                             AllocatedStorage=20, MasterUsername="admin_user", MasterUserPassword="not-a-real-secret-1",
                             Tags=[{"Key": "team", "Value": "payroll"}])
    before = _identifiers()
    described, report = _restore(harness, {"restore": "snapshot", "snapshot_arn": snapshot, "mode": "replace",
                                           "target": {"identifier": "payroll-db"}}, "replace-unselected")
    assert described["status"] == "FAILED", report
    assert report["error"].startswith(
        "TargetNotReplaceable: mode \"replace\": no policy selects DB instance 'payroll-db' in account "
        f"{CONTROL_ACCOUNT} region {REGION}"), report["error"]
    assert "nothing was changed" in report["error"] and "\"mode\": \"new\"" in report["error"]
    assert _identifiers() == before, "nothing renamed, nothing restored"
    assert "cleanup" not in report


def test_replace_of_a_cluster_whose_instances_carry_no_selection_tag_is_refused_before_anything_is_renamed(harness):
    """ledger is selected by its tag (backup=nightly); IAM checks each instance's own tags, and its instances
    carry none: renaming them would be refused half-way, so nothing is renamed."""
    arn = create_aurora_cluster("ledger", instances=2, tags={"backup": "nightly"})
    snapshot = _backup(harness, arn, "backup-cluster")["snapshot_arn"]
    described, report = _restore(harness, {"restore": "snapshot", "snapshot_arn": snapshot, "mode": "replace",
                                           "target": {"identifier": "ledger"}}, "replace-members")
    assert described["status"] == "FAILED", report
    assert report["error"].startswith(
        "TargetNotReplaceable: mode \"replace\": no policy selects DB instance 'ledger-1' (an instance of cluster "
        "'ledger')"), report["error"]
    assert _identifiers() == {"ledger", "ledger-1", "ledger-2"}


def test_a_failure_while_creating_readers_deletes_everything_this_restore_made(harness):
    arn = create_aurora_cluster("ledger", instances=3, tags={"backup": "nightly"})
    snapshot = _backup(harness, arn, "backup-cluster")["snapshot_arn"]
    with _creating_fails("ledger-copy-3", "no db.r6g.large left in us-east-1c"):
        described, report = _restore(harness, {"restore": "snapshot", "snapshot_arn": snapshot,
                                               "target": {"identifier": "ledger-copy"}}, "readers-fail")
    assert described["status"] == "FAILED", report
    assert "InsufficientDBInstanceCapacity" in report["error"]
    assert _identifiers() == {"ledger", "ledger-1", "ledger-2", "ledger-3"}, "restored cluster and instances deleted"
    assert set(report["cleanup"]["deleted"]) == {"instance ledger-copy-1", "instance ledger-copy-2",
                                                 "cluster ledger-copy"}
    assert cluster_snapshots("ledger-copy") == [], "no final snapshot"


def test_keep_on_failure_leaves_what_was_created(harness):
    arn = create_aurora_cluster("ledger", instances=2, tags={"backup": "nightly"})
    snapshot = _backup(harness, arn, "backup-cluster")["snapshot_arn"]
    with _creating_fails("ledger-copy-2", "none left"):
        described, report = _restore(harness, {"restore": "snapshot", "snapshot_arn": snapshot, "keep_on_failure": True,
                                               "target": {"identifier": "ledger-copy"}}, "keep")
    assert described["status"] == "FAILED"
    assert {"ledger-copy", "ledger-copy-1"} <= _identifiers()
    assert set(report["cleanup"]["kept"]) == {"cluster ledger-copy", "instance ledger-copy-1"}


def test_a_target_that_exists_is_refused_before_anything_is_created(harness):
    net = network()
    snapshot = _backup(harness, _source_instance("orders-db", net), "backup")["snapshot_arn"]
    before = _identifiers()
    described, report = _restore(harness, {"restore": "snapshot", "snapshot_arn": snapshot,
                                           "target": {"identifier": "orders-db"}}, "exists")
    assert described["status"] == "FAILED"
    assert report["error"].startswith("TargetExists: a DB instance named 'orders-db' exists already")
    assert _identifiers() == before
    assert "cleanup" not in report
    (notification,) = [n for n in _topic(harness).sent_notifications if "restore" in n[2]]
    assert json.loads(notification[1])["restore_id"] == report["restore_id"], "the failure is published to SNS"


def test_tampered_metadata_is_refused_with_the_reason(harness):
    net = network()
    snapshot = _backup(harness, _source_instance("orders-db", net), "backup")["snapshot_arn"]
    tags = {t["Key"]: t["Value"] for t in rds().list_tags_for_resource(ResourceName=snapshot)["TagList"]}
    last = max(key for key in tags if key.startswith("rdsbackup:meta:"))
    part = tags[last].rstrip("=")
    # a character of the authenticated ciphertext (the end of the blob), not of the wrapped data key
    flipped = part[:-5] + ("A" if part[-5] != "A" else "B") + tags[last][len(part) - 4:]
    rds().add_tags_to_resource(ResourceName=snapshot, Tags=[{"Key": last, "Value": flipped}])
    before = _identifiers()
    described, report = _restore(harness, {"restore": "snapshot", "snapshot_arn": snapshot,
                                           "target": {"identifier": "orders-db-restored"}}, "tampered")
    assert described["status"] == "FAILED"
    assert report["error"].startswith("TagMetadataTampered:"), report["error"]
    assert _identifiers() == before


def test_a_snapshot_rds_backup_did_not_make_needs_every_setting_in_the_input(harness):
    net = network()
    _source_instance("manual-db", net)
    rds().create_db_snapshot(DBSnapshotIdentifier="by-hand", DBInstanceIdentifier="manual-db")
    snapshot = db_snapshots("manual-db")[0]["DBSnapshotArn"]
    described, report = _restore(harness, {"restore": "snapshot", "snapshot_arn": snapshot,
                                           "target": {"identifier": "manual-copy"}}, "unmanaged")
    assert described["status"] == "FAILED"
    assert "missing: instance_class, subnet_group, security_groups" in report["error"]
    described, report = _restore(harness, {"restore": "snapshot", "snapshot_arn": snapshot, "target": {
        "identifier": "manual-copy", "instance_class": "db.t4g.small", "subnet_group": "app-subnets",
        "security_groups": [net["app_group"]]}}, "unmanaged-with-settings")
    assert described["status"] == "SUCCEEDED", report
    assert report["metadata_verified"] is False
    assert _instance("manual-copy")["DBInstanceClass"] == "db.t4g.small"


def test_a_replica_restores_in_the_replica_account(harness):
    key = boto3.client("kms", region_name=REGION).create_key(Description="customer key")["KeyMetadata"]["Arn"]
    client = rds()
    created = client.create_db_instance(
        DBInstanceIdentifier="vault-db", Engine="postgres", DBInstanceClass="db.t3.micro", AllocatedStorage=20,
        MasterUsername="admin_user", MasterUserPassword="not-a-real-secret-1", StorageEncrypted=True, KmsKeyId=key,
        Tags=[{"Key": "backup", "Value": "vault"}])
    resource = _backup(harness, created["DBInstance"]["DBInstanceArn"], "vault", policy="vault")
    (replica_arn,) = resource["replica_arns"]
    assert f":{TARGET_ACCOUNT}:" in replica_arn
    restore = {"restore": "snapshot", "snapshot_arn": replica_arn, "target": {"identifier": "vault-db-restored"}}
    described, report = _restore(harness, restore, "replica-refused")
    assert "the recorded security_groups do not exist there" in report["error"]
    restore["target"]["security_groups"] = []  # the vault account's default group
    described, report = _restore(harness, restore, "replica")
    assert described["status"] == "SUCCEEDED", report
    assert report["target"] == {"identifier": "vault-db-restored", "account": TARGET_ACCOUNT, "region": REGION,
                                "kind": "instance"}
    restored = _instance("vault-db-restored", session=_vault_session())
    assert restored["DBInstanceClass"] == "db.t3.micro"
    assert "vault-db-restored" not in _identifiers(), "restored in the replica account, not the source's"
    assert CONTROL_ACCOUNT not in restored["DBInstanceArn"]


def test_input_that_is_not_a_restore_is_refused(harness):
    described = harness.run({"policy": "nightly"}, name="not-a-restore", workflow="Restore")
    assert described["status"] == "FAILED" and described["error"] == "InvalidInput"
    described, report = _restore(harness, {"restore": "snapshot", "snapshot_arn": "orders",
                                           "target": {"identifier": "x--y"}}, "bad-fields")
    assert described["status"] == "FAILED"
    assert "snapshot_arn" in report["error"] and "target.identifier" in report["error"]


def test_a_snapshot_restores_in_another_region_from_a_copy_that_is_removed_after(harness):
    client = rds()
    key = boto3.client("kms", region_name=REPLICA_REGION).create_key(Description="dr key")["KeyMetadata"]["Arn"]
    created = client.create_db_instance(
        DBInstanceIdentifier="geo-db", Engine="postgres", DBInstanceClass="db.t3.small", AllocatedStorage=20,
        MasterUsername="admin_user", MasterUserPassword="not-a-real-secret-1",
        Tags=[{"Key": "backup", "Value": "nightly"}])
    snapshot = _backup(harness, created["DBInstance"]["DBInstanceArn"], "geo")["snapshot_arn"]
    described, report = _restore(harness, {"restore": "snapshot", "snapshot_arn": snapshot, "target": {
        "identifier": "geo-db-dr", "region": REPLICA_REGION, "security_groups": [], "kms_key_arn": key}},
        "other-region")
    assert described["status"] == "SUCCEEDED", report
    restored = _instance("geo-db-dr", region=REPLICA_REGION)
    assert restored["DBInstanceClass"] == "db.t3.small"
    assert report["target"]["region"] == REPLICA_REGION
    assert rds(REPLICA_REGION).describe_db_snapshots(SnapshotType="manual")["DBSnapshots"] == [], \
        "the copy in the target region is removed once the restore is done"
    assert [s["DBSnapshotArn"] for s in db_snapshots("geo-db")] == [snapshot], "the source snapshot stays"


def test_a_replica_restores_into_a_production_account_through_a_shared_copy(harness):
    key = boto3.client("kms", region_name=REGION).create_key(Description="customer key")["KeyMetadata"]["Arn"]
    created = rds().create_db_instance(
        DBInstanceIdentifier="vault-db", Engine="postgres", DBInstanceClass="db.t3.micro", AllocatedStorage=20,
        MasterUsername="admin_user", MasterUserPassword="not-a-real-secret-1", StorageEncrypted=True, KmsKeyId=key,
        Tags=[{"Key": "backup", "Value": "vault"}])
    (replica_arn,) = _backup(harness, created["DBInstance"]["DBInstanceArn"], "vault", policy="vault")["replica_arns"]
    described, report = _restore(harness, {"restore": "snapshot", "snapshot_arn": replica_arn, "target": {
        "identifier": "vault-db-back", "account": CONTROL_ACCOUNT, "kms_key_arn": key}}, "replica-to-production")
    assert described["status"] == "SUCCEEDED", report
    assert _instance("vault-db-back")["DBInstanceClass"] == "db.t3.micro"
    assert report["target"]["account"] == CONTROL_ACCOUNT
    copies = [s for s in rds().describe_db_snapshots(SnapshotType="manual")["DBSnapshots"]
              if s["DBSnapshotIdentifier"].startswith("rdsbackup-restore-")]
    assert copies == [], "the copy in the production account is removed"
    vault = _vault_session()
    shared = vault.client("rds", region_name=REGION).describe_db_snapshot_attributes(
        DBSnapshotIdentifier=replica_arn.split(":")[-1])["DBSnapshotAttributesResult"]["DBSnapshotAttributes"]
    assert all(CONTROL_ACCOUNT not in a.get("AttributeValues", []) for a in shared), "the share is withdrawn"
