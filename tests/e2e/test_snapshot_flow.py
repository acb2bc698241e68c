"""The synthesized backup state machine, executed by moto with the real handlers, end to end."""

from __future__ import annotations

import json
import time

import boto3
import pytest

from tests.e2e import faults
from tests.e2e.configs import FAST_TIMING, REGION, REPLICA_REGION, TARGET_ACCOUNT
from tests.e2e.conftest import report_of
from tests.e2e.fixtures import cluster_snapshots, create_aurora_cluster, create_instance, db_snapshots, rds


def _target_session() -> boto3.Session:
    credentials = boto3.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{TARGET_ACCOUNT}:role/rdsbackup-replica-{REGION}", RoleSessionName="test",
    )["Credentials"]
    return boto3.Session(aws_access_key_id=credentials["AccessKeyId"],
                         aws_secret_access_key=credentials["SecretAccessKey"],
                         aws_session_token=credentials["SessionToken"])


def _resource(report: dict, identifier: str) -> dict:
    return next(r for r in report["resources"] if r["arn"].endswith(f":{identifier}"))


def test_rds_postgres_instance_is_snapshotted_and_tagged(harness):
    arn = create_instance("orders-db")
    described = harness.run({"policy": "nightly"}, name="first")
    report = report_of(described)
    assert described["status"] == "SUCCEEDED", report
    assert report["status"] == "Success"
    (resource,) = report["resources"]
    assert resource["arn"] == arn and resource["status"] == "Success" and resource["error"] is None
    (snapshot,) = db_snapshots("orders-db")
    assert snapshot["DBSnapshotArn"] == resource["snapshot_arn"]
    assert snapshot["DBSnapshotIdentifier"].startswith("rdsbackup-nightly-orders-db-")
    metadata = harness.decode_tags(snapshot["DBSnapshotArn"])
    assert metadata["policy"] == "nightly"
    assert metadata["source"]["arn"] == arn
    plain = {t["Key"]: t["Value"] for t in rds().list_tags_for_resource(
        ResourceName=snapshot["DBSnapshotArn"])["TagList"]}
    assert plain["rdsbackup:managed"] == "true"
    assert "nightly" not in json.dumps({k: v for k, v in plain.items() if not k.startswith("rdsbackup:meta")})
    record = boto3.resource("dynamodb", region_name=REGION).Table(
        harness.app.control.outputs["SessionTableName"]).get_item(Key={"pk": f"session#{report['session_id']}"})
    assert record["Item"]["status"] == "Success"


def test_aurora_cluster_snapshot_records_all_three_instances(harness):
    arn = create_aurora_cluster("ledger", instances=3, tags={"backup": "nightly"})
    described = harness.run({"policy": "nightly", "resources": [arn]}, name="aurora")
    report = report_of(described)
    assert described["status"] == "SUCCEEDED", report
    (snapshot,) = cluster_snapshots("ledger")
    metadata = harness.decode_tags(snapshot["DBClusterSnapshotArn"])
    instances = sorted(metadata["source"]["instances"] if "instances" in metadata["source"]
                       else metadata["instances"], key=lambda i: i["identifier"])
    assert [i["identifier"] for i in instances] == ["ledger-1", "ledger-2", "ledger-3"]
    assert {i["promotion_tier"] for i in instances} == {0, 1, 2}
    assert all(i["class"] == "db.r6g.large" and i["availability_zone"] for i in instances)


def test_tag_selection_picks_tagged_databases_and_skips_cluster_members(harness):
    tagged = create_instance("reports-db", tags={"backup": "nightly"})
    create_instance("scratch-db", tags={"backup": "never"})
    cluster = create_aurora_cluster("ledger", instances=2, tags={"backup": "nightly"})
    create_instance("orders-db")  # selected by id
    report = report_of(harness.run({"policy": "nightly"}, name="tags"))
    selected = {r["arn"] for r in report["resources"]}
    assert selected == {tagged, cluster, f"arn:aws:rds:{REGION}:123456789012:db:orders-db"}
    assert db_snapshots("scratch-db") == []


