"""Restore tests' Lambda steps in moto: the plan (rotation, what is restored), the throwaway's network and
restore input, its checks, its deletion on every path (or the sweeper tag), and the run's report."""

from __future__ import annotations

import json
import re
import time

import pytest
from rdsbackup_lambdas import aws_sessions, backup_freshness, restore_test
from rdsbackup_lambdas.errors import ConfigurationError, SecurityGroupError, SqlServerBackupOptionMissing
from rdsbackup_lambdas.handlers import (
    cleanup_worker,
    delete_throwaway,
    locate_throwaway,
    plan_restore_test,
    prepare_restore_test,
    restore_test_report,
)
from rdsbackup_lambdas.image import names, temp_bucket, worker_tasks
from rdsbackup_lambdas.models import ImageState, Item

from tests.unit.conftest import REGION, SOURCE_ACCOUNT, SOURCE_ROLE, TEMP_BUCKET_SECRET
from tests.unit.image_support import (  # noqa: F401 (net_fixture: the net fixture)
    OPTION_ROLE,
    image_backup,
    net_fixture,
)

RUN = {"execution_name": "weekly-1", "started_at": "2026-11-29T05:00:00Z"}


def policies(names, *, sample=None, targets=("snapshot", "restore_point")) -> dict:
    return {"demo": {
        "selection": {"resources": list(names), "tags": {},
                      "targets": [{"account": SOURCE_ACCOUNT, "region": REGION, "access_role_arn": SOURCE_ROLE}]},
        "snapshot_retention": 3, "image_backup": image_backup(), "rpo_seconds": 129600,
        "restore_test": {"sample": sample, "targets": list(targets), "instance_class": None,
                         "timeout_seconds": 3600},
    }}


def backed_up(world, name: str, *, at: float | None = None) -> None:
    arn = f"arn:aws:rds:{REGION}:{SOURCE_ACCOUNT}:db:{name}"
    report = {"policy": "demo", "session_id": "demo-s", "resources": [{
        "arn": arn, "status": "Success", "snapshot_arn": f"arn:aws:rds:{REGION}:{SOURCE_ACCOUNT}:snapshot:{name}-s1",
        "replica_arns": [], "restore_point_id": f"rp-{name}"}]}
    backup_freshness.record_successes(report, world.table, now=at)


def plan(monkeypatch, ctx, pols, **extra) -> dict:
    monkeypatch.delenv("POLICIES_PARAMETER", raising=False)  # (an in-process e2e run may leave it set)
    monkeypatch.setenv("POLICIES_JSON", json.dumps(pols))
    return plan_restore_test.handler({"policy": "demo", "resources": None, **RUN, **extra}, ctx)


def test_plan_tests_the_newest_snapshot_and_restore_point_in_a_private_small_throwaway(net, world, ctx, monkeypatch):
    net.instance("orders")
    backed_up(world, "orders")
    run = plan(monkeypatch, ctx, policies(["orders"]))
    [test] = run["tests"]
    assert run["session"]["session_id"].startswith("test-demo-20261129T050000-")
    assert test["source"]["id"] == "orders" and test["error"] is None
    assert test["resource"]["id"] == restore_test.throwaway_id(
        "rdsbackup-test-", run["session"]["session_id"], test["source"]["arn"])
    assert test["restore_test"] == {
        "source_id": "orders", "snapshot_arn": f"arn:aws:rds:{REGION}:{SOURCE_ACCOUNT}:snapshot:orders-s1",
        "restore_point_id": "rp-orders", "compare_restore_point_id": "rp-orders", "warnings": [],
        "check_snapshot": True, "instance_class": "db.t4g.micro", "timeout_seconds": 3600}


def test_the_throwaway_takes_the_deployments_name_prefix_and_is_a_valid_rds_identifier(net, world, ctx,
                                                                                       monkeypatch):
    net.instance("orders")
    backed_up(world, "orders")
    # the longest deployment prefix (12 characters, infra.config.Deployment), with a hyphen in it
    monkeypatch.setenv("THROWAWAY_PREFIX", "acme-staging-test-")
    [test] = plan(monkeypatch, ctx, policies(["orders"]))["tests"]
    ident = test["resource"]["id"]
    assert ident.startswith("acme-staging-test-") and not ident.startswith("rdsbackup-")
    assert re.fullmatch(r"[a-z](?:[a-z0-9]|-(?!-))*[a-z0-9]", ident) and len(ident) <= 63, ident
    assert test["resource"]["arn"] == f"arn:aws:rds:{REGION}:{SOURCE_ACCOUNT}:db:{ident}"


