"""Image-level backup end to end: the synthesized state machine in moto, the real worker process
against a real PostgreSQL server over verified TLS, the restore point restored and compared."""

from __future__ import annotations

import json
import os
import subprocess

import boto3
import pytest

from tests.e2e import faults
from tests.e2e.configs import REGION
from tests.e2e.conftest import report_of
from tests.e2e.server_harness import (
    create_postgres_instance,
    create_sqlserver_instance,
    network,
    nothing_left,
    temporary_leftovers,
    use_fake_sqlserver,
)
from tests.support.postgres_server import create_sample_database, ensure_role, schema_dump, table_checksums

REPOSITORY = "s3://rdsbackup-main-123456789012-us-east-1/images"


@pytest.fixture
def shop(tls_postgres):
    """Makes the database the image-level backup must capture, owned by the DB's master role."""
    ensure_role(tls_postgres, "app_reader")

    def make(db: dict) -> str:
        for name in ("shop", "shop_restored"):
            tls_postgres.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        create_sample_database(tls_postgres, "shop", user=db["user"], password=db["password"])
        return "shop"

    yield make
    for name in ("shop", "shop_restored"):
        tls_postgres.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _rdsbackup(harness, *args: str, password: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "AWS_ENDPOINT_URL": harness.endpoint, "RDSBACKUP_DB_PASSWORD": password or ""}
    return subprocess.run(["rdsbackup", *args], env=env, capture_output=True, text=True, timeout=300)


def _resource(report: dict, identifier: str) -> dict:
    return next(r for r in report["resources"] if r["arn"].endswith(f":{identifier}"))


def test_image_backup_writes_a_restore_point_that_restores_equal(server_harness, tls_postgres, shop):
    net = network()
    db = create_postgres_instance("shop-db", tls_postgres, net, {"backup": "images"})
    shop(db)
    described = server_harness.run({"policy": "images"}, name="image-happy", timeout=300)
    report = report_of(described)
    resource = _resource(report, "shop-db")
    assert resource["status"] == "Success", (resource, server_harness.workers.runs and
                                             [r.log()[-2000:] for r in server_harness.workers.runs.values()])
    assert resource["snapshot_arn"] and resource["restore_point_id"] and resource["bytes"] > 0
    assert nothing_left(), temporary_leftovers()
    # the app's own group is back to being the DB's only group
    groups = boto3.client("rds", region_name=REGION).describe_db_instances(DBInstanceIdentifier="shop-db")[
        "DBInstances"][0]["VpcSecurityGroups"]
    assert [g["VpcSecurityGroupId"] for g in groups] == [net["app_group"]]

    listed = _rdsbackup(server_harness, "list", "--repo", REPOSITORY, "--json")
    assert listed.returncode == 0, listed.stderr
    assert resource["restore_point_id"] in listed.stdout
    restored = _rdsbackup(
        server_harness, "restore", "postgres", "--repo", REPOSITORY, "--restore-point", resource["restore_point_id"],
        "--host", "127.0.0.1", "--port", str(tls_postgres.port), "--user", db["user"],
        "--password-env", "RDSBACKUP_DB_PASSWORD", "--database", "shop", "--target-database", "shop_restored",
        "--ca-bundle", tls_postgres.ca_file, password=db["password"])
    assert restored.returncode == 0, restored.stderr
    assert schema_dump(tls_postgres, "shop_restored") == schema_dump(tls_postgres, "shop")
    assert table_checksums(tls_postgres, "shop_restored") == table_checksums(tls_postgres, "shop")


