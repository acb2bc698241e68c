"""A SQL Server restore test (`rdsbackup job` of kind restore_test, engine sqlserver) against the fake RDS SQL
Server (tests/support/sqlserver_fake.py) and moto: the restored snapshot's databases are there, ONLINE and pass
DBCC CHECKDB; the restore point's `.bak`s go back through `rds_restore_database` (polled to SUCCESS) under
`rdsbackup_test_<name>` and pass DBCC CHECKDB too.

Proven only against the fake (no SQL Server runs here): which statements the worker issues, in which order,
and what it makes of their answers (a task ERROR, a missing or OFFLINE database, a CHECKDB error). Not proven:
that a real RDS SQL Server answers exactly so (the procedures' result columns, CHECKDB's error text), and
that python-tds passes DBCC's errors through as exceptions; those follow the RDS and SQL Server documentation.
"""

from __future__ import annotations

import io
import json
import uuid

import boto3
import pytest
from moto import mock_aws
from rdsbackup import job as jobmod
from rdsbackup.repository import Repository
from rdsbackup.restore_test_job import run_restore_test
from rdsbackup.sqlserver import PollPolicy, SqlServerInfo, backup_sqlserver
from rdsbackup.sqlserver import connection as sqlserver_connection

from tests.support.sqlserver_fake import FakeRdsSqlServer, fake_bak

BUCKET = "rdsbackup-tmp-123456789012-us-east-1"
RESULTS = "rdsbackup-main-123456789012-us-east-1"
PASSPHRASE = "sqlserver restore-test passphrase"
FAST = PollPolicy(first=0.001, longest=0.002, timeout=5)
INFO = SqlServerInfo(host="src.abc.us-east-1.rds.amazonaws.com", port=1433, user="admin", password="pw", ca_bundle="")
BAKS = {"orders": fake_bak("orders", 1_500_000), "billing": fake_bak("billing", 400_000)}