@pytest.mark.parametrize("prefix", ["", "acme-test", "Acme-test-", "acme--test-", "1acme-test-", "a" * 60 + "-"])
def test_a_throwaway_prefix_rds_would_refuse_is_a_configuration_error(net, world, ctx, monkeypatch, prefix):
    monkeypatch.setenv("THROWAWAY_PREFIX", prefix)
    with pytest.raises(ConfigurationError, match="THROWAWAY_PREFIX"):
        plan(monkeypatch, ctx, policies(["orders"]))


def snapshot_only(names) -> dict:
    """Policy "demo" without image_backup, its restore test on a worker of its own; policy "images" backs up
    the same sources into a repository."""
    pols = policies(names, targets=("snapshot",))
    worker = {**image_backup(), "repository_url": None}
    pols["demo"] = {**pols["demo"], "image_backup": None,
                    "restore_test": {**pols["demo"]["restore_test"], "worker": worker}}
    pols["images"] = {**policies(names)["demo"], "restore_test": None}
    return pols


def backed_up_by(world, policy: str, name: str, *, restore_point: str | None, at: float) -> None:
    arn = f"arn:aws:rds:{REGION}:{SOURCE_ACCOUNT}:db:{name}"
    backup_freshness.record_successes({"policy": policy, "session_id": f"{policy}-s", "resources": [{
        "arn": arn, "status": "Success", "snapshot_arn": f"arn:aws:rds:{REGION}:{SOURCE_ACCOUNT}:snapshot:{name}-s1",
        "replica_arns": [], "restore_point_id": restore_point}]}, world.table, now=at)


def test_a_snapshot_only_policy_is_checked_against_the_newest_restore_point_of_the_same_source(
        net, world, ctx, monkeypatch):
    net.instance("orders")
    backed_up_by(world, "demo", "orders", restore_point=None, at=2000.0)
    backed_up_by(world, "images", "orders", restore_point="rp-older", at=1000.0)
    backed_up_by(world, "images", "orders", restore_point="rp-newest", at=1500.0)
    [test] = plan(monkeypatch, ctx, snapshot_only(["orders"]))["tests"]
    assert test["error"] is None and test["restore_test"]["snapshot_arn"].endswith(":snapshot:orders-s1")
    # nothing is restored beside the snapshot; its databases and counts are compared with images' point
    assert test["restore_test"]["restore_point_id"] is None
    assert test["restore_test"]["compare_restore_point_id"] == "rp-newest"
    assert test["image_backup"]["repository_url"] == f"{image_backup()['repository_url']}"
    assert test["image_backup"]["result_prefix"] == image_backup()["result_prefix"]


def test_a_snapshot_only_source_without_any_restore_point_is_tested_alone(net, world, ctx, monkeypatch):
    net.instance("orders")
    backed_up_by(world, "demo", "orders", restore_point=None, at=2000.0)
    [test] = plan(monkeypatch, ctx, snapshot_only(["orders"]))["tests"]
    assert test["error"] is None and test["restore_test"]["compare_restore_point_id"] is None
    assert test["image_backup"]["repository_url"] is None
    image = {"endpoint": "throwaway.example", "port": 5432, "engine": "postgres", "secret_arn": "arn:secret"}
    spec = worker_tasks.job_spec(Item.model_validate(test), ImageState(**image), Item.model_validate(test).image_backup)
    assert spec["kind"] == "restore_test" and spec["repository"] is None and spec["restore_point_id"] is None
    assert spec["check_snapshot"] is True


def test_a_policy_without_any_test_worker_is_refused(net, world, ctx, monkeypatch):
    pols = snapshot_only(["orders"])
    pols["demo"]["restore_test"]["worker"] = None
    with pytest.raises(Exception, match="restore tests need a test worker"):
        plan(monkeypatch, ctx, pols)