def test_replication_to_another_region(harness):
    create_instance("geo-db", tags={"backup": "regional"})
    report = report_of(harness.run({"policy": "regional"}, name="regional"))
    resource = _resource(report, "geo-db")
    assert resource["status"] == "Success", resource
    (replica_arn,) = resource["replica_arns"]
    assert f":rds:{REPLICA_REGION}:" in replica_arn
    replica = rds(REPLICA_REGION).describe_db_snapshots(DBSnapshotIdentifier=replica_arn.split(":")[-1])[
        "DBSnapshots"][0]
    assert replica["Encrypted"] is True
    assert harness.decode_tags(replica_arn, region=REPLICA_REGION)["source"]["id"] == "geo-db"


def test_replication_into_another_account(harness):
    key = boto3.client("kms", region_name=REGION).create_key(Description="customer key")["KeyMetadata"]["Arn"]
    create_instance("vault-db", tags={"backup": "vault"}, kms_key_id=key)
    report = report_of(harness.run({"policy": "vault"}, name="vault"))
    resource = _resource(report, "vault-db")
    assert resource["status"] == "Success", resource
    (replica_arn,) = resource["replica_arns"]
    assert f":{TARGET_ACCOUNT}:snapshot:" in replica_arn
    target = _target_session()
    replica = target.client("rds", region_name=REGION).describe_db_snapshots(
        DBSnapshotIdentifier=replica_arn.split(":")[-1])["DBSnapshots"][0]
    assert TARGET_ACCOUNT in replica["KmsKeyId"] or "alias/rdsbackup-replica" in replica["KmsKeyId"]
    assert harness.decode_tags(replica_arn, session=target)["source"]["id"] == "vault-db"


def test_default_key_source_is_staged_on_a_customer_key_and_the_staging_copy_removed(harness):
    default_key = boto3.client("kms", region_name=REGION).describe_key(KeyId="alias/aws/rds")["KeyMetadata"]["Arn"]
    create_instance("legacy-db", tags={"backup": "vault"}, kms_key_id=default_key)
    report = report_of(harness.run({"policy": "vault"}, name="default-key"))
    resource = _resource(report, "legacy-db")
    assert resource["status"] == "Success", resource
    assert len(resource["replica_arns"]) == 1
    own = db_snapshots("legacy-db")
    assert [s["DBSnapshotIdentifier"] for s in own] == [resource["snapshot_arn"].split(":")[-1]], \
        "the staging copy must be gone"


def test_region_then_account_chain(harness):
    create_instance("far-db", tags={"backup": "faraway"})
    report = report_of(harness.run({"policy": "faraway"}, name="faraway"))
    resource = _resource(report, "far-db")
    assert resource["status"] == "Success", resource
    (replica_arn,) = resource["replica_arns"]
    assert f":rds:{REPLICA_REGION}:{TARGET_ACCOUNT}:" in replica_arn
    assert rds(REPLICA_REGION).describe_db_snapshots(SnapshotType="manual")["DBSnapshots"] == [], \
        "no staging copy may stay in the source account's replica region"


def test_retention_keeps_the_newest_n_and_never_touches_other_snapshots(harness):
    create_instance("orders-db")
    rds().create_db_snapshot(DBSnapshotIdentifier="users-own-snapshot", DBInstanceIdentifier="orders-db")
    rds().create_db_snapshot(DBSnapshotIdentifier="rdsbackup-nightly-orders-db-forged",
                             DBInstanceIdentifier="orders-db",
                             Tags=[{"Key": "rdsbackup:managed", "Value": "true"}])
    made = []
    for run in range(4):
        report = report_of(harness.run({"policy": "nightly"}, name=f"retention-{run}"))
        made.append(report["resources"][0]["snapshot_arn"])
        time.sleep(1.1)  # distinct session ids and creation times
    remaining = {s["DBSnapshotArn"] for s in db_snapshots("orders-db")}
    arn = "arn:aws:rds:us-east-1:123456789012:snapshot:"
    assert remaining == {*made[-2:], arn + "users-own-snapshot", arn + "rdsbackup-nightly-orders-db-forged"}
    assert report["resources"][0]["retention_deleted"] == [made[1]]
    assert report["status"] == "Warning"  # the forged marker is reported, not deleted


