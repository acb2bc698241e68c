"""Storage backends and URLs: atomic writes, listing, ranges, and clear errors for bad URLs."""

from __future__ import annotations

import os

import pytest
from rdsbackup.errors import MissingObject, RepositoryError, RepositoryLocked
from rdsbackup.repository.backends import FileBackend, S3Backend, backend_for
from rdsbackup.repository.crypto import CHUNK_ID_BLAKE3, Keys
from rdsbackup.repository.locks import Lock


def test_urls_name_a_file_or_s3_backend():
    file_backend = backend_for("file:///tmp/some/repo")
    assert isinstance(file_backend, FileBackend) and file_backend.root == "/tmp/some/repo"
    s3 = backend_for("s3://bucket/backups/prod/")
    assert isinstance(s3, S3Backend) and (s3.bucket, s3.prefix) == ("bucket", "backups/prod")
    assert s3.url == "s3://bucket/backups/prod" and s3.data_storage_class is None
    assert backend_for("s3://bucket?data-storage-class=DEEP_ARCHIVE").data_storage_class == "DEEP_ARCHIVE"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://host/x", "unsupported repository URL"),
        ("s3:///prefix", "no bucket"),
        ("s3://bucket/p?colour=blue", "unknown option"),
        ("/just/a/path", "unsupported repository URL"),
    ],
)
def test_bad_urls_fail_clearly(url, message):
    with pytest.raises(RepositoryError, match=message):
        backend_for(url)


def test_file_backend_round_trip_range_list_delete(tmp_path):
    backend = FileBackend(str(tmp_path))
    backend.put("data/ab/abcd", b"0123456789")
    backend.put("index/one", bytearray(b"x"))
    assert backend.get("data/ab/abcd") == b"0123456789"
    assert backend.get_range("data/ab/abcd", 3, 4) == b"3456"
    assert sorted(backend.list("data/")) == [("data/ab/abcd", 10)]
    assert backend.exists("index/one") and not backend.exists("index/two")
    backend.delete("index/one")
    backend.delete("index/one")  # deleting what is gone is not an error
    with pytest.raises(MissingObject, match="index/one"):
        backend.get("index/one")
    assert list(backend.list("nothing/")) == []


def test_a_durable_file_object_leaves_the_page_cache_once_synced(tmp_path, monkeypatch):
    """After its fsync, a written object's pages are dropped from the page cache (a backup's packs
    would otherwise push everything else out); without fsync (dirty pages) they are left alone."""
    calls = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(("fsync", fd)), real_fsync(fd))[1])
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, *advice: calls.append(("advise", fd, *advice)))
    backend = FileBackend(str(tmp_path))
    backend.put("data/ab/abcd", b"0123456789" * 1000)
    # the object's fsync, then its advice; then the directory's fsync (the new name's durability)
    synced = calls[0][1]
    assert calls[:2] == [("fsync", synced), ("advise", synced, 0, 0, os.POSIX_FADV_DONTNEED)]
    assert [c[0] for c in calls[2:]] == ["fsync"]
    assert backend.get("data/ab/abcd") == b"0123456789" * 1000
    calls.clear()
    FileBackend(str(tmp_path), fsync=False).put("data/ab/abce", b"x")
    assert calls == []


def test_a_failed_file_write_leaves_neither_the_object_nor_a_temporary_file(tmp_path):
    backend = FileBackend(str(tmp_path))
    (tmp_path / "manifests" / "abc").mkdir(parents=True)  # the rename onto it fails
    with pytest.raises(RepositoryError, match="cannot write manifests/abc"):
        backend.put("manifests/abc", b"data")
    assert [p.name for p in (tmp_path / "manifests").iterdir()] == ["abc"]
    assert list(backend.list("manifests/")) == []


def test_backup_locks_are_shared_and_exclusive_locks_are_not(tmp_path):
    backend = FileBackend(str(tmp_path))
    keys = Keys(bytes(32), chunk_id_scheme=CHUNK_ID_BLAKE3)
    first = Lock(backend, keys, "backup", owner="backup one").acquire()
    second = Lock(backend, keys, "backup", owner="backup two").acquire()
    with pytest.raises(RepositoryLocked, match=r"backup (one|two)"):
        Lock(backend, keys, "exclusive", owner="prune").acquire()
    first.release()
    second.release()
    prune = Lock(backend, keys, "exclusive", owner="prune").acquire()
    with pytest.raises(RepositoryLocked, match="locked by prune"):
        Lock(backend, keys, "backup", owner="backup three").acquire(wait=0.2, poll=0.05)
    with pytest.raises(RepositoryLocked, match="locked by prune"):
        Lock(backend, keys, "exclusive", owner="second prune").acquire()
    prune.release()
    assert list(backend.list("locks/")) == []