def test_a_sqlserver_restore_point_is_planned_for_restore_like_a_postgres_one(net, world, ctx, monkeypatch):
    net.instance("mssql", engine="sqlserver-se")
    backed_up(world, "mssql")
    [test] = plan(monkeypatch, ctx, policies(["mssql"]))["tests"]
    assert test["restore_test"]["restore_point_id"] == "rp-mssql"
    assert test["restore_test"]["compare_restore_point_id"] == "rp-mssql" and test["restore_test"]["warnings"] == []
    assert test["restore_test"]["instance_class"] == "db.t3.small"


def sqlserver_test(net, world, ctx, monkeypatch, *, option: bool = True) -> dict:
    """A TEST of mssql (a SQL Server instance in an option group with SQLSERVER_BACKUP_RESTORE) with a restore
    point to restore."""
    net.instance("mssql", engine="sqlserver-se", option_group=net.option_group(with_option=option))
    backed_up(world, "mssql")
    [test] = plan(monkeypatch, ctx, policies(["mssql"]))["tests"]
    return test


def test_prepare_leases_the_temporary_bucket_for_a_sqlserver_restore_point_and_cleanup_releases_it(
        net, world, ctx, monkeypatch):
    test = sqlserver_test(net, world, ctx, monkeypatch)
    out = prepare_restore_test.handler(test, ctx)
    image = out["image"]
    bucket = names.temp_bucket_name(SOURCE_ACCOUNT, REGION, TEMP_BUCKET_SECRET)
    throwaway = test["resource"]["id"]
    assert image["engine"] == "sqlserver" and image["temp_bucket"] == bucket
    assert image["temp_prefix"] == f"{test['session_id']}/{throwaway}/"
    s3 = world.client("s3")
    # this test's prefix granted to the option group's role (RDS reads the .bak with it), and its lease
    statement = [s for s in json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])["Statement"]
                 if s["Principal"] == {"AWS": OPTION_ROLE} and isinstance(s["Resource"], str)
                 and s["Resource"].endswith("/*")]
    assert [s["Resource"] for s in statement] == [f"arn:aws:s3:::{bucket}/{image['temp_prefix']}*"]
    assert temp_bucket.live_leases(world.table, bucket) == [
        temp_bucket.lease_key(bucket, test["session_id"], throwaway)]
    # the worker is told where to stage the .bak files
    prepared = {**test, "image": {**image, "endpoint": "throwaway.example", "port": 1433}}
    spec = worker_tasks.job_spec(Item.model_validate(prepared), ImageState(**prepared["image"]),
                                 Item.model_validate(prepared).image_backup)
    assert spec["restore_point_id"] == "rp-mssql"
    assert spec["sqlserver"] == {"temp_bucket": bucket, "temp_prefix": image["temp_prefix"]}
    # the workflow's cleanup (cleanup_worker on the TEST, after the throwaway is deleted) gives it all back
    result = cleanup_worker.handler(prepared, ctx)
    assert result["complete"] is True and f"bucket {bucket}" in result["removed"], result
    assert temp_bucket.live_leases(world.table, bucket) == []
    assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]] and net.temporary_groups() == []


def test_a_sqlserver_source_without_the_native_backup_option_is_refused_before_anything_is_made(
        net, world, ctx, monkeypatch):
    test = sqlserver_test(net, world, ctx, monkeypatch, option=False)
    with pytest.raises(SqlServerBackupOptionMissing, match="SQLSERVER_BACKUP_RESTORE"):
        prepare_restore_test.handler(test, ctx)
    assert net.temporary_groups() == []
    bucket = names.temp_bucket_name(SOURCE_ACCOUNT, REGION, TEMP_BUCKET_SECRET)
    assert bucket not in [b["Name"] for b in world.client("s3").list_buckets()["Buckets"]]


def test_a_sqlserver_snapshot_compared_with_a_restore_point_needs_no_bucket(net, world, ctx, monkeypatch):
    test = sqlserver_test(net, world, ctx, monkeypatch)
    compare_only = {**test, "restore_test": {**test["restore_test"], "restore_point_id": None}}
    image = prepare_restore_test.handler(compare_only, ctx)["image"]
    assert image["temp_bucket"] is None and image["temp_prefix"] is None


