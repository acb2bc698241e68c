"""`rdsbackup restore sqlserver` against the fake RDS SQL Server and moto's S3: each `.bak` goes from the
repository into the temporary bucket, `rds_restore_database` is called with the right arguments, the task
is polled, the object is deleted on every path, and an existing database is never overwritten unless told."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws
from rdsbackup import cli
from rdsbackup.repository import Repository
from rdsbackup.sqlserver import (
    NativeBackupFailed,
    PollPolicy,
    SqlServerDatabaseExists,
    SqlServerDatabaseNotFound,
    SqlServerInfo,
    backup_sqlserver,
    restore_sqlserver,
)

from tests.support.sqlserver_fake import FakeRdsSqlServer, fake_bak

BUCKET = "rdsbackup-tmp-123456789012-us-east-1"
PASSPHRASE = "sqlserver restore passphrase"
FAST = PollPolicy(first=0.001, longest=0.002, timeout=5)
INFO = SqlServerInfo(host="orders.abc.us-east-1.rds.amazonaws.com", port=1433, user="admin", password="pw-123",
                     ca_bundle="")
BAKS = {"orders": fake_bak("orders", 3_000_000), "billing": fake_bak("billing", 700_000)}


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.fixture
def backed_up(tmp_path, s3):
    repo = Repository.init(f"file://{tmp_path / 'repo'}", password=PASSPHRASE)
    source = FakeRdsSqlServer(dict(BAKS))
    result = backup_sqlserver(repo, INFO, temp_bucket=BUCKET, temp_prefix="b/", connect=source.connect, s3=s3,
                              poll=FAST, sleep=lambda s: None)
    return repo, result["restore_point_id"]


def _restore(repo, rp_id, server, s3, **options):
    return restore_sqlserver(repo, rp_id, INFO, temp_bucket=BUCKET, temp_prefix="r/", connect=server.connect, s3=s3,
                             poll=FAST, sleep=lambda s: None, **options)


def _restore_calls(server) -> list[tuple[str, tuple]]:
    return [call for call in server.calls if "rds_restore_database" in call[0]]


def test_each_database_is_restored_through_rds_native_restore_byte_for_byte(backed_up, s3):
    repo, rp_id = backed_up
    target = FakeRdsSqlServer({})
    result = _restore(repo, rp_id, target, s3)
    assert target.restored == BAKS
    calls = _restore_calls(target)
    assert sorted(calls) == sorted(
        ("exec msdb.dbo.rds_restore_database @restore_db_name=%s, @s3_arn_to_restore_from=%s, @type='FULL'",
         (name, f"arn:aws:s3:::{BUCKET}/r/{name}.bak")) for name in BAKS)
    assert {d["target"] for d in result["databases"]} == set(BAKS)
    assert s3.list_objects_v2(Bucket=BUCKET).get("Contents", []) == [], "the temporary objects are removed"


def test_one_database_under_another_name_with_the_kms_key(backed_up, s3):
    repo, rp_id = backed_up
    target = FakeRdsSqlServer({})
    _restore(repo, rp_id, target, s3, database="orders", target_database="orders_copy",
             kms_key_arn="arn:aws:kms:us-east-1:123456789012:key/abc")
    assert target.restored == {"orders_copy": BAKS["orders"]}
    ((sql, params),) = _restore_calls(target)
    assert sql.endswith("@kms_master_key_arn=%s") and params[2] == "arn:aws:kms:us-east-1:123456789012:key/abc"


def test_an_existing_database_is_refused_without_replace_and_nothing_is_called(backed_up, s3):
    repo, rp_id = backed_up
    target = FakeRdsSqlServer({"orders": b"the live database"})
    with pytest.raises(SqlServerDatabaseExists, match=r"'orders' exist on .*pass --replace"):
        _restore(repo, rp_id, target, s3, database="orders")
    assert _restore_calls(target) == [] and target.databases == {"orders": b"the live database"}


def test_replace_restores_beside_the_old_database_then_swaps(backed_up, s3):
    repo, rp_id = backed_up
    target = FakeRdsSqlServer({"orders": b"the live database"})
    result = _restore(repo, rp_id, target, s3, database="orders", replace=True)
    assert target.restored == {"orders": BAKS["orders"]} and "orders" not in target.databases
    ((_, params),) = _restore_calls(target)
    assert params[0] == "orders_rdsbackup_new", "restored under a staging name first"
    order = [sql.split()[1] if sql.startswith("exec") else "ALTER" for sql, _ in target.calls
             if "rds_restore" in sql or "rds_drop" in sql or sql.startswith("ALTER")]
    assert order == ["msdb.dbo.rds_restore_database", "msdb.dbo.rds_drop_database", "ALTER"]
    assert result["databases"][0]["replaced"] is True


def test_a_failed_replace_leaves_the_old_database_and_removes_the_object(backed_up, s3):
    repo, rp_id = backed_up
    target = FakeRdsSqlServer({"orders": b"the live database"}, statuses=["IN_PROGRESS", "ERROR"])
    with pytest.raises(NativeBackupFailed, match=r"native restore of database 'orders_rdsbackup_new'.*ERROR"):
        _restore(repo, rp_id, target, s3, database="orders", replace=True)
    assert target.databases == {"orders": b"the live database"}
    assert s3.list_objects_v2(Bucket=BUCKET).get("Contents", []) == []


def test_a_database_the_restore_point_lacks_is_named(backed_up, s3):
    repo, rp_id = backed_up
    with pytest.raises(SqlServerDatabaseNotFound, match=r"has no database 'hr' \(it has: "):
        _restore(repo, rp_id, FakeRdsSqlServer({}), s3, database="hr")


def test_cli_restore_sqlserver(backed_up, s3, monkeypatch, capsys):
    repo, rp_id = backed_up
    monkeypatch.setenv("RDSBACKUP_PASSWORD", PASSPHRASE)
    monkeypatch.setenv("DB_PASSWORD", "pw-123")
    monkeypatch.setenv("RDSBACKUP_SQLSERVER_CONNECT", "tests.support.sqlserver_fake:connect_from_env")
    monkeypatch.setenv("RDSBACKUP_FAKE_SQLSERVER", json.dumps({"databases": {}}))
    monkeypatch.setenv("RDSBACKUP_SQLSERVER_POLL", "0.001,0.002,5")
    code = cli.main(["restore", "sqlserver", "--repo", repo.url, "--restore-point", rp_id, "--host", INFO.host,
                     "--user", "admin", "--password-env", "DB_PASSWORD", "--ca-bundle", "", "--temp-bucket", BUCKET,
                     "--database", "billing", "--target-database", "billing_restored", "--json"])
    assert code == 0, capsys.readouterr().err
    out = json.loads(capsys.readouterr().out)
    assert out["databases"] == [{"name": "billing", "target": "billing_restored", "bytes": len(BAKS["billing"]),
                                 "task_id": 1, "replaced": False}]
