"""The backup-account session end to end: the synthesized maintenance state machine in moto, its worker
as a real `rdsbackup maintain` process (control account) archiving the image-level backups into a
DEEP_ARCHIVE archive repository, applying retention, cleaning up on every path; a restore from the
archive (retrieval included) equal to the source, by the CLI and by the restore state machine."""

from __future__ import annotations

import json
import os
import subprocess

import boto3
import pytest
from rdsbackup_lambdas.handlers import check_archive_retrieval

from rdsbackup_local.moto_patches import slow_retrievals
from tests.e2e.configs import CONTROL_ACCOUNT, REGION
from tests.e2e.conftest import report_of
from tests.e2e.server_harness import create_postgres_instance, network, nothing_left, temporary_leftovers
from tests.support.postgres_server import create_sample_database, ensure_role, table_checksums

ARCHIVE = f"s3://rdsbackup-cold-{CONTROL_ACCOUNT}-{REGION}/images"
ARCHIVE_BUCKET = f"rdsbackup-cold-{CONTROL_ACCOUNT}-{REGION}"


@pytest.fixture
def backed_up(server_harness, tls_postgres):
    """Two image-level backups of shop-db (policy "images"): returns (db, restore point ids)."""
    ensure_role(tls_postgres, "app_reader")
    for name in ("shop", "shop_from_archive"):
        tls_postgres.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    db = create_postgres_instance("shop-db", tls_postgres, network(), {"backup": "images"})
    create_sample_database(tls_postgres, "shop", user=db["user"], password=db["password"])
    ids = []
    for n in range(2):
        report = report_of(server_harness.run({"policy": "images"}, name=f"maint-backup-{n}", timeout=300))
        (resource,) = report["resources"]
        assert resource["status"] == "Success", resource
        ids.append(resource["restore_point_id"])
    yield db, ids
    for name in ("shop", "shop_from_archive"):
        tls_postgres.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _logs(harness) -> list[str]:
    return [run.log()[-2000:] for run in harness.workers.runs.values() if "maintain" in str(run.job) or True]


def _rdsbackup(harness, *args: str, password: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "AWS_ENDPOINT_URL": harness.endpoint, "RDSBACKUP_DB_PASSWORD": password}
    return subprocess.run(["rdsbackup", *args], env=env, capture_output=True, text=True, timeout=300)


def _maintenance_tasks() -> list[dict]:
    ecs = boto3.client("ecs", region_name=REGION)
    arns = ecs.list_tasks(cluster="rdsbackup-maintenance", desiredStatus="STOPPED")["taskArns"]
    arns += ecs.list_tasks(cluster="rdsbackup-maintenance", desiredStatus="RUNNING")["taskArns"]
    return ecs.describe_tasks(cluster="rdsbackup-maintenance", tasks=arns)["tasks"] if arns else []


