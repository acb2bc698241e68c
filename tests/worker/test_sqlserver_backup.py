"""SQL Server native backup against a fake RDS SQL Server (tests/support/sqlserver_fake.py) and moto's S3
(in-process): the procedures are called as RDS wants, each `.bak` lands in the repository byte for byte
and leaves the temporary bucket, and every failure is clear and leaves no restore point."""

from __future__ import annotations

import io
import json
import os

import boto3
import pytest
from moto import mock_aws
from rdsbackup import cli
from rdsbackup.repository import Repository
from rdsbackup.sqlserver import (
    BackupFileMissing,
    NativeBackupFailed,
    NativeBackupTimeout,
    NativeBackupUnavailable,
    PollPolicy,
    SqlServerDatabaseNotFound,
    SqlServerInfo,
    backup_sqlserver,
    object_name,
)
from rdsbackup.sqlserver.backup import s3_object_blocks
from rdsbackup.sqlserver.connection import validate_host

from tests.support.postgres_server import make_test_certificates
from tests.support.sqlserver_fake import FakeRdsSqlServer, fake_bak

BUCKET = "rdsbackup-tmp-123456789012-us-east-1"
PREFIX = "session-1/orders-db/"
PASSPHRASE = "sqlserver test passphrase"
FAST = PollPolicy(first=0.001, longest=0.002, timeout=5)
INFO = SqlServerInfo(host="orders.abc.us-east-1.rds.amazonaws.com", port=1433, user="admin", password="pw-123",
                     ca_bundle="")


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.fixture
def repo(tmp_path):
    return Repository.init(f"file://{tmp_path / 'repo'}", password=PASSPHRASE)


def objects(s3) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def stored(repo, rp_id: str, ref: dict) -> bytes:
    out = io.BytesIO()
    repo.read_stream_to(ref, out, restore_point=rp_id)
    return out.getvalue()


def run(repo, fake, s3, **kw):
    kw.setdefault("temp_prefix", PREFIX)
    kw.setdefault("poll", FAST)
    return backup_sqlserver(repo, INFO, temp_bucket=BUCKET, connect=fake.connect, s3=s3, source_id="orders-db",
                            **kw)


def test_every_user_database_becomes_part_of_one_restore_point(s3, repo):
    baks = {"orders": fake_bak("orders", 5_000_000), "crm": fake_bak("crm", 300_000), "empty": b""}
    fake = FakeRdsSqlServer(baks, statuses=["CREATED", "IN_PROGRESS", "IN_PROGRESS", "SUCCESS"])
    sleeps: list[float] = []
    result = run(repo, fake, s3, sleep=sleeps.append)

    rp = repo.load_manifest(result["restore_point_id"])
    assert rp["engine"] == "sqlserver" and rp["source_id"] == "orders-db"
    assert rp["server_version"] == "15.00.4415.2"
    assert [d["name"] for d in rp["databases"]] == ["crm", "empty", "orders"]  # no master/model/msdb/...
    for db in rp["databases"]:
        assert db["bytes"] == len(baks[db["name"]])
        assert stored(repo, rp["id"], db["stream"]) == baks[db["name"]]
    assert rp["bytes"] == sum(len(b) for b in baks.values())
    assert result["new_bytes"] > 0 and result["warnings"] == []
    assert objects(s3) == []  # every .bak deleted after it was stored

    backups = [c for c in fake.calls if "rds_backup_database" in c[0]]
    assert [c[1] for c in backups] == [(db, f"arn:aws:s3:::{BUCKET}/{PREFIX}{db}.bak")
                                       for db in ("crm", "empty", "orders")]
    assert "@kms_master_key_arn" not in backups[0][0]
    assert all(t.polls == 4 for t in fake.tasks.values())
    assert len(sleeps) == 9 and max(sleeps) <= FAST.longest  # growing, bounded intervals
    assert fake.closed == 1
    assert "pw-123" not in repr(INFO) and "pw-123" not in json.dumps(rp)


def test_named_databases_and_the_kms_key(s3, repo):
    fake = FakeRdsSqlServer({"a": b"A" * 1000, "b": b"B" * 1000, "weird name/x": b"W" * 10})
    key = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
    result = run(repo, fake, s3, databases=["b", "weird name/x"], kms_key_arn=key)
    assert [d["name"] for d in result["databases"]] == ["b", "weird name/x"]
    calls = [c for c in fake.calls if "rds_backup_database" in c[0]]
    assert "@kms_master_key_arn=%s" in calls[0][0] and calls[0][1][2] == key
    assert calls[1][1][1] == f"arn:aws:s3:::{BUCKET}/{PREFIX}weird%20name%2Fx.bak"
    assert object_name("weird name/x") == "weird%20name%2Fx.bak" and object_name("ok_db-1.x") == "ok_db-1.x.bak"
    assert objects(s3) == []

    with pytest.raises(SqlServerDatabaseNotFound, match="'nope'"):
        run(repo, fake, s3, databases=["a", "nope"])
    assert len(repo.list_restore_points()) == 1