def test_prepare_reaches_the_source_through_the_launch_role(net, world, ctx, monkeypatch):
    """The test worker's groups and the temporary bucket are the launch power's (infra.powers), as for a backup's
    prepare_worker; the read role may create neither."""
    test = sqlserver_test(net, world, ctx, monkeypatch)
    read = f"arn:aws:iam::{SOURCE_ACCOUNT}:role/rdsbackup-read-{REGION}"
    used = []
    real = aws_sessions.client

    def recording(service, region, role_arn=None, session_id=None):
        used.append((service, role_arn))
        return real(service, region, None, session_id)

    monkeypatch.setattr(aws_sessions, "client", recording)
    prepare_restore_test.handler({**test, "access_role_arn": read}, ctx)
    assert {service for service, _ in used} >= {"rds", "ec2", "s3"}
    assert {role for service, role in used if service != "dynamodb"} == {
        f"arn:aws:iam::{SOURCE_ACCOUNT}:role/rdsbackup-launch-{REGION}"}


def test_a_sample_rotates_through_the_least_recently_tested(net, world, ctx, monkeypatch):
    for name in ("a-db", "b-db", "c-db"):
        net.instance(name)
        backed_up(world, name)
    pols = policies(["a-db", "b-db", "c-db"], sample=2)
    first = [t["source"]["id"] for t in plan(monkeypatch, ctx, pols)["tests"]]
    assert first == ["a-db", "b-db"]
    now = time.time()
    for name in first:
        restore_test.record_tested(world.table, "demo", f"arn:aws:rds:{REGION}:{SOURCE_ACCOUNT}:db:{name}", True, now)
    second = [t["source"]["id"] for t in plan(monkeypatch, ctx, pols)["tests"]]
    assert second[0] == "c-db" and len(second) == 2  # never tested first; then the oldest test


def test_a_source_never_backed_up_is_a_failed_test_with_the_reason(net, world, ctx, monkeypatch):
    net.instance("orders")
    [test] = plan(monkeypatch, ctx, policies(["orders"]))["tests"]
    assert test["error"]["Error"] == "NothingToTest" and "no successful backup" in test["error"]["Cause"]


@pytest.fixture
def prepared(net, world, ctx, monkeypatch) -> dict:
    net.instance("orders")
    backed_up(world, "orders")
    [test] = plan(monkeypatch, ctx, policies(["orders"]))["tests"]
    out = prepare_restore_test.handler(test, ctx)
    return {**test, "image": out["image"], "restore_input": out["restore_input"], "timing": {
        "started_at": out["started_at"]}}


def test_the_throwaway_is_restored_private_small_into_a_group_that_admits_only_the_worker(net, prepared):
    target = prepared["restore_input"]["target"]
    image = prepared["image"]
    assert prepared["restore_input"]["snapshot_arn"].endswith(":snapshot:orders-s1")
    assert target["identifier"] == prepared["resource"]["id"] and target["publicly_accessible"] is False
    assert target["multi_az"] is False and target["instance_class"] == "db.t4g.micro"
    assert target["security_groups"] == [image["db_security_group"]]
    assert target["tags"]["rdsbackup:temporary"] == "true"
    assert target["tags"]["rdsbackup:restore-test"] == prepared["source"]["arn"]
    ingress = net.group(image["db_security_group"])["IpPermissions"]
    assert [pair["GroupId"] for rule in ingress for pair in rule["UserIdGroupPairs"]] == \
        [image["worker_security_group"]]
    assert all(not rule.get("IpRanges") for rule in ingress)


def restore_throwaway(net, test: dict, *, groups: list[str] | None = None, protected: bool = False) -> None:
    """What the restore state machine does with the input (moto restores at once)."""
    target = test["restore_input"]["target"]
    net.rds().restore_db_instance_from_db_snapshot(
        DBInstanceIdentifier=target["identifier"], DBSnapshotIdentifier="orders-s1", DBInstanceClass="db.t4g.micro",
        DBSubnetGroupName="dbsubnets", VpcSecurityGroupIds=groups or target["security_groups"],
        PubliclyAccessible=False, DeletionProtection=protected,
        Tags=[{"Key": k, "Value": v} for k, v in target["tags"].items()])


