"""Image-level backup end to end: the synthesized state machine in moto, the real worker process
against a real PostgreSQL server over verified TLS, the restore point restored and compared."""

from __future__ import annotations

import json
import os
import subprocess

import boto3
import pytest

from tests.e2e.conftest import report_of
from tests.e2e.configs import REGION
from tests.e2e.server_harness import create_postgres_instance, network, nothing_left, temporary_leftovers
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
    by_role = {("db" if "-db-" in g["GroupName"] or g["GroupName"].endswith("-db") else "worker"): g
               for g in seen["groups"]}
    db_group, worker_group = by_role["db"], by_role["worker"]
    assert db_group["IpPermissions"] == [{
        "IpProtocol": "tcp", "FromPort": tls_postgres.port, "ToPort": tls_postgres.port, "IpRanges": [],
        "Ipv6Ranges": [], "PrefixListIds": [],
        "UserIdGroupPairs": [{"GroupId": worker_group["GroupId"], "UserId": "123456789012"}]}]
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
