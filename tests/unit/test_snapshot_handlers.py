"""create_snapshot, check_snapshot and tag_snapshot, called as the state machine calls them."""

from __future__ import annotations

from unittest import mock

import botocore.client
import pytest
from botocore.exceptions import ClientError
from rdsbackup_lambdas.errors import (
    ConfigurationError,
    DBNotAvailable,
    SnapshotFailed,
    SnapshotQuotaExceeded,
    SnapshotWaitTimeout,
    SourceNotFound,
    TagLimitExceeded,
    Throttled,
)
from rdsbackup_lambdas.handlers import check_snapshot, create_snapshot, tag_snapshot
from rdsbackup_lambdas.snapshot_steps import tag_codec

_real_make_api_call = botocore.client.BaseClient._make_api_call


def fail_operation(operation: str, code: str, message: str = "from the test"):
    """Patch botocore so ``operation`` raises the AWS error ``code`` (moto never produces it)."""

    def fake(self, operation_name, params):
        if operation_name == operation:
            raise ClientError({"Error": {"Code": code, "Message": message}}, operation_name)
        return _real_make_api_call(self, operation_name, params)

    return mock.patch("botocore.client.BaseClient._make_api_call", fake)


def snapshot_status(status: str):
    """Patch DescribeDBSnapshots/DescribeDBClusterSnapshots to report ``status`` (moto is always available)."""

    def fake(self, operation_name, params):
        result = _real_make_api_call(self, operation_name, params)
        for key in ("DBSnapshots", "DBClusterSnapshots"):
            for snap in result.get(key, []):
                snap["Status"] = status
        return result

    return mock.patch("botocore.client.BaseClient._make_api_call", fake)


def test_instance_snapshot_is_created_with_a_session_derived_name(world, ctx):
    item = world.item(world.instance())
    snap = create_snapshot.handler(item, ctx)
    assert snap["id"] == "rdsbackup-demo-orders-20261125t031500-a1b2c3"
    assert snap["kind"] == "instance" and snap["encrypted"] is True and snap["existed"] is False
    assert snap["arn"] == f"arn:aws:rds:us-east-1:{item['resource']['account']}:snapshot:{snap['id']}"
    tags = world.client("rds").list_tags_for_resource(ResourceName=snap["arn"])["TagList"]
    assert tags == [{"Key": "rdsbackup:managed", "Value": "true"}]


def test_aurora_cluster_gets_a_db_cluster_snapshot(world, ctx):
    snap = create_snapshot.handler(world.item(world.cluster()), ctx)
    assert snap["kind"] == "cluster" and ":cluster-snapshot:" in snap["arn"]
    found = world.client("rds").describe_db_cluster_snapshots(DBClusterSnapshotIdentifier=snap["id"])
    assert found["DBClusterSnapshots"][0]["DBClusterIdentifier"] == "ledger"


def test_retried_create_returns_the_snapshot_the_first_try_made(world, ctx):
    item = world.item(world.instance())
    first = create_snapshot.handler(item, ctx)
    second = create_snapshot.handler(item, ctx)
    assert second["arn"] == first["arn"] and second["existed"] is True
    manual = world.client("rds").describe_db_snapshots(DBInstanceIdentifier="orders", SnapshotType="manual")
    assert len(manual["DBSnapshots"]) == 1


def test_missing_source_is_source_not_found(world, ctx):
    item = world.item(world.instance())
    item["resource"] = {**item["resource"], "id": "gone", "arn": item["resource"]["arn"].replace("orders", "gone")}
    with pytest.raises(SourceNotFound, match="'gone' not found in account"):
        create_snapshot.handler(item, ctx)


def test_quota_exceeded_is_mapped(world, ctx, monkeypatch):
    item = world.item(world.instance())
    monkeypatch.setenv("MOTO_RDS_SNAPSHOT_LIMIT", "0")  # moto's own quota error
    with pytest.raises(SnapshotQuotaExceeded, match="snapshot quota"):
        create_snapshot.handler(item, ctx)


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("SnapshotQuotaExceeded", SnapshotQuotaExceeded),
        ("Throttling", Throttled),
        ("ThrottlingException", Throttled),
        ("RequestLimitExceeded", Throttled),
        ("InvalidDBInstanceState", DBNotAvailable),
    ],
)
def test_aws_errors_of_instance_snapshots_get_our_names(world, ctx, code, error):
    item = world.item(world.instance())
    with fail_operation("CreateDBSnapshot", code), pytest.raises(error, match="orders"):
        create_snapshot.handler(item, ctx)


def test_cluster_in_an_invalid_state_is_db_not_available(world, ctx):
    item = world.item(world.cluster())
    with fail_operation("CreateDBClusterSnapshot", "InvalidDBClusterStateFault"), pytest.raises(DBNotAvailable):
        create_snapshot.handler(item, ctx)


def test_cluster_member_named_as_an_instance_is_refused(world, ctx):
    world.cluster()
    member = world.client("rds").describe_db_instances(DBInstanceIdentifier="ledger-1")["DBInstances"][0]
    with pytest.raises(SourceNotFound, match="member of Aurora cluster 'ledger'"):
        create_snapshot.handler(world.item(member), ctx)


def test_check_reports_ready_when_available(world, ctx):
    item = world.item(world.instance())
    item["snapshot"] = create_snapshot.handler(item, ctx)
    result = check_snapshot.handler(item, ctx)
    assert result["ready"] is True and result["attempt"] == 1 and result["waited_seconds"] == 0