@pytest.fixture
def snapshot(net):
    net.rds().create_db_snapshot(DBInstanceIdentifier="orders", DBSnapshotIdentifier="orders-s1")


def test_locate_gives_the_worker_the_endpoint_and_refuses_another_group(net, prepared, snapshot, ctx):
    restore_throwaway(net, prepared)
    image = locate_throwaway.handler(prepared, ctx)
    assert image["endpoint"] and image["port"] == 5432
    spec = worker_tasks.job_spec(Item.model_validate({**prepared, "image": image}), ImageState(**image),
                                 Item.model_validate(prepared).image_backup)
    assert spec["kind"] == "restore_test" and spec["restore_point_id"] == "rp-orders" and spec["source_id"] == "orders"
    assert spec["host"] == image["endpoint"] and "password" not in json.dumps(spec)
    net.rds().modify_db_instance(DBInstanceIdentifier=prepared["resource"]["id"], ApplyImmediately=True,
                                 VpcSecurityGroupIds=[prepared["image"]["db_security_group"], net.db_group])
    with pytest.raises(SecurityGroupError, match="needs only its own"):
        locate_throwaway.handler(prepared, ctx)


def test_the_throwaway_is_deleted_and_a_second_call_finds_it_gone(net, prepared, snapshot, ctx):
    restore_throwaway(net, prepared)
    result = delete_throwaway.handler(prepared, ctx)
    assert result["done"] is True and result["deleted"] == [prepared["resource"]["id"]]
    assert result["left_for_sweeper"] == [] and result["warnings"] == [] and result["wait_seconds"] == 0
    assert delete_throwaway.handler(prepared, ctx)["done"] is True


def test_a_throwaway_that_cannot_be_deleted_is_tagged_for_the_sweeper_and_reported(net, prepared, snapshot, ctx):
    restore_throwaway(net, prepared, protected=True)
    result = delete_throwaway.handler(prepared, ctx)
    ident = prepared["resource"]["id"]
    assert result["done"] is True and result["left_for_sweeper"] == [f"DB instance {ident}"]  # the loop ends
    assert "InvalidParameterCombination" in result["warnings"][0]
    arn = f"arn:aws:rds:{REGION}:{SOURCE_ACCOUNT}:db:{ident}"
    tags = {t["Key"]: t["Value"] for t in net.rds().list_tags_for_resource(ResourceName=arn)["TagList"]}
    assert tags["rdsbackup:sweep"] == "true"


def test_a_database_without_the_tests_tags_is_never_deleted(net, prepared, ctx):
    net.rds().create_db_instance(DBInstanceIdentifier=prepared["resource"]["id"], Engine="postgres",
                                 DBInstanceClass="db.t3.micro", MasterUsername="a", MasterUserPassword="password1",
                                 AllocatedStorage=20)
    result = delete_throwaway.handler(prepared, ctx)
    assert result["deleted"] == [] and "left alone" in result["warnings"][0]
    assert net.rds().describe_db_instances(DBInstanceIdentifier=prepared["resource"]["id"])["DBInstances"]