def test_session_archives_restore_points_that_restore_equal_and_archives_nothing_twice(
        server_harness, tls_postgres, backed_up):
    db, ids = backed_up
    described = server_harness.run({"policy": "images"}, name="maint-1", workflow="Maintenance", timeout=300)
    assert described["status"] == "SUCCEEDED", (described.get("cause"), _logs(server_harness))
    report = json.loads(described["output"])
    assert report["status"] == "Success" and sorted(report["archived"]) == sorted(ids)
    assert report["forgotten"] == [] and report["cleanup"]["stopped"] is False
    # the session record
    record = boto3.client("dynamodb", region_name=REGION).scan(
        TableName=server_harness.app.control.outputs["SessionTableName"],
        FilterExpression="begins_with(pk, :p)", ExpressionAttributeValues={":p": {"S": "maintenance#"}})["Items"]
    assert [json.loads(r["report"]["S"])["status"] for r in record] == ["Success"]
    # the worker ran in the control account's maintenance cluster, and has stopped
    assert [t["lastStatus"] for t in _maintenance_tasks()] == ["STOPPED"]
    # packs in DEEP_ARCHIVE; the rest STANDARD
    s3 = boto3.client("s3", region_name=REGION)
    classes = {}
    for obj in s3.list_objects_v2(Bucket=ARCHIVE_BUCKET, Prefix="images/")["Contents"]:
        classes.setdefault(obj["Key"].split("/")[1], set()).add(obj.get("StorageClass", "STANDARD"))
    assert classes["data"] == {"DEEP_ARCHIVE"} and classes["manifests"] == {"STANDARD"}

    listed = _rdsbackup(server_harness, "list", "--repo", ARCHIVE, "--json")
    assert listed.returncode == 0, listed.stderr
    assert sorted(p["id"] for p in json.loads(listed.stdout)) == sorted(ids)
    restored = _rdsbackup(
        server_harness, "restore", "postgres", "--repo", ARCHIVE, "--restore-point", ids[-1], "--host", "127.0.0.1",
        "--port", str(tls_postgres.port), "--user", db["user"], "--password-env", "RDSBACKUP_DB_PASSWORD",
        "--database", "shop", "--target-database", "shop_from_archive", "--ca-bundle", tls_postgres.ca_file,
        "--wait", "--wait-interval", "1", password=db["password"])
    assert restored.returncode == 0, restored.stderr
    assert table_checksums(tls_postgres, "shop_from_archive") == table_checksums(tls_postgres, "shop")

    again = server_harness.run({"policy": "images"}, name="maint-2", workflow="Maintenance", timeout=300)
    assert again["status"] == "SUCCEEDED", again.get("cause")
    assert json.loads(again["output"])["archived"] == []


@pytest.mark.parametrize(("fault", "expected"), [
    ("fail_to_start", "CannotPullContainerError"),
    ("crash", "137"),
])
def test_a_failed_worker_is_cleaned_up_reported_and_archives_nothing(server_harness, backed_up, fault, expected):
    server_harness.workers.behaviour = lambda job: fault if "policy" in job else "run"
    described = server_harness.run({"policy": "images"}, name=f"maint-{fault}", workflow="Maintenance",
                                   timeout=300)
    assert described["status"] == "FAILED" and described["error"] == "MaintenanceSessionFailed"
    report = json.loads(described["cause"])
    assert report["status"] == "Failed" and report["error"].startswith("WorkerFailed") and expected in report["error"]
    assert all(t["lastStatus"] == "STOPPED" for t in _maintenance_tasks())
    listed = _rdsbackup(server_harness, "list", "--repo", ARCHIVE, "--json")
    assert listed.returncode != 0 or json.loads(listed.stdout) == []


def test_a_hanging_worker_is_stopped_by_the_cleanup_after_its_timeout(server_harness, backed_up, monkeypatch):
    server_harness.workers.behaviour = lambda job: "hang" if "policy" in job else "run"
    import rdsbackup_lambdas.maintenance as maintenance

    real_check = maintenance.check

    def impatient(state):  # the configured timeout is 2 minutes: make it a second
        return real_check(state.model_copy(update={"timeout_seconds": 1}))

    monkeypatch.setattr(maintenance, "check", impatient)
    described = server_harness.run({"policy": "images"}, name="maint-hang", workflow="Maintenance", timeout=300)
    assert described["status"] == "FAILED"
    report = json.loads(described["cause"])
    assert report["error"].startswith("WorkerTimedOut")
    assert all(t["lastStatus"] == "STOPPED" for t in _maintenance_tasks())


def _archived(server_harness, backed_up, name: str):
    db, ids = backed_up
    described = server_harness.run({"policy": "images"}, name=name, workflow="Maintenance", timeout=300)
    assert described["status"] == "SUCCEEDED", (described.get("cause"), _logs(server_harness))
    return db, ids


def _entered(harness, described: dict, state: str) -> int:
    return sum(1 for e in harness.history(described["executionArn"])
               if e.get("stateEnteredEventDetails", {}).get("name") == state)


