"""forget (keep_last / keep_days per source), prune (delete and repack), copy to another repository."""

from __future__ import annotations

import random

import pytest
from rdsbackup.errors import RepositoryError
from rdsbackup.repository import Repository
from rdsbackup.repository.index import pack_id_from_key


def data_of(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def backup(repo: Repository, source_id: str, data: bytes) -> tuple[str, dict]:
    with repo.begin_backup(source_id=source_id, engine="postgres") as writer:
        ref = writer.add_stream("t", [data], profile="table")
        return writer.commit({"streams": {"t": ref}, "databases": ["shop"]}), ref


@pytest.fixture
def repo(tmp_path):
    return Repository.init(f"file://{tmp_path}/repo", password="pw")


def test_forget_keep_last_keeps_the_newest_per_source(repo):
    a = [backup(repo, "a", data_of(i, 100_000))[0] for i in range(4)]
    b = [backup(repo, "b", data_of(10 + i, 100_000))[0] for i in range(2)]
    removed = repo.forget(keep_last=2)
    assert set(removed) == {a[0], a[1]}
    assert [rp["id"] for rp in repo.list_restore_points(source_id="a")] == a[2:]
    assert [rp["id"] for rp in repo.list_restore_points(source_id="b")] == b


def test_forget_keep_days_keeps_recent_restore_points(repo, monkeypatch):
    old_id, _ = backup(repo, "a", data_of(1, 100_000))
    new_id, _ = backup(repo, "a", data_of(2, 100_000))
    import rdsbackup.repository.repository as core

    real_parse = core._parse_time
    monkeypatch.setattr(core, "_parse_time", lambda t: real_parse(t) - (10 * 86400 if t == times[old_id] else 0))
    times = {rp["id"]: rp["time"] for rp in repo.list_restore_points()}
    assert repo.forget(keep_days=7) == [old_id]
    assert [rp["id"] for rp in repo.list_restore_points()] == [new_id]
    # keep_last and keep_days together keep the union
    assert repo.forget(keep_last=1, keep_days=0) == []


def test_forget_then_prune_frees_the_data_of_forgotten_restore_points_only(repo):
    shared = data_of(1, 2_000_000)
    _, _first = backup(repo, "a", shared + data_of(2, 9_000_000))
    stored_before = sum(size for _, size in repo.backend.list("data/"))
    _, second = backup(repo, "a", shared + data_of(3, 1_000_000))
    repo.forget(keep_last=1)
    result = repo.prune()
    assert result["bytes_freed"] > 0 and result["packs_repacked"] + result["packs_deleted"] >= 1
    stored_after = sum(size for _, size in repo.backend.list("data/"))
    assert stored_after < stored_before * 0.5
    reopened = Repository.open(repo.url, password="pw")
    assert b"".join(reopened.open_stream(second)) == shared + data_of(3, 1_000_000)
    assert reopened.verify(read_data=True)["errors"] == []
    assert {pack_id_from_key(k) for k, _ in repo.backend.list("data/")} == set(reopened._index().packs)
    # A second prune has nothing left to do.
    again = repo.prune()
    assert again["packs_deleted"] == 0 and again["packs_repacked"] == 0


def test_forget_needs_a_policy(repo):
    with pytest.raises(ValueError):
        repo.forget()


def test_copy_restore_point_makes_a_self_contained_full_in_another_repository(repo, tmp_path):
    data = data_of(5, 1_500_000)
    rp_id, _ = backup(repo, "a", data)
    archive = Repository.init(f"file://{tmp_path}/archive", password="other")
    new_id = repo.copy_restore_point(rp_id, archive)
    copy = archive.load_manifest(new_id)
    assert copy["source_id"] == "a" and copy["databases"] == ["shop"] and copy["copied_from"]["restore_point"] == rp_id
    assert b"".join(archive.open_stream(copy["streams"]["t"])) == data
    assert archive.verify(read_data=True)["errors"] == []


def test_archive_repository_puts_packs_in_a_cold_storage_class_and_the_rest_in_standard(repo):
    import boto3

    from tests.support.moto_server import running_moto_server

    with running_moto_server() as endpoint, pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ENDPOINT_URL", endpoint)
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="archive")
        archive = Repository.init("s3://archive/a?data-storage-class=DEEP_ARCHIVE", password="pw")
        rp_id, _ = backup(repo, "a", data_of(6, 600_000))
        new_id = repo.copy_restore_point(rp_id, archive)
        classes = {
            o["Key"].split("/")[1]: o.get("StorageClass", "STANDARD")
            for o in s3.list_objects_v2(Bucket="archive")["Contents"]
        }
        assert classes["data"] == "DEEP_ARCHIVE"
        assert classes["manifests"] == classes["index"] == classes["config"] == "STANDARD"
        # Listing and manifests work without a Glacier restore; reading a pack does not.
        assert [rp["id"] for rp in archive.list_restore_points()] == [new_id]
        with pytest.raises(RepositoryError, match="archived"):
            b"".join(archive.open_stream(archive.load_manifest(new_id)["streams"]["t"]))