def test_report_records_measures_and_notifies_a_failed_test(world, prepared, ctx):
    now = time.time()
    passed = {**prepared, "timing": {"started_at": now - 600, "restored_at": now - 200},
              "worker": {"test": {"passed": True, "failures": [], "restore_seconds": 50,
                                  "restore_point": {"tables_checked": 12}}},
              "throwaway_cleanup": {"done": True, "left_for_sweeper": []}, "cleanup": {"left_for_sweeper": []}}
    failed = {**passed, "source": {**prepared["source"], "arn": prepared["source"]["arn"] + "-2"},
              "worker": {"test": {"passed": False, "failures": ["restore point rp: database shop, table "
                                                                "app.orders: same row count, different data"]}},
              "throwaway_cleanup": {"done": False, "left_for_sweeper": ["DB instance rdsbackup-test-x"]}}
    report = restore_test_report.handler({"session": {"session_id": "test-demo-1", "policy": "demo",
                                                      "started_at": "2026-11-29T05:00:00Z"},
                                          "tests": [passed, failed]}, ctx)
    assert report["status"] == "Failed"
    ok, bad = report["sources"]
    assert ok["status"] == "Passed" and ok["time_to_restore_seconds"] == 450.0 and ok["tables_checked"] == 12
    assert bad["status"] == "Failed" and "table app.orders" in bad["failures"][0]
    assert bad["left_for_sweeper"] == ["DB instance rdsbackup-test-x"]
    [message] = world.sns_messages()
    assert message["Subject"] == "rds-backup restore test demo: Failed"
    assert "table app.orders" in message["Message"] and "rdsbackup-test-x" in message["Message"]
    record = world.client("dynamodb").get_item(TableName=world.table, Key={"pk": {"S": "restoretest#test-demo-1"}})
    assert json.loads(record["Item"]["report"]["S"]) == report
    tested = restore_test.last_tested(world.table, "demo", [ok["source"], bad["source"]])
    assert set(tested) == {ok["source"], bad["source"]}


def test_a_deletion_that_outlasts_its_wait_is_left_to_the_sweeper_and_ends_the_loop(net, prepared, snapshot, ctx,
                                                                                     monkeypatch):
    restore_throwaway(net, prepared)
    ident = prepared["resource"]["id"]
    from moto.rds.models import RDSBackend

    def deleting(self, db_instance_identifier, *args, **kwargs):  # AWS takes minutes: the instance stays
        database = self.describe_db_instances(db_instance_identifier)[0]
        database.status = "deleting"
        return database

    monkeypatch.setattr(RDSBackend, "delete_db_instance", deleting)
    first = delete_throwaway.handler(prepared, ctx)
    assert first["done"] is False and first["wait_seconds"] > 0 and first["deleted"] == [ident]
    timeout = prepared["wait"]["timeout_seconds"]
    waited = {**prepared, "throwaway_cleanup": {**first, "waited_seconds": timeout, "wait_seconds": 0}}
    last = delete_throwaway.handler(waited, ctx)
    assert last["done"] is True and last["left_for_sweeper"] == [f"DB instance {ident}"]
    assert "still not ready" in last["warnings"][0]


# --- archived restore points (targets: archived_restore_point) -------------------------------------------------


@pytest.fixture
def archive(tmp_path, monkeypatch) -> dict:
    """A real archive repository (file://) holding two points of `orders`, one of `other` and one of the SQL
    Server `mssql`, archived from a backup repository as the backup-account session does; returns the
    policy's maintenance.archive section and the archived ids."""
    from rdsbackup.repository import Repository
    from rdsbackup.repository.archive import ArchiveRepository, archive_restore_point

    monkeypatch.setenv("RDSBACKUP_ARCHIVE_PASSWORD", "archive key")
    source = Repository.init(f"file://{tmp_path}/backup", password="backup key")
    ids = {}
    for n, (name, engine) in enumerate((("orders", "postgres"), ("other", "postgres"), ("orders", "postgres"),
                                        ("mssql", "sqlserver"))):
        with source.begin_backup(source_id=name, engine=engine) as writer:
            stream = writer.add_stream("t", [f"rows of {name} {n}\n".encode() * 100], profile="table")
            ids.setdefault(name, []).append(writer.commit({"streams": {"t": stream}, "databases": []}))
    url = f"file://{tmp_path}/archive"
    archive = ArchiveRepository.init_archive(url, ids_of=source._keys)
    for rp_id in [*ids["orders"], *ids["other"], *ids["mssql"]]:
        archive_restore_point(source, archive, rp_id, storage_class="DEEP_ARCHIVE")
    return {"section": {"repository": url, "name": "cold", "retrieval_timeout_hours": 12,
                        "storage_class": "DEEP_ARCHIVE"}, "ids": ids}


def archiving(names, archive_section, targets=("snapshot", "restore_point", "archived_restore_point"), **test):
    pols = policies(names, targets=targets)
    pols["demo"]["restore_test"].update(test)
    pols["demo"]["maintenance"] = {"archive": archive_section}
    return pols