@pytest.fixture
def aws(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("RDSBACKUP_PASSWORD", PASSPHRASE)
    monkeypatch.setenv("RDSBACKUP_SSL_MODE", "disable")  # the fake has no TLS (a local run's setting)
    monkeypatch.setenv("RDSBACKUP_SQLSERVER_POLL", "0.001,0.002")
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        for bucket in (BUCKET, RESULTS):
            s3.create_bucket(Bucket=bucket)
        secret = boto3.client("secretsmanager", region_name="us-east-1").create_secret(
            Name="rds!db-throwaway", SecretString=json.dumps({"username": "admin", "password": "pw"}))["ARN"]
        yield {"s3": s3, "secret_arn": secret}


@pytest.fixture
def backed_up(tmp_path, aws) -> tuple[str, str]:
    url = f"file://{tmp_path / 'repo'}"
    repo = Repository.init(url, password=PASSPHRASE)
    result = backup_sqlserver(repo, INFO, temp_bucket=BUCKET, temp_prefix="b/", connect=FakeRdsSqlServer(
        dict(BAKS)).connect, s3=aws["s3"], poll=FAST, sleep=lambda s: None)
    return url, result["restore_point_id"]


def _throwaway(monkeypatch, **options) -> FakeRdsSqlServer:
    """The throwaway restored from the snapshot: it holds the source's databases."""
    server = FakeRdsSqlServer(dict(BAKS), **options)
    monkeypatch.setattr(sqlserver_connection, "factory_from_env", lambda: server.connect)
    return server


def _spec(aws, url: str, rp_id: str | None, **overrides) -> dict:
    session = f"rt-{uuid.uuid4().hex[:8]}"
    return {"kind": "restore_test", "session_id": session, "source_id": "orders-mssql", "engine": "sqlserver",
            "resource_arn": "arn:aws:rds:us-east-1:123456789012:db:rdsbackup-test-0123456789abcdef",
            "host": "throwaway.abc.us-east-1.rds.amazonaws.com", "port": 1433, "secret_arn": aws["secret_arn"],
            "repository": url, "restore_point_id": rp_id, "check_snapshot": True,
            "sqlserver": {"temp_bucket": BUCKET, "temp_prefix": f"{session}/rt/"},
            "result_url": f"s3://{RESULTS}/rdsbackup-results/123456789012/{session}/rt.json", **overrides}


def _run(spec: dict) -> tuple[dict, int]:
    return run_restore_test(spec, log=jobmod.JsonLog(io.StringIO()))


def _statements(server: FakeRdsSqlServer, word: str) -> list[tuple[str, tuple]]:
    return [call for call in server.calls if word.lower() in call[0].lower()]


def test_a_good_restore_point_is_restored_natively_and_every_database_passes_checkdb(aws, backed_up, monkeypatch):
    url, rp_id = backed_up
    server = _throwaway(monkeypatch)
    result, code = _run(_spec(aws, url, rp_id))
    assert code == 0 and result["status"] == "ok", result
    test = result["test"]
    assert test["passed"] is True and test["failures"] == []
    # the snapshot: the recorded databases there and sound
    assert [(d["database"], d["state"], d["checkdb"]) for d in test["snapshot"]["databases"]] == [
        ("billing", "ONLINE", "passed"), ("orders", "ONLINE", "passed")]
    # the restore point: each .bak restored through RDS under a scratch name, byte for byte, and checked
    assert server.restored == {f"rdsbackup_test_{name}": bak for name, bak in BAKS.items()}
    restores = _statements(server, "rds_restore_database")
    assert [params[0] for _, params in restores] == ["rdsbackup_test_billing", "rdsbackup_test_orders"]
    assert len(_statements(server, "rds_task_status")) >= 2
    [checked] = test["restore_point"]["databases"]
    assert [(d["database"], d["target"], d["state"], d["checkdb"]) for d in checked["databases"]] == [
        ("billing", "rdsbackup_test_billing", "ONLINE", "passed"), ("orders", "rdsbackup_test_orders", "ONLINE",
                                                                   "passed")]
    assert [params for sql, params in _statements(server, "dbcc checkdb")] == [()] * 4
    assert [sql.split("(")[1].split(")")[0] for sql, _ in _statements(server, "dbcc checkdb")] == [
        "[billing]", "[orders]", "[rdsbackup_test_billing]", "[rdsbackup_test_orders]"]
    # the staged .bak objects are gone
    assert aws["s3"].list_objects_v2(Bucket=BUCKET).get("Contents", []) == []
    assert test["restore_seconds"] is not None


def test_checkdb_errors_in_the_restored_snapshot_fail_the_test_naming_the_database(aws, backed_up, monkeypatch):
    url, rp_id = backed_up
    _throwaway(monkeypatch, corrupt=("billing",))
    result, code = _run(_spec(aws, url, rp_id))
    assert code == 0 and result["test"]["passed"] is False
    [failure] = result["test"]["failures"]
    assert failure.startswith("snapshot: database 'billing': DBCC CHECKDB: CHECKDB found 0 allocation errors and "
                              "2 consistency errors in database 'billing'")


def test_a_missing_or_offline_database_in_the_restored_snapshot_fails(aws, backed_up, monkeypatch):
    url, rp_id = backed_up
    server = _throwaway(monkeypatch, offline=("orders",))
    del server.databases["billing"]
    result, code = _run(_spec(aws, url, rp_id, restore_point_id=None, compare_restore_point_id=rp_id))
    assert code == 0 and result["test"]["failures"] == [
        "snapshot: database 'billing' is missing", "snapshot: database 'orders' is OFFLINE, not ONLINE"]
    assert result["test"]["restore_point"] is None and _statements(server, "rds_restore_database") == []


def test_a_restore_task_that_ends_in_error_is_a_test_that_could_not_run(aws, backed_up, monkeypatch):
    url, rp_id = backed_up
    _throwaway(monkeypatch, statuses=["IN_PROGRESS", "ERROR"])
    result, code = _run(_spec(aws, url, rp_id))
    assert code == 1 and result["status"] == "failed" and result["error_type"] == "NativeBackupFailed"
    assert "native restore of database 'rdsbackup_test_billing'" in result["error"]
    assert "Aborted the task" in result["error"]


def test_a_restored_database_that_fails_checkdb_fails_the_test(aws, backed_up, monkeypatch):
    url, rp_id = backed_up
    _throwaway(monkeypatch, corrupt=("rdsbackup_test_orders",))
    result, code = _run(_spec(aws, url, rp_id))
    assert code == 0 and result["test"]["passed"] is False
    [failure] = result["test"]["failures"]
    assert failure.startswith(f"restore point {rp_id}: restored database 'rdsbackup_test_orders': DBCC CHECKDB: ")


def test_restoring_a_sqlserver_restore_point_without_the_temporary_bucket_is_refused(aws, backed_up, monkeypatch):
    url, rp_id = backed_up
    _throwaway(monkeypatch)
    result, code = _run(_spec(aws, url, rp_id, sqlserver=None))
    assert code == 1 and result["error_type"] == "JobSpecError" and "temp_bucket" in result["error"]