def test_offline_databases_are_skipped_and_no_databases_is_an_error(s3, repo):
    fake = FakeRdsSqlServer({"up": b"u" * 100, "down": b"d" * 100}, offline=("down",))
    assert [d["name"] for d in run(repo, fake, s3)["databases"]] == ["up"]
    with pytest.raises(SqlServerDatabaseNotFound, match="no user databases"):
        run(repo, FakeRdsSqlServer({}), s3)


def test_a_task_that_ends_in_error_fails_clearly_with_its_task_info(s3, repo):
    fake = FakeRdsSqlServer({"a": b"a" * 100, "b": b"b" * 100}, statuses=["IN_PROGRESS", "ERROR"])
    with pytest.raises(NativeBackupFailed) as err:
        run(repo, fake, s3)
    message = str(err.value)
    assert "database 'a'" in message and "task 1" in message and "ended ERROR" in message
    assert "overlap with your preferred backup window" in message and "\n" not in message
    assert repo.list_restore_points() == [] and objects(s3) == []
    assert len(fake.tasks) == 1  # stopped at the first failure

    cancelled = FakeRdsSqlServer({"a": b"a"}, statuses=["IN_PROGRESS", "CANCELLED"])
    with pytest.raises(NativeBackupFailed, match="ended CANCELLED"):
        run(repo, cancelled, s3)


def test_success_without_the_object_fails_clearly(s3, repo):
    fake = FakeRdsSqlServer({"a": b"a" * 100}, upload=False)
    with pytest.raises(BackupFileMissing) as err:
        run(repo, fake, s3)
    assert f"s3://{BUCKET}/{PREFIX}a.bak" in str(err.value) and "not there" in str(err.value)
    assert repo.list_restore_points() == []


def test_a_later_failure_commits_nothing_and_removes_the_earlier_objects(s3, repo):
    fake = FakeRdsSqlServer({"a": b"a" * 100, "b": b"b" * 100})
    original = fake.answer

    def fail_second(sql, params):
        if "rds_backup_database" in sql and params[0] == "b":
            raise RuntimeError("Msg 50000: a task is already running for database b")
        return original(sql, params)

    fake.answer = fail_second
    with pytest.raises(NativeBackupFailed, match="already running"):
        run(repo, fake, s3)
    assert repo.list_restore_points() == [] and objects(s3) == []


def test_no_native_backup_option_names_the_option_group_and_the_fix(s3, repo):
    fake = FakeRdsSqlServer({"a": b"a"}, native_backup=False)
    with pytest.raises(NativeBackupUnavailable) as err:
        run(repo, fake, s3, option_group="orders-sqlserver-se-15")
    assert "'orders-sqlserver-se-15'" in str(err.value) and "SQLSERVER_BACKUP_RESTORE" in str(err.value)


def test_a_task_that_never_ends_times_out(s3, repo):
    fake = FakeRdsSqlServer({"a": b"a"}, statuses=["IN_PROGRESS"])
    with pytest.raises(NativeBackupTimeout, match=r"did not finish in 0 s .*IN_PROGRESS"):
        run(repo, fake, s3, poll=PollPolicy(first=0.01, longest=0.01, timeout=0.05))
    assert repo.list_restore_points() == []


class FlakyBody:
    """A response body that breaks off after `cut` bytes, as a dropped connection does."""

    def __init__(self, body, cut: int):
        self.body, self.left = body, cut

    def read(self, n: int) -> bytes:
        if self.left <= 0:
            raise ConnectionResetError("connection reset by peer")
        data = self.body.read(min(n, self.left))
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.body.close()


