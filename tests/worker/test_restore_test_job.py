"""`rdsbackup job` of kind restore_test against moto's server and the real PostgreSQL (TLS verified): the
restored server is checked, the restore point restored beside it and compared table by table."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import uuid

import boto3
import pytest
import rdsbackup.postgres as postgres_package
import rdsbackup.postgres.validate as validate_module
from rdsbackup import job as jobmod
from rdsbackup.errors import RepositoryLocked
from rdsbackup.repository import Repository
from rdsbackup.restore_test_job import run_restore_test, scratch_database_name

from tests.support import moto_server
from tests.support.postgres_server import SAMPLE_ROLE, create_sample_database, ensure_role, shared_tls_server
from tests.worker.test_job import make_spec, read_result, run_in_process

pytestmark = pytest.mark.postgres
moto_server_url = moto_server.moto_server_url
moto_endpoint = moto_server.moto_endpoint

SOURCE_DB = "rt_src"


@pytest.fixture(scope="module")
def server():
    server = shared_tls_server()
    ensure_role(server, SAMPLE_ROLE)
    for name in (SOURCE_DB, scratch_database_name(SOURCE_DB)):
        server.drop_database(name)
    create_sample_database(server, SOURCE_DB)
    yield server
    # the server is shared: a database the next tests' roles cannot connect to would fail their backups
    for name in (SOURCE_DB, scratch_database_name(SOURCE_DB)):
        server.drop_database(name)


@pytest.fixture(autouse=True)
def no_scratch_database_left(server):
    yield
    server.drop_database(scratch_database_name(SOURCE_DB))


@pytest.fixture
def aws(moto_endpoint, monkeypatch, server):
    monkeypatch.setenv("RDSBACKUP_CA_BUNDLE", server.ca_file)
    monkeypatch.setenv(jobmod.INIT_SETTLE_ENV, "0")
    monkeypatch.delenv("RDSBACKUP_PASSWORD", raising=False)
    monkeypatch.delenv("RDSBACKUP_SSL_MODE", raising=False)
    bucket = f"repo-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    key_arn = boto3.client("kms").create_key(Description="repository")["KeyMetadata"]["Arn"]
    secret_arn = boto3.client("secretsmanager").create_secret(
        Name=f"rds!db-{uuid.uuid4().hex[:8]}",
        SecretString=json.dumps({"username": server.superuser, "password": server.password}))["ARN"]
    return {"endpoint": moto_endpoint, "bucket": bucket, "key_arn": key_arn, "secret_arn": secret_arn}


@pytest.fixture
def restore_point(aws, server) -> tuple[dict, str]:
    spec = make_spec(aws, server, databases=[SOURCE_DB], source_id="rt-db")
    result, code = run_in_process(spec)
    assert code == 0, result
    return spec, result["restore_point_id"]


def quiet() -> jobmod.JsonLog:
    return jobmod.JsonLog(io.StringIO())


def rt_spec(backup_spec: dict, rp_id: str | None, **overrides) -> dict:
    session = f"rt-{uuid.uuid4().hex[:8]}"
    bucket = (backup_spec["repository"] or overrides["result_url"]).removeprefix("s3://").split("/")[0]
    return {"kind": "restore_test", "session_id": session, "source_id": "rt-db", "engine": "postgres",
            "resource_arn": "arn:aws:rds:us-east-1:123456789012:db:rdsbackup-test-rt-db",
            "host": "localhost", "port": backup_spec["port"], "secret_arn": backup_spec["secret_arn"],
            "repository": backup_spec["repository"], "restore_point_id": rp_id, "check_snapshot": True,
            "result_url": f"s3://{bucket}/rdsbackup-results/{session}/rt-db.json", **overrides}


def test_a_good_restore_point_passes_through_the_console_script(restore_point, server):
    backup_spec, rp_id = restore_point
    spec = rt_spec(backup_spec, rp_id)
    env = dict(os.environ, RDSBACKUP_JOB=json.dumps(spec))
    proc = subprocess.run([shutil.which("rdsbackup"), "job"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert server.password not in proc.stdout + proc.stderr
    result = read_result(spec)
    assert result["status"] == "ok" and result["kind"] == "restore_test"
    test = result["test"]
    assert test["passed"] and test["failures"] == [], test["failures"]
    assert test["snapshot"]["status"] == "passed"
    assert test["restore_point"]["tables_checked"] >= 10 and test["restore_point"]["row_counts_only"] is False
    assert test["restore_seconds"] > 0


def test_data_altered_after_the_backup_fails_naming_the_table(restore_point, server, monkeypatch):
    backup_spec, rp_id = restore_point
    real_restore = postgres_package.restore_postgres

    def restore_then_alter(*args, **kwargs):
        result = real_restore(*args, **kwargs)
        server.psql("SET session_replication_role = replica; UPDATE app.orders SET note = 'x' WHERE id = 7",
                    dbname=kwargs["target_database"])
        return result

    monkeypatch.setattr(postgres_package, "restore_postgres", restore_then_alter)
    result, code = run_restore_test(rt_spec(backup_spec, rp_id), log=quiet())
    assert code == 0 and result["status"] == "ok"
    assert result["test"]["passed"] is False
    assert result["test"]["failures"] == [f"restore point {rp_id}: database {SOURCE_DB}, table app.orders: "
                                          "same row count, different data (digest differs)"]


def test_a_snapshot_without_a_recorded_database_fails(restore_point, server):
    backup_spec, rp_id = restore_point
    server.psql(f"ALTER DATABASE {SOURCE_DB} RENAME TO {SOURCE_DB}_away")
    try:
        result, code = run_restore_test(rt_spec(backup_spec, rp_id), log=quiet())
        assert code == 0 and f"snapshot: database '{SOURCE_DB}' is missing" in result["test"]["failures"]
    finally:
        server.psql(f"ALTER DATABASE {SOURCE_DB}_away RENAME TO {SOURCE_DB}")


def test_a_test_that_cannot_run_says_why(restore_point, server):
    backup_spec, rp_id = restore_point
    spec = rt_spec(backup_spec, rp_id, secret_arn=backup_spec["secret_arn"].replace("rds!db", "absent"))
    result, code = run_restore_test(spec, log=quiet())
    assert code == 1 and result["status"] == "failed" and result["error_type"] == "CredentialsError"
    assert read_result(spec)["error"].startswith("cannot read the database secret")


def test_the_restore_point_is_read_under_a_shared_lock_that_keeps_prune_out(restore_point, server, monkeypatch):
    backup_spec, rp_id = restore_point
    real_restore, real_validate = postgres_package.restore_postgres, validate_module.validate_restore_point
    refused: list[str] = []

    def try_to_prune():
        # another session's prune while the test reads the restore point (restore, then comparison)
        try:
            Repository.open(backup_spec["repository"]).prune()
        except RepositoryLocked as exc:
            refused.append(str(exc))

    def restore_while_pruning(*args, **kwargs):
        try_to_prune()
        return real_restore(*args, **kwargs)

    def validate_while_pruning(*args, **kwargs):
        try_to_prune()
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(postgres_package, "restore_postgres", restore_while_pruning)
    monkeypatch.setattr(validate_module, "validate_restore_point", validate_while_pruning)
    spec = rt_spec(backup_spec, rp_id)
    result, code = run_restore_test(spec, log=quiet())
    assert code == 0 and result["test"]["passed"], result
    assert len(refused) == 2 and all(f"restore test of {rp_id} ({spec['session_id']})" in r for r in refused)
    assert list(Repository.open(backup_spec["repository"]).backend.list("locks/")) == []


def test_an_archived_point_is_restored_from_the_archive_once_retrieved_under_a_lock_there(
        restore_point, server, aws, monkeypatch):
    """`targets: archived_restore_point`: the spec names the archive repository; the point is read through its
    own view, only once its Glacier packs are readable, under a shared lock in the archive that keeps the
    backup-account session's exclusive work (archive retention) out until the last comparison."""
    from rdsbackup.repository.archive import ArchiveRepository, archive_restore_point
    from rdsbackup.repository.retrieval import request_retrieval

    backup_spec, rp_id = restore_point
    archive_url = f"s3://{aws['bucket']}/archive"
    source = Repository.open(backup_spec["repository"])
    archive = ArchiveRepository.init_archive(archive_url, kms_key_id=aws["key_arn"], ids_of=source._keys)
    archive_restore_point(source, archive, rp_id, storage_class="DEEP_ARCHIVE")
    spec = rt_spec(backup_spec, rp_id, repository=archive_url, check_snapshot=False)
    result, code = run_restore_test(spec, log=quiet())
    assert code == 1 and result["status"] == "failed"
    assert f"restore point {rp_id} of archive {archive_url}:" in result["error"]
    assert "packs are not retrieved from DEEP_ARCHIVE yet" in result["error"]

    request_retrieval(archive.backend, archive.pack_states(rp_id), tier="Bulk", days=1)  # moto: at once
    real_validate = validate_module.validate_restore_point
    refused: list[str] = []

    def validate_while_the_archive_is_maintained(*args, **kwargs):
        try:
            with ArchiveRepository.open_archive(archive_url).exclusive_lock("archive retention", wait=0):
                pass
        except RepositoryLocked as exc:
            refused.append(str(exc))
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(validate_module, "validate_restore_point", validate_while_the_archive_is_maintained)
    spec = rt_spec(backup_spec, rp_id, repository=archive_url, check_snapshot=False)
    result, code = run_restore_test(spec, log=quiet())
    assert code == 0 and result["test"]["passed"], result
    assert result["test"]["snapshot"] is None and result["test"]["restore_point"]["tables_checked"] >= 10
    assert refused and all(f"restore test of {rp_id}" in r for r in refused), refused
    assert list(ArchiveRepository.open_archive(archive_url).backend.list("locks/")) == []