def _from_archive(restore_point: str, db: dict, **extra) -> dict:
    return {"restore": "database", "policy": "images", "restore_point_id": restore_point, "repository": "cold",
            "target": {"arn": db["arn"]}, "databases": ["shop"], "target_database": "shop_from_archive", **extra}


def test_the_restore_workflow_retrieves_an_archived_point_then_restores_it_equal(
        server_harness, tls_postgres, backed_up, monkeypatch):
    db, ids = _archived(server_harness, backed_up, "maint-for-workflow")
    checks = []
    real_poll = check_archive_retrieval.poll
    with slow_retrievals() as retrievals:
        def poll(retrieval, *, first):
            checks.append(retrieval.waiting)
            if len(checks) == 3:  # "not ready" for the first two checks, as a retrieval of hours would be
                retrievals.complete()
            return real_poll(retrieval, first=first)

        monkeypatch.setattr(check_archive_retrieval, "poll", poll)
        described = server_harness.run(_from_archive(ids[-1], db, retrieval_tier="Bulk"),
                                       name="archive-restore", workflow="Restore", timeout=300)
    report = report_of(described)
    assert described["status"] == "SUCCEEDED", (report, _logs(server_harness))
    assert table_checksums(tls_postgres, "shop_from_archive") == table_checksums(tls_postgres, "shop")
    assert report["restored"]["databases"][0]["target"] == "shop_from_archive"
    # the loop ran: two waits while the packs were being retrieved, then the worker
    assert _entered(server_harness, described, "Wait for archive retrieval") == 2
    assert checks[0] > 0 and len(checks) == 3
    # every pack the point needs was asked for (and only packs: index, manifests and keys are STANDARD)
    s3 = boto3.client("s3", region_name=REGION)
    restored = [o["Key"] for o in s3.list_objects_v2(Bucket=ARCHIVE_BUCKET, Prefix="images/",
                                                     OptionalObjectAttributes=["RestoreStatus"])["Contents"]
                if "RestoreStatus" in o]
    assert restored and all(key.startswith("images/data/") for key in restored)
    assert nothing_left(), temporary_leftovers()


def test_a_retrieval_that_never_completes_fails_at_the_bound_and_starts_no_worker(
        server_harness, backed_up):
    db, ids = _archived(server_harness, backed_up, "maint-for-timeout")
    runs_before = len(server_harness.workers.runs)
    with slow_retrievals():
        described = server_harness.run(_from_archive(ids[-1], db), name="archive-timeout", workflow="Restore",
                                       timeout=300)
    report = report_of(described)
    assert described["status"] == "FAILED"
    assert "ArchiveRetrievalTimedOut" in report["error"] and "retrieval_timeout_hours = 0.005" in report["error"]
    assert "DEEP_ARCHIVE" in report["error"], report["error"]
    assert len(server_harness.workers.runs) == runs_before, "no worker starts for a point that is not readable"
    assert nothing_left(), temporary_leftovers()
    record = boto3.client("dynamodb", region_name=REGION).get_item(
        TableName=server_harness.app.control.outputs["SessionTableName"],
        Key={"pk": {"S": f"restore#{report['restore_id']}"}})
    assert json.loads(record["Item"]["report"]["S"])["status"] == "Failed"


def test_a_tier_the_archive_class_does_not_offer_is_refused_naming_it(server_harness, backed_up):
    db, ids = _archived(server_harness, backed_up, "maint-for-tier")
    described = server_harness.run(_from_archive(ids[-1], db, retrieval_tier="Expedited"),
                                   name="archive-tier", workflow="Restore", timeout=120)
    report = report_of(described)
    assert described["status"] == "FAILED"
    assert "retrieval_tier" in report["error"] and "Expedited" in report["error"], report["error"]
    assert "DEEP_ARCHIVE" in report["error"] and "Standard, Bulk" in report["error"]
