"""`rdsbackup job`: the worker as the state machine runs it, against moto's server (Secrets Manager, S3,
KMS) and the real PostgreSQL server with TLS required and verified.

The job spec comes in $RDSBACKUP_JOB, the credentials from Secrets Manager, the result document goes to
S3; the restore point it names then restores and compares equal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import uuid

import boto3
import pytest
from rdsbackup import job as jobmod
from rdsbackup.postgres import ConnectionInfo, restore_postgres
from rdsbackup.repository import Repository

from tests.support import moto_server
from tests.support.postgres_server import (
    SAMPLE_ROLE,
    create_sample_database,
    ensure_role,
    make_test_certificates,
    schema_dump,
    shared_tls_server,
    table_checksums,
)
from tests.support.sqlserver_fake import FakeRdsSqlServer, fake_bak

pytestmark = pytest.mark.postgres
moto_server_url = moto_server.moto_server_url
moto_endpoint = moto_server.moto_endpoint

SOURCE_DB = "job_src"


@pytest.fixture(scope="module")
def server():
    server = shared_tls_server()
    ensure_role(server, SAMPLE_ROLE)
    for name in (SOURCE_DB, "job_copy", "job_small"):
        server.drop_database(name)
    create_sample_database(server, SOURCE_DB)
    server.create_database("job_small")
    server.psql("CREATE TABLE t (id int PRIMARY KEY, v text);"
                "INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 500) i;", dbname="job_small")
    yield server
    # the server is shared: a database the next tests' roles cannot connect to would fail their backups
    for name in (SOURCE_DB, "job_copy", "job_small"):
        server.drop_database(name)


@pytest.fixture
def aws(moto_endpoint, monkeypatch, server):
    """A bucket, a KMS key and an RDS-style secret in moto's server; the TLS bundle and a fast init."""
    monkeypatch.setenv("RDSBACKUP_CA_BUNDLE", server.ca_file)
    monkeypatch.setenv(jobmod.INIT_SETTLE_ENV, "0")
    monkeypatch.delenv("RDSBACKUP_PASSWORD", raising=False)
    monkeypatch.delenv("RDSBACKUP_SSL_MODE", raising=False)
    bucket = f"repo-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    key_arn = boto3.client("kms").create_key(Description="repository")["KeyMetadata"]["Arn"]
    secrets = boto3.client("secretsmanager")
    secret_arn = secrets.create_secret(
        Name=f"rds!db-{uuid.uuid4().hex[:8]}",
        SecretString=json.dumps({"username": server.superuser, "password": server.password}))["ARN"]
    return {"endpoint": moto_endpoint, "bucket": bucket, "key_arn": key_arn, "secret_arn": secret_arn,
            "secrets": secrets}


def make_spec(aws, server, **overrides) -> dict:
    session = overrides.pop("session_id", f"sess-{uuid.uuid4().hex[:8]}")
    spec = {
        "session_id": session, "resource_arn": "arn:aws:rds:us-east-1:123456789012:db:orders-db",
        "source_id": "orders-db", "engine": "postgres", "host": "localhost", "port": server.port,
        "secret_arn": aws["secret_arn"], "databases": [SOURCE_DB],
        "repository": f"s3://{aws['bucket']}/repo", "repository_kms_key_arn": aws["key_arn"],
        "retention": {"keep_last": 7, "keep_days": None},
        "result_url": f"s3://{aws['bucket']}/rdsbackup-results/{session}/orders-db.json",
        "sqlserver": None,
    }
    spec.update(overrides)
    return spec


def read_result(spec: dict) -> dict:
    bucket, key = spec["result_url"].removeprefix("s3://").split("/", 1)
    return json.loads(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())


def run_in_process(spec: dict | str, **kw) -> tuple[dict, int]:
    text = spec if isinstance(spec, str) else json.dumps(spec)
    return jobmod.run_job(text, log=jobmod.JsonLog(open(os.devnull, "w")), **kw)


def restore_points(aws, source_id: str | None = None) -> list[dict]:
    try:
        return Repository.open(f"s3://{aws['bucket']}/repo").list_restore_points(source_id)
    except Exception as exc:
        if "no repository" in str(exc):
            return []
        raise


