"""Interrupted backups leave no restore point and nothing a later backup or prune trips over."""

from __future__ import annotations

import random

import pytest
from rdsbackup.errors import BackupAborted, RepositoryError
from rdsbackup.repository import Repository
from rdsbackup.repository.index import pack_id_from_key


def data_of(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def committed(repo: Repository, data: bytes, source_id: str = "s") -> tuple[str, dict]:
    with repo.begin_backup(source_id=source_id, engine="postgres") as writer:
        ref = writer.add_stream("t", [data], profile="table")
        return writer.commit({"streams": {"t": ref}}), ref


def packs_on_disk(repo: Repository) -> set[bytes]:
    return {pack_id_from_key(key) for key, _ in repo.backend.list("data/")}


def assert_clean_after_prune(repo: Repository) -> dict:
    result = repo.prune()
    index = repo._index(reload=True)
    # Every pack left is indexed, every indexed pack is there, and everything verifies.
    assert packs_on_disk(repo) == set(index.packs)
    assert repo.verify(read_data=True)["errors"] == []
    assert list(repo.backend.list("locks/")) == []
    return result


@pytest.fixture
def repo(tmp_path):
    return Repository.init(f"file://{tmp_path}/repo", password="pw")


def test_exception_mid_stream_leaves_no_restore_point(repo):
    first_id, first_ref = committed(repo, data_of(1, 2_000_000))
    packs_before = packs_on_disk(repo)

    def failing_source():
        yield data_of(2, 20_000_000)  # enough for packs to be uploaded before the failure
        raise ConnectionError("database connection lost")

    with pytest.raises(ConnectionError), repo.begin_backup(source_id="s", engine="postgres") as writer:
        writer.add_stream("t", failing_source(), profile="table")
    assert packs_on_disk(repo) > packs_before  # the interrupted backup did upload packs
    assert [rp["id"] for rp in repo.list_restore_points()] == [first_id]
    assert list(repo.backend.list("locks/")) == []

    result = assert_clean_after_prune(repo)
    assert result["packs_deleted"] >= 1
    assert packs_on_disk(repo) == packs_before
    assert b"".join(repo.open_stream(first_ref)) == data_of(1, 2_000_000)
    # A later backup of data overlapping the lost one works and dedups only against indexed data.
    _second_id, second_ref = committed(repo, data_of(2, 3_000_000))
    assert b"".join(Repository.open(repo.url, password="pw").open_stream(second_ref)) == data_of(2, 3_000_000)


def test_failed_upload_aborts_the_backup_and_the_previous_restore_points_still_restore(repo, monkeypatch):
    first_id, first_ref = committed(repo, data_of(3, 2_000_000))
    real_put = type(repo.backend).put
    calls = {"n": 0}

    def flaky_put(self, key, data):
        if key.startswith("data/"):
            calls["n"] += 1
            if calls["n"] == 2:
                raise RepositoryError(f"cannot write {key}: No space left on device")
        return real_put(self, key, data)

    monkeypatch.setattr(type(repo.backend), "put", flaky_put)
    with pytest.raises(BackupAborted, match="No space left"), repo.begin_backup(source_id="s", engine="postgres") as w:
        w.add_stream("t", (data_of(seed, 4_000_000) for seed in range(10, 20)), profile="table")
        w.commit({})
    monkeypatch.setattr(type(repo.backend), "put", real_put)

    assert [rp["id"] for rp in repo.list_restore_points()] == [first_id]
    assert list(repo.backend.list("index/"))  # only the first backup's index
    assert b"".join(repo.open_stream(first_ref)) == data_of(3, 2_000_000)
    assert_clean_after_prune(repo)
    assert b"".join(repo.open_stream(first_ref)) == data_of(3, 2_000_000)


def test_failure_while_writing_the_manifest_leaves_no_restore_point(repo, monkeypatch):
    committed(repo, data_of(4, 1_000_000))
    real_put = type(repo.backend).put

    def no_manifest(self, key, data):
        if key.startswith("manifests/"):
            raise RepositoryError("connection reset")
        return real_put(self, key, data)

    monkeypatch.setattr(type(repo.backend), "put", no_manifest)
    with pytest.raises(RepositoryError, match="connection reset"):
        committed(repo, data_of(5, 1_000_000))
    monkeypatch.setattr(type(repo.backend), "put", real_put)
    assert len(repo.list_restore_points()) == 1
    # Its index was written: prune drops those entries and packs since no manifest references them.
    result = assert_clean_after_prune(repo)
    assert result["chunks_removed"] > 0 and result["packs_deleted"] >= 1


def test_a_stream_that_fails_can_be_skipped_and_the_rest_committed(repo):
    shared = data_of(6, 1_000_000)

    def failing():
        yield shared
        raise ValueError("table vanished")

    with repo.begin_backup(source_id="s", engine="postgres") as writer:
        with pytest.raises(ValueError):
            writer.add_stream("gone", failing(), profile="table")
        # This stream dedups against chunks the failed one stored: they must be in the index.
        ref = writer.add_stream("kept", [shared], profile="table")
        rp_id = writer.commit({"streams": {"kept": ref}})
    reopened = Repository.open(repo.url, password="pw")
    assert b"".join(reopened.open_stream(ref)) == shared
    assert reopened.verify(rp_id, read_data=True)["errors"] == []


def test_a_backup_whose_index_cannot_be_written_writes_no_manifest(repo, monkeypatch):
    first_id, _ = committed(repo, data_of(7, 500_000))
    real_put = type(repo.backend).put
    written = []

    def no_index(self, key, data):
        written.append(key.split("/")[0])
        if key.startswith("index/"):
            raise RepositoryError("throttled")
        return real_put(self, key, data)

    monkeypatch.setattr(type(repo.backend), "put", no_index)
    with pytest.raises(RepositoryError, match="throttled"):
        committed(repo, data_of(8, 500_000))
    monkeypatch.setattr(type(repo.backend), "put", real_put)
    assert "manifests" not in written  # the manifest comes only after the index
    assert [rp["id"] for rp in repo.list_restore_points()] == [first_id]
    assert_clean_after_prune(repo)
