"""Every reader of a repository holds a shared lock, so a prune (or archive retention) started while it
reads waits for it or fails naming it, and never repacks or deletes what it is reading: the archive copy
(`rdsbackup archive` and the maintenance session's archive step) and the verify of an archive. Each
reader is held at a point (inside its read) while the other side tries. (Restore and verify of a backup
repository: test_repository_lock_bounds.py; the restore-test job: test_restore_test_job.py.)"""

from __future__ import annotations

import io
import json
import random
import threading
import time

import boto3
import pytest
from rdsbackup.errors import RepositoryLocked
from rdsbackup.maintenance import run_maintenance
from rdsbackup.repository import Repository
from rdsbackup.repository import archive as archive_module
from rdsbackup.repository.archive import (
    ArchiveRepository,
    archive_restore_point,
    forget_archived,
    verify_archive,
)

from tests.support.moto_server import moto_endpoint, moto_server_url  # noqa: F401  (fixtures)

DAY = 86400


class Gate:
    """Holds the thread that reaches `wait()` until the test calls `open()`."""

    def __init__(self):
        self.entered, self.released = threading.Event(), threading.Event()

    def wait(self):
        self.entered.set()
        assert self.released.wait(60), "the test never released the held reader"

    def open(self):
        self.released.set()


def in_thread(fn) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as exc:  # reported by the test
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def hold_the_copy(monkeypatch) -> Gate:
    """Stop an archive copy after it walked the point (index and chunk lists read), before its blocks."""
    gate = Gate()
    real = archive_module._Copy.copy_blocks

    def held(self, by_block):
        gate.wait()
        return real(self, by_block)

    monkeypatch.setattr(archive_module._Copy, "copy_blocks", held)
    return gate


def backup(repo: Repository, data: bytes) -> str:
    with repo.begin_backup(source_id="orders-db", engine="postgres") as writer:
        ref = writer.add_stream("t", [data], profile="table")
        return writer.commit({"streams": {"t": ref}})


def read_table(repo: Repository, rp_id: str) -> bytes:
    out = io.BytesIO()
    repo.read_stream_to(repo.load_manifest(rp_id)["streams"]["t"], out, restore_point=rp_id)
    return out.getvalue()


@pytest.fixture
def source(tmp_path):
    return Repository.init(f"file://{tmp_path}/backup", password="backup key")


@pytest.fixture
def archive(tmp_path, source):
    return ArchiveRepository.init_archive(f"file://{tmp_path}/archive", password="archive key",
                                          ids_of=source._keys)


def test_a_prune_cannot_run_under_an_archive_copy(source, archive, monkeypatch):
    data = random.Random(5).randbytes(1_500_000)
    rp_id = backup(source, data)
    gate = hold_the_copy(monkeypatch)
    thread, out = in_thread(lambda: archive_restore_point(source, archive, rp_id))
    try:
        assert gate.entered.wait(60)
        other = Repository.open(source.url, password="backup key")
        # Forgetting the point being copied and pruning its packs away must wait for the copy.
        with pytest.raises(RepositoryLocked, match=f"archive of {rp_id}"), other.exclusive_lock("forget"):
            other.forget_restore_points([rp_id])
        with pytest.raises(RepositoryLocked, match=f"archive of {rp_id}"):
            other.prune()
    finally:
        gate.open()
        thread.join(60)
    assert "error" not in out, out.get("error")
    assert out["value"]["archived"] is True
    assert read_table(archive.for_point(rp_id), rp_id) == data
    assert [p["id"] for p in source.list_restore_points()] == [rp_id]
    assert list(source.backend.list("locks/")) == []  # the copy's shared lock went with it
    Repository.open(source.url, password="backup key").prune()


def test_the_maintenance_sessions_archive_step_holds_the_backup_repository(tmp_path, moto_endpoint,  # noqa: F811
                                                                          monkeypatch):
    monkeypatch.setenv("RDSBACKUP_PASSWORD", "backup key")
    monkeypatch.setenv("RDSBACKUP_ARCHIVE_PASSWORD", "archive key")
    repo = Repository.init(f"file://{tmp_path}/backup")
    rp_id = backup(repo, random.Random(6).randbytes(800_000))
    bucket = f"results-{random.randrange(1 << 30)}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    spec = json.dumps({"session_id": "s-1", "policy": "nightly", "repository": repo.url,
                       "retention": {"keep_last": 1}, "result_url": f"s3://{bucket}/results/s-1.json",
                       "archive": {"repository": f"file://{tmp_path}/archive", "after_days": 1}})
    gate = hold_the_copy(monkeypatch)
    thread, out = in_thread(lambda: run_maintenance(spec, now=time.time() + 2 * DAY))
    try:
        assert gate.entered.wait(60)
        with pytest.raises(RepositoryLocked, match=f"archive of {rp_id}"):
            Repository.open(repo.url).prune()
    finally:
        gate.open()
        thread.join(60)
    result, code = out["value"]
    assert code == 0, result
    assert [a["restore_point_id"] for a in result["archived"]] == [rp_id]


def test_archive_retention_cannot_delete_a_point_an_archive_verify_is_reading(source, archive):
    data = random.Random(8).randbytes(1_000_000)
    rp_id = backup(source, data)
    archive_restore_point(source, archive, rp_id)
    gate = Gate()
    real_get = archive.backend.get

    def held_get(key):
        if key.startswith("data/"):
            gate.wait()
        return real_get(key)

    archive.backend.get = held_get  # the verifier's backend (its per-point views share it)
    thread, out = in_thread(lambda: verify_archive(archive, read_data=True))
    try:
        assert gate.entered.wait(60)
        other = ArchiveRepository.open_archive(archive.url, password="archive key")
        with pytest.raises(RepositoryLocked, match="verify of the archive"):
            forget_archived(other, retention_days=0, now=time.time() + 30 * DAY, lock_wait=0)
    finally:
        gate.open()
        thread.join(60)
    assert "error" not in out, out.get("error")
    assert out["value"]["errors"] == [] and out["value"]["restore_points"] == 1
    other = ArchiveRepository.open_archive(archive.url, password="archive key")
    assert forget_archived(other, retention_days=0, now=time.time() + 30 * DAY, lock_wait=0)["deleted"] == [rp_id]