def test_a_snapshot_only_test_compares_with_another_restore_point_without_restoring_it(restore_point, server):
    """A snapshot-only policy's test: the snapshot's databases and row counts are checked against the newest
    restore point of the same source (`compare_restore_point_id`); nothing is restored beside it."""
    backup_spec, rp_id = restore_point
    # the "snapshot" is of a later moment: one event more than the restore point recorded
    server.psql("INSERT INTO app.events (note) VALUES ('after the backup')", dbname=SOURCE_DB)
    try:
        result, code = run_restore_test(rt_spec(backup_spec, None, compare_restore_point_id=rp_id), log=quiet())
    finally:
        server.psql("DELETE FROM app.events WHERE note = 'after the backup'", dbname=SOURCE_DB)
    assert code == 0 and result["status"] == "ok", result
    test = result["test"]
    assert test["restore_point"] is None and test["restore_seconds"] is None
    assert SOURCE_DB in [d["database"] for d in test["snapshot"]["databases"]]
    [difference] = [d for d in test["snapshot"]["row_count_differences"] if d["database"] == SOURCE_DB]
    assert difference["table"] == "app.events" and difference["rows"] == difference["recorded"] + 1
    assert test["passed"] is True  # the counts are informational: a snapshot is of another moment
    # nothing was restored beside the snapshot
    scratch = scratch_database_name(SOURCE_DB)
    assert not server.execute(f"SELECT 1 FROM pg_database WHERE datname = '{scratch}'")


