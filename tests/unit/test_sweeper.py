"""sweep_orphans: removes old tagged leftovers (groups, tasks, bucket, expired leases) and nothing else."""

from __future__ import annotations

import json
import time

import pytest
from rdsbackup_lambdas.handlers import prepare_worker, start_worker, sweep_orphans
from rdsbackup_lambdas.image import names, temp_bucket

from tests.unit.conftest import REGION, SOURCE_ACCOUNT, SOURCE_ROLE, TEMP_BUCKET_SECRET
from tests.unit.image_support import (  # noqa: F401 (net_fixture: the net fixture)
    image_backup,
    moto_task,
    net_fixture,
    tasks_stay_running,
)

OLD = "2020-01-01T00:00:00Z"
BUCKET = names.temp_bucket_name(SOURCE_ACCOUNT, REGION, TEMP_BUCKET_SECRET)


@pytest.fixture
def policies(monkeypatch, world):
    monkeypatch.setenv("POLICIES_JSON", json.dumps({"demo": {
        "selection": {"resources": ["orders"], "tags": {}, "targets": [
            {"account": SOURCE_ACCOUNT, "region": REGION, "access_role_arn": SOURCE_ROLE}]},
        "image_backup": image_backup()}}))
    monkeypatch.setenv("MAX_AGE_MINUTES", "60")


def age(net, group_ids: list[str], when: str = OLD) -> None:
    net.ec2().create_tags(Resources=group_ids, Tags=[{"Key": "rdsbackup:created-at", "Value": when}])


def hold_source_lease(net, item: dict) -> None:
    net.world.client("dynamodb").put_item(TableName=net.world.table, Item={
        "pk": {"S": f"lease#{item['resource']['arn']}"}, "owner": {"S": item["session_id"]},
        "expires_at": {"N": str(int(time.time()) + 3600)}, "resource_arn": {"S": item["resource"]["arn"]}})


def group_ids(net) -> set[str]:
    return {g["GroupId"] for g in net.ec2().describe_security_groups()["SecurityGroups"]}


def test_sweeper_removes_only_old_tagged_groups(net, ctx, policies):
    net.instance()
    old = prepare_worker.handler(net.item(net.instance("billing"), session_id="demo-20200101T000000-aaaaaa"), ctx)
    fresh = prepare_worker.handler(net.item(net.instance("orders2"), session_id="demo-20261125T031500-bbbbbb"), ctx)
    age(net, [old["db_security_group"], old["worker_security_group"]])
    untagged = net.ec2().create_security_group(GroupName="someone-elses", Description="x", VpcId=net.vpc)["GroupId"]
    report = sweep_orphans.handler({}, ctx)
    remaining = group_ids(net)
    assert old["db_security_group"] not in remaining and old["worker_security_group"] not in remaining
    assert {fresh["db_security_group"], fresh["worker_security_group"], untagged, net.db_group} <= remaining
    assert net.groups_of("billing") == [net.db_group]  # detached from the DB first
    assert net.groups_of("orders2") == [net.db_group, fresh["db_security_group"]]
    assert len(report["removed"]["security_groups"]) == 2 and report["errors"] == []


def test_sweeper_leaves_a_running_session_alone(net, ctx, policies):
    item = net.item(net.instance(), session_id="demo-20200101T000000-cccccc")
    image = prepare_worker.handler(item, ctx)
    age(net, [image["db_security_group"], image["worker_security_group"]])
    hold_source_lease(net, item)
    report = sweep_orphans.handler({}, ctx)
    assert {image["db_security_group"], image["worker_security_group"]} <= group_ids(net)
    assert report["removed"]["security_groups"] == []


