"""Restore tests end to end: the synthesized restore-test state machine in moto runs the synthesized restore
state machine as a child, the real worker validates against the local PostgreSQL standing in for the
throwaway's endpoint, and everything the test made is gone afterwards (or tagged for the sweeper)."""

from __future__ import annotations

import json
import re
import sys
import time

import boto3
import pytest

from tests.e2e.configs import REGION
from tests.e2e.conftest import report_of
from tests.e2e.server_harness import (
    create_postgres_instance,
    network,
    nothing_left,
    temporary_leftovers,
    throwaway_instances,
)
from tests.e2e.sqlserver_points import (
    backed_up_digest,
    bucket_leases,
    calls_of,
    restored_baks,
    restored_digests,
    sqlserver_backed_up,
)
from tests.support.postgres_server import create_sample_database, ensure_role

SCRATCH = "rdsbackup_test_shop"


@pytest.fixture
def backed_up(server_harness, tls_postgres):
    """shop-db (the local server's `shop`) backed up once by policy `images`: a snapshot and a restore point."""
    ensure_role(tls_postgres, "app_reader")
    for name in ("shop", SCRATCH):
        tls_postgres.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    db = create_postgres_instance("shop-db", tls_postgres, network(), {"backup": "images"})
    create_sample_database(tls_postgres, "shop", user=db["user"], password=db["password"])
    backup = report_of(server_harness.run({"policy": "images"}, name="rt-backup", timeout=300))
    assert backup["status"] == "Success", backup
    yield db
    for name in ("shop", SCRATCH):
        tls_postgres.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def snapshot_tested(server_harness, tls_postgres):
    """shop-db backed up by `images` (a snapshot and a restore point) and by the snapshot-only `snaptested`;
    yields images' restore point and snaptested's snapshot."""
    ensure_role(tls_postgres, "app_reader")
    for name in ("shop", "shop_hidden", SCRATCH):
        tls_postgres.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    db = create_postgres_instance("shop-db", tls_postgres, network(), {"backup": "images", "snapshot-test": "weekly"})
    create_sample_database(tls_postgres, "shop", user=db["user"], password=db["password"])
    images = report_of(server_harness.run({"policy": "images"}, name="st-images", timeout=300))
    assert images["status"] == "Success", images
    snapshots = report_of(server_harness.run({"policy": "snaptested"}, name="st-snapshots", timeout=300))
    assert snapshots["status"] == "Success", snapshots
    yield {"restore_point_id": images["resources"][0]["restore_point_id"],
           "snapshot_arn": snapshots["resources"][0]["snapshot_arn"]}
    for name in ("shop", "shop_hidden", SCRATCH):
        tls_postgres.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _run_test(harness, name: str, policy: str = "images") -> tuple[dict, dict]:
    started = time.monotonic()
    described = harness.run({"policy": policy}, name=name, timeout=300, workflow="RestoreTest")
    described["wall_seconds"] = round(time.monotonic() - started, 1)
    return described, report_of(described)


def _transitions(harness, execution_arn: str) -> int:
    return sum(1 for e in harness.history(execution_arn) if e["type"].endswith("StateEntered"))


def test_a_good_backup_passes_and_nothing_is_left(server_harness, backed_up):
    described, report = _run_test(server_harness, "rt-good")
    assert described["status"] == "SUCCEEDED", (report, server_harness.worker_logs())
    [source] = report["sources"]
    assert source["status"] == "Passed" and source["failures"] == []
    assert source["source"].endswith(":db:shop-db") and source["restore_point_id"]
    assert source["tables_checked"] >= 10 and source["time_to_restore_seconds"] is not None
    # the restore ran as a child of the restore state machine, into a small private throwaway
    [child] = server_harness.sfn.list_executions(stateMachineArn=server_harness.app.workflow_arn("Restore"))[
        "executions"]
    target = json.loads(server_harness.sfn.describe_execution(executionArn=child["executionArn"])["input"])["target"]
    assert target["identifier"] == source["throwaway"] and target["publicly_accessible"] is False
    assert target["instance_class"] == "db.t4g.micro" and len(target["security_groups"]) == 1
    assert child["status"] == "SUCCEEDED"
    # everything the test made is gone: throwaway, groups, worker task
    assert throwaway_instances() == [] and nothing_left(), temporary_leftovers()
    print(f"\nrestore test: {_transitions(server_harness, described['executionArn'])} transitions "
          f"(+ {_transitions(server_harness, child['executionArn'])} in the restore), "
          f"{described['wall_seconds']} s", file=sys.stderr)