def test_one_failing_resource_does_not_stop_the_others(harness):
    for name in ("orders-db", "reports-db", "broken-db"):
        create_instance(name, tags={"backup": "nightly"})
    with faults.failing("create_db_snapshot", faults.invalid_state,
                        when=lambda kwargs: kwargs.get("db_instance_identifier") == "broken-db") as fault:
        described = harness.run({"policy": "nightly"}, name="one-fails")
    report = report_of(described)
    assert described["status"] == "FAILED" and described["error"] == "BackupSessionFailed"
    assert report["status"] == "Failed"
    statuses = {r["arn"].split(":")[-1]: r["status"] for r in report["resources"]}
    assert statuses == {"orders-db": "Success", "reports-db": "Success", "broken-db": "Failed"}
    broken = _resource(report, "broken-db")
    assert broken["error"].startswith("DBNotAvailable:")
    assert fault["raised"] == 1 + FAST_TIMING["not_available_max_attempts"]  # retried within its bound
    assert len(db_snapshots("orders-db")) == 1 and db_snapshots("broken-db") == []


def test_second_run_for_a_source_fails_fast_while_the_first_holds_the_lease(harness):
    create_instance("orders-db")
    with faults.slow_snapshots(describes_before_available=5):
        first = harness.start({"policy": "nightly"}, name="holder")
        deadline = time.monotonic() + 30
        while not any(i.handler.endswith("check_snapshot.handler") for i in harness.lambdas.invocations):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        second = report_of(harness.run({"policy": "nightly"}, name="latecomer"))
        first_report = report_of(harness.wait(first))
    assert first_report["status"] == "Success"
    (blocked,) = second["resources"]
    assert blocked["status"] == "Failed"
    assert blocked["error"].startswith("LeaseHeld:") and "already running" in blocked["error"]
    assert len(db_snapshots("orders-db")) == 1


def test_a_crashed_holders_lease_expires(harness):
    create_instance("orders-db")
    table = boto3.resource("dynamodb", region_name=REGION).Table(harness.app.control.outputs["SessionTableName"])
    table.put_item(Item={"pk": "lease#arn:aws:rds:us-east-1:123456789012:db:orders-db", "owner": "crashed",
                         "expires_at": int(time.time()) - 5})
    report = report_of(harness.run({"policy": "nightly"}, name="after-crash"))
    assert report["status"] == "Success"


def test_quota_exceeded_then_success(harness):
    create_instance("orders-db")
    with faults.failing("create_db_snapshot", faults.quota_exceeded, times=1) as fault:
        described = harness.run({"policy": "nightly"}, name="quota-once")
    report = report_of(described)
    assert report["status"] == "Success" and fault["raised"] == 1
    (resource_execution,) = harness.resource_executions(described)
    events = harness.history(resource_execution)
    # AWS records a failed lambda:invoke task as TaskFailed; moto as LambdaFunctionFailed
    failures = [e.get("taskFailedEventDetails") or e.get("lambdaFunctionFailedEventDetails") for e in events
                if e["type"] in ("TaskFailed", "LambdaFunctionFailed")]
    assert [f["error"] for f in failures] == ["SnapshotQuotaExceeded"]


def test_quota_exceeded_for_good_fails_with_a_clear_error(harness):
    create_instance("orders-db")
    with faults.failing("create_db_snapshot", faults.quota_exceeded) as fault:
        described = harness.run({"policy": "nightly"}, name="quota-always")
    report = report_of(described)
    (resource,) = report["resources"]
    assert resource["status"] == "Failed"
    assert resource["error"].startswith("SnapshotQuotaExceeded:") and "quota" in resource["error"]
    assert fault["raised"] == 1 + FAST_TIMING["retry_max_attempts"]
    table = boto3.resource("dynamodb", region_name=REGION).Table(harness.app.control.outputs["SessionTableName"])
    assert "Item" not in table.get_item(Key={"pk": "lease#arn:aws:rds:us-east-1:123456789012:db:orders-db"})


def test_unknown_policy_fails_the_session_with_a_record(harness):
    described = harness.run({"policy": "nope"}, name="unknown")
    assert described["status"] == "FAILED"
    report = report_of(described)
    assert report["status"] == "Failed" and "UnknownPolicy" in report["error"]


@pytest.mark.parametrize("bad_input", [{}, {"resources": ["x"]}])
def test_input_without_policy_is_rejected_clearly(harness, bad_input):
    described = harness.run(bad_input, name="bad-input-" + str(len(bad_input)))
    assert described["status"] == "FAILED" and described["error"] == "InvalidInput"