def test_a_snapshot_only_test_fails_when_a_recorded_database_is_missing(restore_point, server):
    backup_spec, rp_id = restore_point
    server.psql(f"ALTER DATABASE {SOURCE_DB} RENAME TO {SOURCE_DB}_away")
    try:
        result, code = run_restore_test(rt_spec(backup_spec, None, compare_restore_point_id=rp_id), log=quiet())
    finally:
        server.psql(f"ALTER DATABASE {SOURCE_DB}_away RENAME TO {SOURCE_DB}")
    assert code == 0 and result["test"]["passed"] is False
    assert f"snapshot: database '{SOURCE_DB}' is missing" in result["test"]["failures"]


def test_a_snapshot_only_test_without_any_restore_point_checks_every_database(server, aws):
    spec = rt_spec({"port": server.port, "secret_arn": aws["secret_arn"], "repository": None,
                    "host": "localhost"}, None, result_url=f"s3://{aws['bucket']}/rdsbackup-results/x/rt-db.json")
    result, code = run_restore_test(spec, log=quiet())
    assert code == 0 and result["test"]["passed"] is True, result
    checked = [d["database"] for d in result["test"]["snapshot"]["databases"]]
    assert SOURCE_DB in checked and all("amcheck" in d for d in result["test"]["snapshot"]["databases"])