def test_security_groups_are_exactly_as_narrow_as_the_design_says(server_harness, tls_postgres, shop):
    net = network()
    shop(create_postgres_instance("shop-db", tls_postgres, net, {"backup": "images"}))
    seen = {}
    ec2 = boto3.client("ec2", region_name=REGION)

    def capture(job):  # while the worker runs, the groups exist: record their rules
        groups = ec2.describe_security_groups(Filters=[{"Name": "tag:rdsbackup:temporary", "Values": ["true"]}])
        seen["groups"] = groups["SecurityGroups"]
        return "run"

    server_harness.workers.behaviour = capture
    report = report_of(server_harness.run({"policy": "images"}, name="image-groups", timeout=300))
    assert _resource(report, "shop-db")["status"] == "Success"
    by_role = {g["GroupName"].split("-")[1]: g for g in seen["groups"]}  # rdsbackup-<db|worker>-...
    db_group, worker_group = by_role["db"], by_role["worker"]
    (ingress,) = db_group["IpPermissions"]
    assert (ingress["IpProtocol"], ingress["FromPort"], ingress["ToPort"]) == ("tcp", tls_postgres.port,
                                                                              tls_postgres.port)
    assert [pair["GroupId"] for pair in ingress["UserIdGroupPairs"]] == [worker_group["GroupId"]]
    assert ingress["IpRanges"] == ingress["Ipv6Ranges"] == ingress["PrefixListIds"] == []
    egress = {(p["IpProtocol"], p.get("FromPort"), p.get("ToPort"),
               tuple(sorted(pair["GroupId"] for pair in p["UserIdGroupPairs"])),
               tuple(sorted(r["CidrIp"] for r in p["IpRanges"]))) for p in worker_group["IpPermissionsEgress"]}
    assert egress == {("tcp", tls_postgres.port, tls_postgres.port, (db_group["GroupId"],), ()),
                      ("tcp", 443, 443, (), ("0.0.0.0/0",))}
    assert worker_group["IpPermissions"] == []


@pytest.mark.parametrize(("fault", "expected"), [
    ("fail_to_start", "CannotPullContainerError"),
    ("crash", "137"),
])
def test_worker_failures_are_reported_and_cleaned_up(server_harness, tls_postgres, shop, fault, expected):
    net = network()
    shop(create_postgres_instance("shop-db", tls_postgres, net, {"backup": "images"}))
    server_harness.workers.behaviour = lambda job: fault
    described = server_harness.run({"policy": "images"}, name=f"image-{fault}", timeout=300)
    resource = _resource(report_of(described), "shop-db")
    assert resource["status"] == "Failed"
    assert resource["error"].startswith("WorkerFailed:") and expected in resource["error"], resource["error"]
    assert resource["snapshot_arn"], "the snapshot steps before the image backup still happened"
    assert resource["restore_point_id"] is None
    assert nothing_left(), temporary_leftovers()
    listed = _rdsbackup(server_harness, "list", "--repo", REPOSITORY, "--json")
    assert json.loads(listed.stdout or "[]") in ([], {"restore_points": []}) or listed.returncode != 0


def _two_databases(tls_postgres, shop, tag: str = "images") -> None:
    net = network()
    shop(create_postgres_instance("shop-db", tls_postgres, net, {"backup": tag}))
    create_postgres_instance("shop-db-2", tls_postgres, net, {"backup": tag})


def test_one_workers_crash_leaves_the_other_resource_backed_up(server_harness, tls_postgres, shop):
    _two_databases(tls_postgres, shop)
    server_harness.workers.behaviour = lambda job: "crash" if job["source_id"] == "shop-db-2" else "run"
    report = report_of(server_harness.run({"policy": "images"}, name="image-one-crash", timeout=300))
    assert _resource(report, "shop-db")["status"] == "Success", server_harness.worker_logs()
    crashed = _resource(report, "shop-db-2")
    assert crashed["status"] == "Failed" and crashed["error"].startswith("WorkerFailed:")
    assert nothing_left(), temporary_leftovers()


def test_security_group_creation_failure_is_reported_and_nothing_is_left(server_harness, tls_postgres, shop):
    from moto.ec2.models.security_groups import SecurityGroupBackend

    _two_databases(tls_postgres, shop)
    with faults.failing_method(SecurityGroupBackend, "create_security_group", faults.security_group_limit,
                               times=1) as fault:
        report = report_of(server_harness.run({"policy": "images"}, name="image-sg-fails", timeout=300))
    assert fault["raised"] == 1
    statuses = sorted(r["status"] for r in report["resources"])
    assert statuses == ["Failed", "Success"]
    failed = next(r for r in report["resources"] if r["status"] == "Failed")
    assert "RulesPerSecurityGroupLimitExceeded" in failed["error"]
    assert nothing_left(), temporary_leftovers()