def test_sweeper_stops_old_worker_tasks_only(net, ctx, policies):
    with tasks_stay_running():
        old_item = net.item(net.instance("billing"), session_id="demo-20200101T000000-dddddd")
        old_item["image"] = prepare_worker.handler(old_item, ctx)
        old_task = start_worker.handler(old_item, ctx)["task_arn"]
        fresh_item = net.item(net.instance("orders"))
        fresh_item["image"] = prepare_worker.handler(fresh_item, ctx)
        fresh_task = start_worker.handler(fresh_item, ctx)["task_arn"]
        task = moto_task(old_task)
        task.tags = [t if t["key"] != "rdsbackup:created-at" else {"key": t["key"], "value": OLD} for t in task.tags]
        network = {"awsvpcConfiguration": {"subnets": net.subnets, "securityGroups": [net.db_group]}}
        other = net.ecs().run_task(cluster="rdsbackup-workers", taskDefinition="rdsbackup-worker",
                                   launchType="FARGATE", startedBy="someone-else",
                                   networkConfiguration=network)["tasks"][0]["taskArn"]
        report = sweep_orphans.handler({}, ctx)
    assert report["removed"]["tasks"] == [old_task]
    assert moto_task(old_task).desired_status == "STOPPED"
    assert moto_task(fresh_task).desired_status == "RUNNING" and moto_task(other).desired_status == "RUNNING"


def test_sweeper_removes_an_unleased_bucket_and_expired_leases(net, ctx, policies, monkeypatch):
    monkeypatch.setenv("MAX_AGE_MINUTES", "0")
    og = net.option_group()
    item = net.item(net.instance("mssql", engine="sqlserver-se", option_group=og))
    prepare_worker.handler(item, ctx)
    key = temp_bucket.lease_key(BUCKET, item["session_id"], "mssql")
    net.world.client("dynamodb").update_item(
        TableName=net.world.table, Key={"pk": {"S": key}}, UpdateExpression="SET expires_at = :t",
        ExpressionAttributeValues={":t": {"N": "1"}})
    time.sleep(1)
    report = sweep_orphans.handler({}, ctx)
    assert report["removed"]["buckets"] == [BUCKET] and key in report["removed"]["leases"]
    assert BUCKET not in [b["Name"] for b in net.world.client("s3").list_buckets()["Buckets"]]


def test_sweeper_keeps_a_leased_bucket(net, ctx, policies, monkeypatch):
    monkeypatch.setenv("MAX_AGE_MINUTES", "0")
    og = net.option_group()
    item = net.item(net.instance("mssql", engine="sqlserver-se", option_group=og))
    prepare_worker.handler(item, ctx)
    time.sleep(1)
    report = sweep_orphans.handler({}, ctx)
    assert report["removed"]["buckets"] == [] and report["removed"]["leases"] == []
    assert BUCKET in [b["Name"] for b in net.world.client("s3").list_buckets()["Buckets"]]