def test_data_that_differs_from_the_backup_fails_naming_the_table(server_harness, backed_up, tls_postgres):
    server_harness.workers.behaviour = lambda job: (
        [sys.executable, "-m", "tests.e2e.restore_test_worker", "alter", tls_postgres.conninfo()]
        if job.get("kind") == "restore_test" else "run")
    described, report = _run_test(server_harness, "rt-altered")
    assert described["status"] == "FAILED" and described["error"] == "RestoreTestFailed"
    [source] = report["sources"]
    assert source["status"] == "Failed"
    assert any("table app.orders: same row count, different data" in f for f in source["failures"]), source
    assert throwaway_instances() == [] and nothing_left(), temporary_leftovers()


def test_a_throwaway_that_cannot_be_deleted_is_tagged_for_the_sweeper_and_reported(server_harness, backed_up):
    def protect(job: dict) -> str | list[str]:
        if job.get("kind") != "restore_test":
            return "run"
        return [sys.executable, "-m", "tests.e2e.restore_test_worker", "protect", job["resource_arn"]]

    server_harness.workers.behaviour = protect
    described, report = _run_test(server_harness, "rt-undeletable")
    [source] = report["sources"]
    [left] = throwaway_instances()
    assert source["left_for_sweeper"] == [f"DB instance {left}"]
    tags = boto3.client("rds", region_name=REGION).list_tags_for_resource(
        ResourceName=f"arn:aws:rds:{REGION}:123456789012:db:{left}")["TagList"]
    assert {"Key": "rdsbackup:sweep", "Value": "true"} in tags
    # the worker's groups and task are still removed; the SNS message names what was left
    assert temporary_leftovers()["tasks"] == []
    # the data was good; the leftover is reported (and published), not hidden
    assert source["status"] == "Passed" and described["status"] == "SUCCEEDED"


def test_a_snapshot_only_policy_restores_its_snapshot_and_checks_it_against_the_newest_restore_point(
        server_harness, snapshot_tested, tls_postgres):
    described, report = _run_test(server_harness, "st-good", policy="snaptested")
    assert described["status"] == "SUCCEEDED", (report, server_harness.worker_logs())
    [source] = report["sources"]
    assert source["status"] == "Passed" and source["failures"] == []
    # its own snapshot was restored; nothing restored beside it; compared with images' restore point
    assert source["snapshot_arn"] == snapshot_tested["snapshot_arn"] and source["restore_point_id"] is None
    assert source["compared_with_restore_point"] == snapshot_tested["restore_point_id"]
    assert "shop" in source["databases_checked"]
    [job] = [run.job for run in server_harness.workers.runs.values() if run.job.get("kind") == "restore_test"]
    assert job["restore_point_id"] is None and job["compare_restore_point_id"] == snapshot_tested["restore_point_id"]
    assert job["result_url"].startswith("s3://rdsbackup-main-")
    assert not tls_postgres.execute(f"SELECT 1 FROM pg_database WHERE datname = '{SCRATCH}'")
    assert throwaway_instances() == [] and nothing_left(), temporary_leftovers()


def test_a_snapshot_only_test_fails_when_a_database_is_missing_from_the_restored_snapshot(
        server_harness, snapshot_tested, tls_postgres):
    server_harness.workers.behaviour = lambda job: (
        [sys.executable, "-m", "tests.e2e.restore_test_worker", "hide", tls_postgres.conninfo()]
        if job.get("kind") == "restore_test" else "run")
    described, report = _run_test(server_harness, "st-missing", policy="snaptested")
    assert described["status"] == "FAILED" and described["error"] == "RestoreTestFailed"
    [source] = report["sources"]
    assert source["status"] == "Failed" and "snapshot: database 'shop' is missing" in source["failures"], source
    assert throwaway_instances() == [] and nothing_left(), temporary_leftovers()