def test_the_newest_archived_point_is_a_second_test_retrieved_first_and_read_from_the_archive(
        net, world, ctx, monkeypatch, archive):
    net.instance("orders")
    backed_up(world, "orders")
    run = plan(monkeypatch, ctx, archiving(["orders"], archive["section"]))
    usual, archived = run["tests"]
    assert run["retrievals"] == 1  # the workflow retrieves before any test when there is one
    assert usual["retrieval"] is None and usual["restore_test"]["restore_point_id"] == "rp-orders"
    # its own throwaway, restored from the same snapshot (a server to restore into), not checked itself
    assert archived["error"] is None and archived["resource"]["id"] != usual["resource"]["id"]
    assert archived["resource"]["id"].startswith("rdsbackup-test-")
    newest = archive["ids"]["orders"][-1]
    assert archived["restore_test"]["snapshot_arn"] == usual["restore_test"]["snapshot_arn"]
    assert archived["restore_test"]["restore_point_id"] == archived["restore_test"]["compare_restore_point_id"] \
        == newest
    assert archived["restore_test"]["check_snapshot"] is False
    # the worker reads the archive; its results still go where the policy's do
    assert archived["image_backup"]["repository_url"] == archive["section"]["repository"]
    assert archived["image_backup"]["result_prefix"] == usual["image_backup"]["result_prefix"]
    retrieval = archived["retrieval"]
    assert retrieval["restore_point_id"] == newest and retrieval["repository"] == archive["section"]["repository"]
    assert retrieval["tier"] == "Bulk" and retrieval["storage_class"] == "DEEP_ARCHIVE"
    assert retrieval["timeout_hours"] == 12 and retrieval["wait"]["timeout_seconds"] == 12 * 3600
    assert retrieval["days"] == 1  # two tests of at most an hour each read it within a day
    from rdsbackup_lambdas.restore.archive_retrieval import Retrieval

    Retrieval.model_validate(retrieval)  # what request_archive_retrieval reads
    image = {"endpoint": "throwaway.example", "port": 5432, "engine": "postgres", "secret_arn": "arn:secret"}
    item = Item.model_validate(archived)
    spec = worker_tasks.job_spec(item, ImageState(**image), item.image_backup)
    assert spec["repository"] == archive["section"]["repository"] and spec["restore_point_id"] == newest


def test_the_retrieved_copies_stay_readable_until_the_runs_last_test_can_have_read_them(
        net, world, ctx, monkeypatch, archive):
    """Every archived point's retrieval is asked for before the first test; the tests then run one after
    another, the archived points last (their retrievals run while the snapshots are tested)."""
    for name in ("orders", "other"):
        net.instance(name)
        backed_up(world, name)
    # 2 sources x (their snapshot's test + their archived point's) x 8 h: 32 h after the retrievals
    run = plan(monkeypatch, ctx, archiving(["orders", "other"], archive["section"], timeout_seconds=8 * 3600))
    assert run["retrievals"] == 2
    assert [(t["source"]["id"], t["restore_test"].get("archived", False)) for t in run["tests"]] == [
        ("orders", False), ("other", False), ("orders", True), ("other", True)]
    assert [t["retrieval"]["days"] for t in run["tests"] if t["retrieval"]] == [2, 2]
    without = plan(monkeypatch, ctx, policies(["orders", "other"]))
    assert without["retrievals"] == 0 and all(t["retrieval"] is None for t in without["tests"])


def test_only_the_archived_target_plans_one_test_in_the_configured_tier(net, world, ctx, monkeypatch, archive):
    net.instance("orders")
    backed_up(world, "orders")
    pols = archiving(["orders"], archive["section"], targets=("archived_restore_point",), retrieval_tier="Standard")
    [test] = plan(monkeypatch, ctx, pols)["tests"]
    assert test["retrieval"]["tier"] == "Standard" and test["restore_test"]["check_snapshot"] is False