def _throwaway_tags(created: str, restore_test: bool = True) -> list[dict[str, str]]:
    tags = {"rdsbackup:temporary": "true", "rdsbackup:created-at": created}
    if restore_test:
        tags["rdsbackup:restore-test"] = "arn:aws:rds:us-east-1:123456789012:db:orders"
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def test_sweeper_deletes_old_restore_test_throwaways_only(net, ctx, policies):
    def throwaway(name: str, created: str, *, restore_test: bool = True) -> None:
        net.rds().create_db_instance(DBInstanceIdentifier=name, Engine="postgres", DBInstanceClass="db.t4g.micro",
                                     MasterUsername="a", MasterUserPassword="password1", AllocatedStorage=20,
                                     Tags=_throwaway_tags(created, restore_test))

    net.instance("orders")
    throwaway("rdsbackup-test-old", OLD)
    throwaway("rdsbackup-test-new", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    throwaway("temporary-not-a-test", OLD, restore_test=False)
    report = sweep_orphans.handler({}, ctx)
    assert report["removed"]["throwaways"] == ["instance rdsbackup-test-old"]
    left = {db["DBInstanceIdentifier"] for db in net.rds().describe_db_instances()["DBInstances"]}
    assert left == {"orders", "rdsbackup-test-new", "temporary-not-a-test"}


def test_sweeper_deletes_the_throwaways_its_deployment_named_and_not_another_deployments(net, ctx, policies,
                                                                                       monkeypatch):
    """A deployment with name prefix "acme" names its throwaways acme-test-*; its launch role may delete only
    those, so its sweeper leaves the default deployment's rdsbackup-test-* alone (and that one's, acme's)."""
    monkeypatch.setenv("THROWAWAY_PREFIX", "acme-test-")
    for name in ("acme-test-0123456789abcdef", "rdsbackup-test-fedcba9876543210"):
        net.rds().create_db_instance(DBInstanceIdentifier=name, Engine="postgres", DBInstanceClass="db.t4g.micro",
                                     MasterUsername="a", MasterUserPassword="password1", AllocatedStorage=20,
                                     Tags=_throwaway_tags(OLD))
    report = sweep_orphans.handler({}, ctx)
    assert report["removed"]["throwaways"] == ["instance acme-test-0123456789abcdef"], report
    assert [db["DBInstanceIdentifier"] for db in net.rds().describe_db_instances()["DBInstances"]] == [
        "rdsbackup-test-fedcba9876543210"]


def test_sweeper_deletes_a_throwaway_cluster_and_its_members_and_never_an_untagged_or_misnamed_one(
        net, ctx, policies):
    rds = net.rds()

    def cluster(name: str, tags: list[dict[str, str]]) -> None:
        rds.create_db_cluster(DBClusterIdentifier=name, Engine="aurora-postgresql", MasterUsername="a",
                              MasterUserPassword="password1", Tags=tags)
        rds.create_db_instance(DBInstanceIdentifier=f"{name}-1", DBClusterIdentifier=name,
                               Engine="aurora-postgresql", DBInstanceClass="db.t4g.medium", Tags=tags)

    cluster("rdsbackup-test-0123456789abcdef", _throwaway_tags(OLD))
    cluster("ledger", [])                                # the user's cluster
    cluster("ledger-copy", _throwaway_tags(OLD))         # tagged like a throwaway, not named as one
    net.instance("orders")                               # the user's instance
    report = sweep_orphans.handler({}, ctx)
    assert report["removed"]["throwaways"] == ["cluster rdsbackup-test-0123456789abcdef"], report
    assert {c["DBClusterIdentifier"] for c in rds.describe_db_clusters()["DBClusters"]} == {"ledger", "ledger-copy"}
    assert {db["DBInstanceIdentifier"] for db in rds.describe_db_instances()["DBInstances"]} == {
        "ledger-1", "ledger-copy-1", "orders"}
    # no final snapshot of the throwaway (and none of anything else)
    assert rds.describe_db_cluster_snapshots(SnapshotType="manual")["DBClusterSnapshots"] == []
    assert rds.describe_db_snapshots(SnapshotType="manual")["DBSnapshots"] == []


def test_sweeper_reaches_the_places_of_snapshot_only_policies_with_restore_tests(net, ctx, monkeypatch):
    """A snapshot-only policy's restore tests run a test worker and throwaways: the sweeper covers its places."""
    worker = {**image_backup(), "repository_url": None}
    monkeypatch.setenv("POLICIES_JSON", json.dumps({"snapshots": {
        "selection": {"resources": ["orders"], "tags": {}, "targets": [
            {"account": SOURCE_ACCOUNT, "region": REGION, "access_role_arn": SOURCE_ROLE}]},
        "image_backup": None, "restore_test": {"targets": ["snapshot"], "worker": worker}}}))
    monkeypatch.setenv("MAX_AGE_MINUTES", "60")
    net.instance("orders")
    net.rds().create_db_instance(DBInstanceIdentifier="rdsbackup-test-fedcba9876543210", Engine="postgres",
                                 DBInstanceClass="db.t4g.micro", MasterUsername="a", MasterUserPassword="password1",
                                 AllocatedStorage=20, Tags=_throwaway_tags(OLD))
    report = sweep_orphans.handler({}, ctx)
    assert report["removed"]["throwaways"] == ["instance rdsbackup-test-fedcba9876543210"], report
    assert [db["DBInstanceIdentifier"] for db in net.rds().describe_db_instances()["DBInstances"]] == ["orders"]