def test_a_sqlserver_restore_point_is_restored_into_the_throwaway_and_checked_then_the_bucket_goes(
        server_harness, tmp_path):
    """The real worker against the fake RDS SQL Server: the restored snapshot's databases pass DBCC CHECKDB; the
    restore point's .bak goes through the temporary bucket (leased by Prepare restore test) into the throwaway
    with rds_restore_database, and the restored database is ONLINE and passes CHECKDB; then the throwaway, the
    groups, the lease and the bucket are gone."""
    from rdsbackup_local.moto_patches import tls_requests

    with tls_requests():
        restore_point, calls = sqlserver_backed_up(server_harness, tmp_path)
        described, report = _run_test(server_harness, "mssql-rt")
    assert described["status"] == "SUCCEEDED", (report, server_harness.worker_logs())
    [source] = report["sources"]
    assert source["status"] == "Passed" and source["failures"] == [] and source["databases_checked"] == ["appdb"]
    assert source["restore_point_id"] == restore_point and source["warnings"] == []
    [job] = [run.job for run in server_harness.workers.runs.values() if run.job.get("kind") == "restore_test"]
    assert job["engine"] == "sqlserver" and job["restore_point_id"] == restore_point
    bucket = job["sqlserver"]["temp_bucket"]
    assert re.fullmatch(r"rdsbackup-tmp-123456789012-us-east-1-[0-9a-f]{12}", bucket), job["sqlserver"]
    assert job["sqlserver"]["temp_prefix"] == f"{job['session_id']}/{source['throwaway']}/"
    [bak] = restored_baks(calls)
    assert bak == f"arn:aws:s3:::{bucket}/{job['sqlserver']['temp_prefix']}rdsbackup_test_appdb.bak"
    # what RDS read back is the .bak its native backup wrote
    assert restored_digests(calls) == {"rdsbackup_test_appdb": backed_up_digest()}
    statements = [sql for sql, _ in calls_of(calls)]
    assert "DBCC CHECKDB ([appdb]) WITH NO_INFOMSGS, ALL_ERRORMSGS" in statements
    assert "DBCC CHECKDB ([rdsbackup_test_appdb]) WITH NO_INFOMSGS, ALL_ERRORMSGS" in statements
    # the worker's result as the report read it: the restored database checked
    bucket_name, key = job["result_url"].removeprefix("s3://").split("/", 1)
    worker_result = json.loads(boto3.client("s3").get_object(Bucket=bucket_name, Key=key)["Body"].read())
    [checked] = worker_result["test"]["restore_point"]["databases"]
    assert [(d["database"], d["target"], d["state"], d["checkdb"]) for d in checked["databases"]] == [
        ("appdb", "rdsbackup_test_appdb", "ONLINE", "passed")]
    # the lease is released and the bucket (no other lease) deleted, with everything else
    assert throwaway_instances() == [] and nothing_left(), temporary_leftovers()
    assert bucket_leases() == []


def test_a_sqlserver_restore_point_that_rds_cannot_restore_fails_the_test_and_still_cleans_up(
        server_harness, tmp_path):
    """The native restore task ends in ERROR: the test fails naming the database and RDS's reason, and the
    throwaway, the groups, the bucket lease and the bucket are still removed (the Catch path)."""
    from rdsbackup_local.moto_patches import tls_requests

    with tls_requests():
        restore_point, calls = sqlserver_backed_up(server_harness, tmp_path, statuses=["IN_PROGRESS", "ERROR"])
        described, report = _run_test(server_harness, "mssql-rt-error")
    assert described["status"] == "FAILED" and described["error"] == "RestoreTestFailed"
    [source] = report["sources"]
    assert source["status"] == "Failed" and source["restore_point_id"] == restore_point
    assert any("native restore of database 'rdsbackup_test_appdb'" in f for f in source["failures"]), source
    assert len(restored_baks(calls)) == 1
    assert throwaway_instances() == [] and nothing_left(), temporary_leftovers()
    assert bucket_leases() == []