def test_check_loop_grows_its_interval_then_times_out(world, ctx):
    item = world.item(world.instance())  # wait: initial 5, factor 2, max 20, timeout 60
    item["snapshot"] = create_snapshot.handler(item, ctx)
    waits, waited = [], []
    with snapshot_status("creating"), pytest.raises(SnapshotWaitTimeout, match="still not ready after 60 s"):
        for _ in range(20):
            result = check_snapshot.handler(item, ctx)
            assert result["ready"] is False
            waits.append(result["wait_seconds"])
            waited.append(result["waited_seconds"])
            item["snapshot_wait"] = result
    assert waits == [5, 10, 20, 20, 5]  # grows, capped at max, the last one trimmed to the timeout
    assert waited == [0, 5, 15, 35, 55]


def test_failed_snapshot_is_snapshot_failed(world, ctx):
    item = world.item(world.instance())
    item["snapshot"] = create_snapshot.handler(item, ctx)
    with snapshot_status("failed"), pytest.raises(SnapshotFailed, match="'failed'"):
        check_snapshot.handler(item, ctx)


def test_vanished_snapshot_is_snapshot_failed(world, ctx):
    item = world.item(world.instance())
    item["snapshot"] = create_snapshot.handler(item, ctx)
    world.client("rds").delete_db_snapshot(DBSnapshotIdentifier=item["snapshot"]["id"])
    with pytest.raises(SnapshotFailed, match="disappeared"):
        check_snapshot.handler(item, ctx)


def test_tagged_aurora_snapshot_records_every_instance_of_the_cluster(world, ctx):
    item = world.item(world.cluster(instances=3))
    item["snapshot"] = create_snapshot.handler(item, ctx)
    result = tag_snapshot.handler(item, ctx)
    assert result["instances_recorded"] == 3
    rds = world.client("rds")
    tags = rds.list_tags_for_resource(ResourceName=item["snapshot"]["arn"])["TagList"]
    assert len(tags) == result["tag_count"]
    metadata = tag_codec(world.tag_key_arn).decode(tags, item["snapshot"]["arn"])
    assert metadata["kind"] == "primary" and metadata["session_id"] == item["session_id"]
    assert metadata["source"]["arn"] == item["resource"]["arn"] and metadata["source"]["kind"] == "cluster"
    assert metadata["cluster"]["port"] == 5432
    instances = metadata["instances"]
    assert [i["identifier"] for i in instances] == ["ledger-1", "ledger-2", "ledger-3"]
    assert [i["promotion_tier"] for i in instances] == [0, 1, 2]
    assert {i["class"] for i in instances} == {"db.r6g.large"}
    assert [i["availability_zone"] for i in instances] == ["us-east-1a", "us-east-1b", "us-east-1c"]
    assert all(i["publicly_accessible"] is False and i["engine"] == "aurora-postgresql" for i in instances)
    assert all("parameter_group" in i for i in instances)


def test_instance_metadata_records_the_instance_settings(world, ctx):
    item = world.item(world.instance())
    item["snapshot"] = create_snapshot.handler(item, ctx)
    tag_snapshot.handler(item, ctx)
    tags = world.client("rds").list_tags_for_resource(ResourceName=item["snapshot"]["arn"])["TagList"]
    metadata = tag_codec(world.tag_key_arn).decode(tags, item["snapshot"]["arn"])
    assert metadata["instance"]["identifier"] == "orders"
    assert metadata["instance"]["class"] == "db.t3.micro"
    assert metadata["policy"] == "demo"


def test_tagging_keeps_the_users_tags_and_refuses_to_exceed_fifty(world, ctx):
    item = world.item(world.instance())
    item["snapshot"] = create_snapshot.handler(item, ctx)
    rds = world.client("rds")
    rds.add_tags_to_resource(ResourceName=item["snapshot"]["arn"],
                             Tags=[{"Key": f"user{i}", "Value": "x"} for i in range(46)])
    with pytest.raises(TagLimitExceeded, match="tags"):
        tag_snapshot.handler(item, ctx)
    rds.remove_tags_from_resource(ResourceName=item["snapshot"]["arn"], TagKeys=[f"user{i}" for i in range(10)])
    result = tag_snapshot.handler(item, ctx)
    tags = rds.list_tags_for_resource(ResourceName=item["snapshot"]["arn"])["TagList"]
    assert len(tags) == 36 + result["tag_count"] <= 50
    assert sum(1 for t in tags if t["Key"].startswith("user")) == 36


def test_retagging_is_idempotent(world, ctx):
    item = world.item(world.instance())
    item["snapshot"] = create_snapshot.handler(item, ctx)
    first = tag_snapshot.handler(item, ctx)
    second = tag_snapshot.handler(item, ctx)
    tags = world.client("rds").list_tags_for_resource(ResourceName=item["snapshot"]["arn"])["TagList"]
    assert first["tag_count"] == second["tag_count"] == len(tags)


def test_missing_tag_key_environment_fails_loudly(world, ctx, monkeypatch):
    item = world.item(world.instance())
    item["snapshot"] = create_snapshot.handler(item, ctx)
    monkeypatch.delenv("TAG_KMS_KEY_ARN")
    with pytest.raises(ConfigurationError, match="TAG_KMS_KEY_ARN is not set"):
        tag_snapshot.handler(item, ctx)