def test_a_dropped_read_resumes_where_it_stopped(s3):
    data = os.urandom(3_000_000)
    s3.put_object(Bucket=BUCKET, Key="x.bak", Body=data)
    ranges: list[str] = []

    class Flaky:
        def __init__(self):
            self.calls = 0

        def head_object(self, **kw):
            return s3.head_object(**kw)

        def get_object(self, **kw):
            ranges.append(kw["Range"])
            response = s3.get_object(**kw)
            self.calls += 1
            if self.calls <= 2:
                response["Body"] = FlakyBody(response["Body"], 1_000_000)
            return response

    from rdsbackup.progress import Reporter

    got = b"".join(s3_object_blocks(Flaky(), BUCKET, "x.bak", reporter=Reporter(), block=256 * 1024))
    assert got == data
    assert ranges == ["bytes=0-", "bytes=1000000-", "bytes=2000000-"]


def test_the_object_changing_while_read_is_not_stitched_together(s3):
    s3.put_object(Bucket=BUCKET, Key="y.bak", Body=b"1" * 100_000)
    from rdsbackup.progress import Reporter

    blocks = s3_object_blocks(s3, BUCKET, "y.bak", reporter=Reporter(), block=10_000)
    next(blocks)
    s3.put_object(Bucket=BUCKET, Key="y.bak", Body=b"2" * 100_000)  # a second backup overwrote it
    with pytest.raises(BackupFileMissing, match="changed or vanished"):
        # The rest of the first response is buffered by moto; force a fresh ranged GET.
        blocks.throw(ConnectionResetError("reset"))
        list(blocks)


def test_s3_repository_and_the_cli(s3, monkeypatch, capsys):
    s3.create_bucket(Bucket="repo-bucket")
    monkeypatch.setenv("RDSBACKUP_PASSWORD", PASSPHRASE)
    monkeypatch.setenv("SQL_PW", "pw-123")
    monkeypatch.setenv("RDSBACKUP_SQLSERVER_CONNECT", "tests.support.sqlserver_fake:connect_from_env")
    monkeypatch.setenv("RDSBACKUP_SQLSERVER_POLL", "0.01,0.05")
    monkeypatch.setenv("RDSBACKUP_FAKE_SQLSERVER", json.dumps({"databases": {"sales": 2_000_000}}))
    url = "s3://repo-bucket/rds"
    assert cli.main(["repo", "init", "--repo", url]) == 0
    capsys.readouterr()
    code = cli.main(["backup", "sqlserver", "--repo", url, "--host", INFO.host, "--user", "admin",
                     "--password-env", "SQL_PW", "--temp-bucket", BUCKET, "--source-id", "sales-db",
                     "--ca-bundle", "", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out = json.loads(captured.out)
    assert out["engine"] == "sqlserver" and out["databases"][0]["bytes"] == 2_000_000
    assert objects(s3) == []
    repo = Repository.open(url)
    rp = repo.load_manifest(out["restore_point_id"])
    assert stored(repo, rp["id"], rp["databases"][0]["stream"]) == fake_bak("sales", 2_000_000)

    monkeypatch.setenv("RDSBACKUP_FAKE_SQLSERVER", json.dumps({"databases": {"sales": 10}, "upload": False}))
    code = cli.main(["backup", "sqlserver", "--repo", url, "--host", INFO.host, "--user", "admin",
                     "--password-env", "SQL_PW", "--temp-bucket", BUCKET, "--ca-bundle", ""])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "is not there" in err[0], err


def test_poll_policy_from_the_environment(monkeypatch):
    assert PollPolicy.from_env() == PollPolicy()
    monkeypatch.setenv("RDSBACKUP_SQLSERVER_POLL", "0.5,2")
    assert PollPolicy.from_env(timeout=60) == PollPolicy(first=0.5, longest=2, timeout=60)
    monkeypatch.setenv("RDSBACKUP_SQLSERVER_POLL", "fast")
    with pytest.raises(Exception, match="RDSBACKUP_SQLSERVER_POLL"):
        PollPolicy.from_env()


def test_host_name_check_of_the_tls_certificate():
    from cryptography import x509
    from OpenSSL import crypto

    _ca, cert_pem, _key = make_test_certificates(hosts=("orders.abc.us-east-1.rds.amazonaws.com", "*.wild.example"),
                                                 ips=("10.0.0.5",))
    cert = crypto.X509.from_cryptography(x509.load_pem_x509_certificate(cert_pem))
    assert validate_host(cert, b"orders.abc.us-east-1.rds.amazonaws.com")
    assert validate_host(cert, b"ORDERS.abc.us-east-1.rds.amazonaws.com.")
    assert validate_host(cert, b"db.wild.example")
    assert validate_host(cert, b"10.0.0.5")
    assert not validate_host(cert, b"other.abc.us-east-1.rds.amazonaws.com")
    assert not validate_host(cert, b"a.b.wild.example")
    assert not validate_host(cert, b"10.0.0.6")