def test_worker_past_its_timeout_is_stopped_and_reported(server_harness, tls_postgres, shop):
    shop(create_postgres_instance("slow-db", tls_postgres, network(), {"backup": "hasty"}))
    server_harness.workers.behaviour = lambda job: "hang"
    report = report_of(server_harness.run({"policy": "hasty"}, name="image-timeout", timeout=300))
    (resource,) = report["resources"]
    assert resource["status"] == "Failed" and resource["error"].startswith("WorkerTimedOut:")
    assert all(run.process.poll() is not None for run in server_harness.workers.runs.values())
    assert nothing_left(), temporary_leftovers()


def test_cleanup_waits_out_a_dependency_violation(server_harness, tls_postgres, shop):
    from moto.ec2.models.security_groups import SecurityGroupBackend

    shop(create_postgres_instance("shop-db", tls_postgres, network(), {"backup": "images"}))
    with faults.failing_method(SecurityGroupBackend, "delete_security_group", faults.dependency_violation,
                               times=2) as fault:
        report = report_of(server_harness.run({"policy": "images"}, name="image-eni", timeout=300))
    (resource,) = report["resources"]
    assert resource["status"] == "Success", resource
    assert fault["raised"] == 2
    assert nothing_left(), temporary_leftovers()


def test_cleanup_that_cannot_finish_tags_for_the_sweeper_and_says_so(server_harness, tls_postgres, shop):
    from moto.ec2.models.security_groups import SecurityGroupBackend

    shop(create_postgres_instance("shop-db", tls_postgres, network(), {"backup": "images"}))
    with faults.failing_method(SecurityGroupBackend, "delete_security_group", faults.dependency_violation):
        report = report_of(server_harness.run({"policy": "images"}, name="image-eni-stuck", timeout=300))
    (resource,) = report["resources"]
    assert any("sweeper" in warning for warning in resource["warnings"]), resource
    ec2 = boto3.client("ec2", region_name=REGION)
    left = ec2.describe_security_groups(Filters=[{"Name": "tag:rdsbackup:sweep", "Values": ["true"]}])
    assert len(left["SecurityGroups"]) == 2


def test_sql_server_native_backup_through_the_temporary_bucket(server_harness, tls_postgres):
    """SQL Server: RDS native backup (a fake answering the RDS stored procedures, writing the .bak into the
    moto bucket) into the temporary bucket, streamed into the repository; the bucket goes when done."""
    from rdsbackup_local.moto_patches import tls_requests
    from tests.support.sqlserver_fake import fake_bak

    create_sqlserver_instance("mssql-db", network(), {"backup": "images"})
    use_fake_sqlserver(server_harness, {"databases": {"appdb": 3_000_000}})
    with tls_requests():
        report = report_of(server_harness.run({"policy": "images"}, name="image-mssql", timeout=300))
    resource = _resource(report, "mssql-db")
    assert resource["status"] == "Success", (resource, [r.log()[-2000:] for r in server_harness.workers.runs.values()])
    assert resource["restore_point_id"] and resource["bytes"] >= 3_000_000
    assert nothing_left(), temporary_leftovers()  # the temporary bucket went with the last lease
    from rdsbackup.repository import Repository

    repo = Repository.open(REPOSITORY)  # through moto's server (AWS_ENDPOINT_URL), key wrapped by KMS
    manifest = repo.load_manifest(resource["restore_point_id"])
    assert manifest["engine"] == "sqlserver"
    (ref,) = [value for value in _stream_refs(manifest)]
    assert b"".join(repo.open_stream(ref)) == fake_bak("appdb", 3_000_000)


def _stream_refs(value):
    """Every stream reference in a manifest (dicts with a chunk-list blob)."""
    if isinstance(value, dict):
        if "blob" in value and "size" in value:
            yield value
        else:
            for item in value.values():
                yield from _stream_refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _stream_refs(item)