def test_job_backs_up_over_tls_and_the_restore_point_restores_equal(aws, server):
    spec = make_spec(aws, server)
    rdsbackup = shutil.which("rdsbackup")
    assert rdsbackup, "pip install -e ./worker_image"
    env = dict(os.environ, RDSBACKUP_JOB=json.dumps(spec))
    proc = subprocess.run([rdsbackup, "job"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert server.password not in proc.stdout + proc.stderr
    events = [json.loads(line) for line in proc.stderr.splitlines()]
    assert {e["message"] for e in events} >= {"job started", "repository initialised", "backup done", "job finished"}
    assert all(e["session_id"] == spec["session_id"] for e in events)

    result = read_result(spec)
    assert result["status"] == "ok" and result["error"] is None, result
    assert result["restore_point_id"] and result["bytes"] > 0 and result["new_bytes"] > 0
    assert result["duration_seconds"] > 0 and result["databases"] == [SOURCE_DB]
    assert result["warnings"] == [] and server.password not in json.dumps(result)

    repo = Repository.open(spec["repository"])
    rp = repo.load_manifest(result["restore_point_id"])
    assert rp["source_id"] == "orders-db" and rp["engine"] == "postgres"
    info = ConnectionInfo(host="localhost", port=server.port, user=server.superuser, password=server.password)
    server.drop_database("job_copy")
    restore_postgres(repo, result["restore_point_id"], info, database=SOURCE_DB, target_database="job_copy")
    assert schema_dump(server, "job_copy") == schema_dump(server, SOURCE_DB)
    assert table_checksums(server, "job_copy") == table_checksums(server, SOURCE_DB)


def test_the_production_job_only_appends(aws, server):
    # Retention (forget, prune) runs in the backup account's session (rdsbackup maintain), not here.
    ids = []
    for _ in range(3):
        spec = make_spec(aws, server, databases=["job_small"], retention={"keep_last": 1, "keep_days": None})
        result, code = run_in_process(spec)
        assert code == 0 and read_result(spec) == json.loads(json.dumps(result, default=str))
        assert "forgotten" not in result and "prune" not in result
        ids.append(result["restore_point_id"])
    assert sorted(rp["id"] for rp in restore_points(aws, "orders-db")) == sorted(ids)


def test_each_restore_point_records_the_source_databases_resource_id(aws, server):
    # a database recreated under the same name gets a new resource id: its points start a new chain
    spec = make_spec(aws, server, databases=["job_small"], source_resource_id="db-ABCDEFGHIJKL")
    result, code = run_in_process(spec)
    assert code == 0, result
    [point] = [p for p in restore_points(aws, "orders-db") if p["id"] == result["restore_point_id"]]
    assert point["source_resource_id"] == "db-ABCDEFGHIJKL"


@pytest.mark.parametrize("case", ["missing secret", "wrong password", "unreachable", "no CA bundle", "wrong CA",
                                  "unknown database"])
def test_failures_are_reported_in_the_result_and_leave_no_restore_point(aws, server, monkeypatch, tmp_path, case):
    spec = make_spec(aws, server, databases=["job_small"])
    expect = {"missing secret": ("CredentialsError", "cannot read the database secret"),
              "wrong password": ("AuthenticationFailed", "authentication failed"),
              "unreachable": ("ServerUnreachable", "cannot reach PostgreSQL"),
              "no CA bundle": ("TlsNotConfigured", "RDSBACKUP_CA_BUNDLE is not set"),
              "wrong CA": ("TlsFailed", "certificate verify failed"),
              "unknown database": ("DatabaseNotFound", "nope")}[case]
    if case == "missing secret":
        spec["secret_arn"] = aws["secret_arn"].replace("rds!db", "absent")
    elif case == "wrong password":
        spec["secret_arn"] = aws["secrets"].create_secret(
            Name=f"wrong-{uuid.uuid4().hex[:8]}",
            SecretString=json.dumps({"username": server.superuser, "password": "not-it"}))["ARN"]
    elif case == "unreachable":
        spec["port"] = moto_server.free_port()
    elif case == "no CA bundle":
        monkeypatch.delenv("RDSBACKUP_CA_BUNDLE")
    elif case == "wrong CA":
        ca_pem, _c, _k = make_test_certificates(ca_name="not the server's CA")
        (tmp_path / "ca.pem").write_bytes(ca_pem)
        monkeypatch.setenv("RDSBACKUP_CA_BUNDLE", str(tmp_path / "ca.pem"))
    elif case == "unknown database":
        spec["databases"] = ["nope"]
    _result, code = run_in_process(spec)
    assert code == 1
    written = read_result(spec)
    assert written["status"] == "failed" and written["restore_point_id"] is None
    assert written["error_type"] == expect[0] and expect[1] in written["error"], written
    assert "\n" not in written["error"] and server.password not in json.dumps(written)
    assert restore_points(aws) == []


def test_a_stopped_worker_reports_it(aws, server):
    # SIGTERM (ECS stop_task) while the worker waits after creating the repository.
    import signal
    import time

    spec = make_spec(aws, server, databases=["job_small"])
    env = dict(os.environ, RDSBACKUP_JOB=json.dumps(spec), **{jobmod.INIT_SETTLE_ENV: "60"})
    proc = subprocess.Popen([shutil.which("rdsbackup"), "job"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    for line in proc.stderr:
        if "repository initialised" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    written = read_result(spec)
    assert written["status"] == "failed" and written["error_type"] == "JobStopped", written
    assert restore_points(aws) == []


def test_bad_specs(aws, server, capsys):
    spec = make_spec(aws, server, engine="oracle")
    _result, code = run_in_process(spec)
    written = read_result(spec)
    assert code == 1 and written["error_type"] == "JobSpecError" and "'engine'" in written["error"]
    # No spec at all: nowhere to write a result; exit 1 with the reason on stderr.
    assert jobmod.main({}) == 1
    assert "RDSBACKUP_JOB is not set" in capsys.readouterr().err


def test_the_job_path_refuses_unverified_tls_unless_told(aws, server, monkeypatch):
    monkeypatch.setenv("RDSBACKUP_SSL_MODE", "require")
    monkeypatch.delenv("RDSBACKUP_CA_BUNDLE")
    spec = make_spec(aws, server, databases=["job_small"])
    result, code = run_in_process(spec)
    assert code == 0 and any("verification is off" in w for w in result["warnings"])


def test_workers_racing_to_create_the_repository_both_succeed(aws, server, monkeypatch):
    monkeypatch.setenv(jobmod.INIT_SETTLE_ENV, "1")
    specs = [make_spec(aws, server, databases=["job_small"], source_id=f"racer-{i}") for i in range(2)]
    results: list = [None, None]

    def go(i):
        results[i] = run_in_process(specs[i])

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [code for _r, code in results] == [0, 0], results
    repo = Repository.open(specs[0]["repository"])
    for result, _code in results:
        repo.load_manifest(result["restore_point_id"])  # readable with the key everyone uses


def test_sqlserver_job_with_the_fake_rds_server(aws, server):
    temp = f"rdsbackup-tmp-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=temp)
    fake = FakeRdsSqlServer({"sales": fake_bak("sales", 1_500_000), "hr": fake_bak("hr", 20_000)},
                            endpoint=aws["endpoint"])
    spec = make_spec(aws, server, engine="sqlserver", host="sales.abc.us-east-1.rds.amazonaws.com", port=1433,
                     source_id="sales-db", databases=None,
                     sqlserver={"temp_bucket": temp, "temp_prefix": "sess/sales-db/"})
    os.environ["RDSBACKUP_SQLSERVER_POLL"] = "0.01,0.02"
    try:
        result, code = run_in_process(spec, sqlserver_connect=fake.connect)
    finally:
        del os.environ["RDSBACKUP_SQLSERVER_POLL"]
    assert code == 0, result
    assert result["databases"] == ["hr", "sales"] and result["bytes"] == 1_520_000
    assert fake.info.user == server.superuser and fake.info.ca_bundle == server.ca_file
    assert boto3.client("s3").list_objects_v2(Bucket=temp).get("KeyCount", 0) == 0
    rp = Repository.open(spec["repository"]).load_manifest(result["restore_point_id"])
    assert rp["engine"] == "sqlserver" and [d["bytes"] for d in rp["databases"]] == [20_000, 1_500_000]

    failing = FakeRdsSqlServer({"sales": b"x"}, statuses=["IN_PROGRESS", "ERROR"], endpoint=aws["endpoint"])
    spec = make_spec(aws, server, engine="sqlserver", host="sales.abc", port=1433, source_id="sales-db",
                     databases=None, sqlserver={"temp_bucket": temp, "temp_prefix": "sess2/"})
    os.environ["RDSBACKUP_SQLSERVER_POLL"] = "0.01,0.02"
    try:
        result, code = run_in_process(spec, sqlserver_connect=failing.connect)
    finally:
        del os.environ["RDSBACKUP_SQLSERVER_POLL"]
    assert code == 1 and result["error_type"] == "NativeBackupFailed" and "ended ERROR" in result["error"]
    assert len(restore_points(aws, "sales-db")) == 1


def test_a_job_waiting_for_a_repository_lock_logs_it_and_goes_on_when_it_is_released(aws, server):
    import io
    import threading

    spec = make_spec(aws, server, databases=["job_small"])
    assert run_in_process(spec)[1] == 0  # the repository exists
    lock = Repository.open(spec["repository"]).take_lock("exclusive", "prune elsewhere")
    timer = threading.Timer(2.0, lock.release)
    timer.start()
    stream = io.StringIO()
    try:
        result, code = jobmod.run_job(json.dumps(spec), log=jobmod.JsonLog(stream))
    finally:
        timer.cancel()
        lock.release()
    assert code == 0 and result["status"] == "ok"
    [waited] = [json.loads(line) for line in stream.getvalue().splitlines()
                if json.loads(line)["message"] == "waiting for a repository lock"]
    assert waited["level"] == "WARNING" and waited["holder"] == "prune elsewhere"
    assert "waiting up to" in waited["detail"]