def test_an_archived_sqlserver_point_is_retrieved_first_then_restored_through_the_leased_bucket(
        net, world, ctx, monkeypatch, archive):
    net.instance("mssql", engine="sqlserver-se", option_group=net.option_group(with_option=True))
    backed_up(world, "mssql")
    pols = archiving(["mssql"], archive["section"], targets=("archived_restore_point",))
    [test] = plan(monkeypatch, ctx, pols)["tests"]
    [newest] = archive["ids"]["mssql"]
    assert test["error"] is None and test["retrieval"]["restore_point_id"] == newest
    assert test["restore_test"]["restore_point_id"] == newest and test["restore_test"]["check_snapshot"] is False
    # the throwaway restored from the snapshot is the server the archived .bak is restored into, through the
    # temporary bucket: its lease and the option group's grant, as for a point in the backup repository
    image = prepare_restore_test.handler(test, ctx)["image"]
    assert image["engine"] == "sqlserver"
    assert image["temp_bucket"] == names.temp_bucket_name(SOURCE_ACCOUNT, REGION, TEMP_BUCKET_SECRET)
    prepared = {**test, "image": {**image, "endpoint": "throwaway.example", "port": 1433}}
    item = Item.model_validate(prepared)
    spec = worker_tasks.job_spec(item, ImageState(**prepared["image"]), item.image_backup)
    assert spec["repository"] == archive["section"]["repository"] and spec["restore_point_id"] == newest
    assert spec["check_snapshot"] is False
    assert spec["sqlserver"] == {"temp_bucket": image["temp_bucket"], "temp_prefix": image["temp_prefix"]}
    assert cleanup_worker.handler(prepared, ctx)["complete"] is True
    assert temp_bucket.live_leases(world.table, image["temp_bucket"]) == []


def test_a_source_with_nothing_archived_or_no_archive_yet_has_nothing_to_test(net, world, ctx, monkeypatch,
                                                                              archive, tmp_path):
    net.instance("fresh")
    backed_up(world, "fresh")
    for section in (archive["section"], {**archive["section"], "repository": f"file://{tmp_path}/never-archived"}):
        [test] = plan(monkeypatch, ctx, archiving(["fresh"], section, targets=("archived_restore_point",)))["tests"]
        assert test["error"] == {"Error": "NothingToTest", "Cause": f"arn:aws:rds:{REGION}:{SOURCE_ACCOUNT}:db:fresh "
                                 "has no restore point in archive repository 'cold' yet"}
        assert test["retrieval"] is None


def test_an_archived_points_result_names_its_retrieval_and_its_rto_includes_the_wait():
    from rdsbackup_lambdas.restore_test_report import source_result

    retrieval = {"repository": "s3://cold/demo", "restore_point_id": "a1b2c3d4", "storage_class": "DEEP_ARCHIVE",
                 "tier": "Bulk", "days": 1, "packs": 3, "bytes": 3000, "requested": 3, "waiting": 0,
                 "waiting_bytes": 0, "attempt": 4, "wait_seconds": 0, "waited_seconds": 7200, "ready": True}
    test = {"source": {"arn": f"arn:aws:rds:{REGION}:{SOURCE_ACCOUNT}:db:orders"}, "resource": {"id": "t"},
            "restore_test": {"restore_point_id": "a1b2c3d4", "archived": True},
            "timing": {"started_at": 100.0, "restored_at": 400.0}, "retrieval": retrieval,
            "worker": {"test": {"passed": True, "failures": [], "restore_seconds": 50}}}
    result = source_result(test, 1000.0)
    assert result["status"] == "Passed" and result["archived"] is True
    # snapshot to throwaway (300 s) + the point's restore (50 s) + the hours its packs took to come back
    assert result["time_to_restore_seconds"] == 300 + 50 + 7200
    assert result["retrieval"] == {"repository": "s3://cold/demo", "storage_class": "DEEP_ARCHIVE", "tier": "Bulk",
                                   "packs": 3, "bytes": 3000, "requested": 3, "waiting": 0, "waited_seconds": 7200}
    usual = source_result({**test, "retrieval": None, "restore_test": {"restore_point_id": "rp"}}, 1000.0)
    assert usual["archived"] is False and usual["retrieval"] is None and usual["time_to_restore_seconds"] == 350
