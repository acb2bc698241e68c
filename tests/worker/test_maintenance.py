"""`rdsbackup maintain` (rdsbackup.maintenance): the backup-account session's job. Archives what is due
(idempotently), keeps what is not archived yet out of retention's reach, prunes, applies archive
retention with GFS; the result document goes to S3 (moto's server)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import time

import boto3
import pytest
from rdsbackup.maintenance import run_maintenance
from rdsbackup.repository import Repository
from rdsbackup.repository.archive import ArchiveRepository

from tests.support.moto_server import moto_endpoint, moto_server_url  # noqa: F401  (fixtures)

DAY = 86400


@pytest.fixture
def results(moto_endpoint):  # noqa: F811
    s3 = boto3.client("s3")
    bucket = f"results-{random.randrange(1 << 30)}"
    s3.create_bucket(Bucket=bucket)

    def read(key: str) -> dict:
        return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())

    return bucket, read


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setenv("RDSBACKUP_PASSWORD", "backup key")
    monkeypatch.setenv("RDSBACKUP_ARCHIVE_PASSWORD", "archive key")
    repo = Repository.init(f"file://{tmp_path}/backup")
    data = bytearray(random.Random(3).randbytes(600_000))
    ids = []
    for day in range(3):
        data[day * 1000 : day * 1000 + 8] = b"changed!"
        with repo.begin_backup(source_id="orders-db", engine="postgres") as writer:
            ref = writer.add_stream("t", [bytes(data)], profile="table")
            ids.append(writer.commit({"streams": {"t": ref}}))
    return repo, ids, f"file://{tmp_path}/archive"


def spec(repo, bucket, archive_url=None, **archive_fields) -> str:
    doc = {"session_id": "s-1", "policy": "nightly", "repository": repo.url,
           "retention": {"keep_last": 1}, "result_url": f"s3://{bucket}/results/s-1.json", "archive": None}
    if archive_url:
        doc["archive"] = {"repository": archive_url, "after_days": 1, **archive_fields}
    return json.dumps(doc)


def test_archives_what_is_due_then_forgets_and_prunes(setup, results):
    repo, ids, archive_url = setup
    bucket, read = results
    result, code = run_maintenance(spec(repo, bucket, archive_url), now=time.time() + 2 * DAY)
    assert code == 0, result
    assert [a["restore_point_id"] for a in result["archived"]] == ids
    assert sorted(result["forgotten"]) == sorted(ids[:2]) and result["kept_for_archive"] == []
    assert result["prune"]["packs_deleted"] + result["prune"]["packs_repacked"] >= 0
    assert read("results/s-1.json")["status"] == "ok"
    archive = ArchiveRepository.open_archive(archive_url)
    assert [p["id"] for p in archive.list_restore_points()] == ids
    # A repeated (or retried) session archives nothing twice.
    again, code = run_maintenance(spec(repo, bucket, archive_url), now=time.time() + 2 * DAY)
    assert code == 0 and again["archived"] == [] and again["forgotten"] == []
    assert len(archive._manifest_ids()) == 3


def test_retention_never_outruns_archiving(setup, results):
    repo, ids, archive_url = setup
    bucket, _ = results
    # Nothing is due yet (after_days 1, the points are minutes old): keep_last 1 must not remove them.
    result, code = run_maintenance(spec(repo, bucket, archive_url), now=time.time())
    assert code == 0, result
    assert result["archived"] == [] and result["forgotten"] == []
    assert sorted(result["kept_for_archive"]) == sorted(ids[:2])
    assert [p["id"] for p in repo.list_restore_points()] == ids


def test_a_point_that_fails_to_archive_is_kept_and_the_session_fails(setup, results, tmp_path, monkeypatch):
    repo, ids, archive_url = setup
    bucket, read = results
    import rdsbackup.repository.archive as archive_module

    real = archive_module.archive_restore_point

    def failing(source, archive, rp_id, **kw):
        if rp_id == ids[0]:
            raise archive_module.CorruptObject(f"pack data/xx is corrupt (restore point {rp_id})")
        return real(source, archive, rp_id, **kw)

    monkeypatch.setattr(archive_module, "archive_restore_point", failing)
    result, code = run_maintenance(spec(repo, bucket, archive_url), now=time.time() + 2 * DAY)
    assert code == 1 and result["status"] == "failed" and result["error_type"] == "ArchiveIncomplete"
    assert ids[0] in result["error"]
    assert [a["restore_point_id"] for a in result["archived"]] == ids[1:]
    assert result["forgotten"] == [ids[1]] and result["kept_for_archive"] == [ids[0]]
    assert {p["id"] for p in repo.list_restore_points()} == {ids[0], ids[2]}
    assert read("results/s-1.json")["archive_failures"][0]["restore_point_id"] == ids[0]


def test_archive_retention_keeps_the_gfs_selection(setup, results):
    repo, ids, archive_url = setup
    bucket, _ = results
    run_maintenance(spec(repo, bucket, archive_url), now=time.time() + 2 * DAY)
    text = spec(repo, bucket, archive_url, retention_days=30, gfs={"monthly": 1})
    result, code = run_maintenance(text, now=time.time() + 60 * DAY)
    assert code == 0, result
    # All three were taken the same month: GFS keeps the newest, retention deletes the other two.
    assert sorted(result["archive_retention"]["deleted"]) == sorted(ids[:2])
    assert result["archive_retention"]["kept_by_selection"] == [ids[2]]


def test_a_bad_spec_is_reported_in_the_result(results):
    bucket, read = results
    result, code = run_maintenance(json.dumps({"result_url": f"s3://{bucket}/r.json"}))
    assert code == 1 and "'repository' is required" in result["error"]
    assert read("r.json")["error_type"] == "JobSpecError"


def test_the_console_script_runs_the_job(setup, results):
    repo, ids, _ = setup
    bucket, read = results
    env = dict(os.environ, RDSBACKUP_JOB=spec(repo, bucket))
    done = subprocess.run(["rdsbackup", "maintain"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(read("results/s-1.json")["forgotten"]) == sorted(ids[:2])


def test_prune_waits_for_running_backups_then_is_postponed_with_a_warning(setup, results, monkeypatch):
    repo, ids, _ = setup
    bucket, _ = results
    import rdsbackup.maintenance as maintenance

    monkeypatch.setattr(maintenance, "PRUNE_LOCK_WAIT_SECONDS", 0.2)
    with repo.begin_backup(source_id="someone-else", engine="postgres"):  # a backup in progress
        result, code = run_maintenance(spec(repo, bucket), now=time.time())
    assert code == 0 and result["status"] == "ok"
    assert sorted(result["forgotten"]) == sorted(ids[:2]) and result["prune"] is None
    assert any(w.startswith("prune postponed") for w in result["warnings"]), result["warnings"]


def _backups(repo, count: int, *, resource_id: str | None = None, hours_ago: float = 0, monkeypatch=None) -> list:
    """`count` restore points of orders-db, recorded as taken `hours_ago` (the manifest's time)."""
    import contextlib
    from datetime import UTC, datetime, timedelta

    from rdsbackup.repository import repository as repository_module

    repo.manifest_defaults = {"source_resource_id": resource_id} if resource_id else {}
    ids = []
    with monkeypatch.context() if hours_ago else contextlib.nullcontext() as patch:
        if hours_ago:
            then = (datetime.now(UTC) - timedelta(hours=hours_ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            patch.setattr(repository_module, "_now_iso", lambda: then)
        for n in range(count):
            with repo.begin_backup(source_id="orders-db", engine="postgres") as writer:
                ref = writer.add_stream("t", [random.Random(n).randbytes(2000)], profile="table")
                ids.append(writer.commit({"streams": {"t": ref}}))
    return ids


def _retention_spec(repo, bucket, **retention) -> str:
    return json.dumps({"session_id": "s-r", "policy": "nightly", "repository": repo.url, "retention": retention,
                       "result_url": f"s3://{bucket}/results/s-r.json", "archive": None})


def test_ten_sessions_in_a_row_forget_no_restore_point_younger_than_the_minimum_age(tmp_path, monkeypatch, results):
    """Two restore points from this morning, then a burst of ten backups, each followed by the backup-account
    session with keep_last 2 and a one-day minimum age (what a daily schedule keeps): the burst pushes the
    morning's points out of the last two, but nothing younger than a day is forgotten."""
    monkeypatch.setenv("RDSBACKUP_PASSWORD", "backup key")
    bucket, _read = results
    repo = Repository.init(f"file://{tmp_path}/backup")
    history = _backups(repo, 2, hours_ago=12, monkeypatch=monkeypatch)
    forgotten = []
    for _session in range(10):
        _backups(repo, 1)
        result, code = run_maintenance(_retention_spec(repo, bucket, keep_last=2, min_age_seconds=DAY))
        assert code == 0, result
        forgotten += result["forgotten"]
    assert forgotten == []
    assert set(history) <= {p["id"] for p in repo.list_restore_points()}
    # the minimum age is what kept them: without it the same session forgets them
    result, _code = run_maintenance(_retention_spec(repo, bucket, keep_last=2))
    assert set(history) <= set(result["forgotten"])


def test_a_recreated_source_starts_a_new_chain_and_its_old_chain_is_kept_with_a_warning(tmp_path, monkeypatch,
                                                                                       results):
    """orders-db was deleted and created again under its name (a new resource id): retention keeps the
    last two of the new database's points; the old database's points are neither counted nor forgotten,
    and the session warns (its report goes to SNS on a warning)."""
    monkeypatch.setenv("RDSBACKUP_PASSWORD", "backup key")
    bucket, _read = results
    repo = Repository.init(f"file://{tmp_path}/backup")
    old = _backups(repo, 3, resource_id="db-OLDRESOURCE", hours_ago=72, monkeypatch=monkeypatch)
    new = _backups(repo, 3, resource_id="db-NEWRESOURCE")
    result, code = run_maintenance(_retention_spec(repo, bucket, keep_last=2))
    assert code == 0, result
    assert result["forgotten"] == [new[0]]
    assert set(old) <= {p["id"] for p in repo.list_restore_points()}
    (warning,) = [w for w in result["warnings"] if "recreated" in w]
    assert "orders-db" in warning and "db-OLDRESOURCE" in warning and "3 restore point(s)" in warning
