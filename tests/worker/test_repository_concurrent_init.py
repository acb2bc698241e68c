"""Two workers may create one repository at the same moment (a policy's first run): exactly one wins,
the others see RepositoryExists and open the winner's repository with its key."""

from __future__ import annotations

import threading

import boto3
import pytest
from moto import mock_aws
from rdsbackup.errors import RepositoryExists
from rdsbackup.repository import Repository


def _race(url: str, kms_key_id: str | None = None, racers: int = 8) -> list:
    barrier = threading.Barrier(racers)
    outcomes: list = [None] * racers

    def init(index: int) -> None:
        barrier.wait()
        try:
            outcomes[index] = Repository.init(url, kms_key_id=kms_key_id, password=None if kms_key_id else "pw")
        except RepositoryExists as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=init, args=(i,)) for i in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def _round_trip(repo: Repository) -> None:
    with repo.begin_backup(source_id="db", engine="postgres") as writer:
        ref = writer.add_stream("s", [b"hello " * 1000], profile="bulk")
        rp = writer.commit({"source_id": "db", "engine": "postgres", "streams": {"s": ref}})
    assert b"".join(repo.open_stream(repo.load_manifest(rp)["streams"]["s"])) == b"hello " * 1000


def test_concurrent_init_of_a_file_repository_has_one_winner(tmp_path):
    url = f"file://{tmp_path}/repo"
    outcomes = _race(url)
    winners = [o for o in outcomes if isinstance(o, Repository)]
    assert len(winners) == 1
    assert all(isinstance(o, RepositoryExists) for o in outcomes if o is not winners[0])
    assert len(list((tmp_path / "repo" / "keys").iterdir())) == 1
    _round_trip(Repository.open(url, password="pw"))


@pytest.mark.parametrize("racers", [6])
def test_concurrent_init_of_an_s3_repository_has_one_winner(racers):
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="repo")
        key = boto3.client("kms", region_name="us-east-1").create_key()["KeyMetadata"]["KeyId"]
        outcomes = _race("s3://repo/prefix", kms_key_id=key, racers=racers)
        winners = [o for o in outcomes if isinstance(o, Repository)]
        assert len(winners) == 1
        keys = boto3.client("s3", region_name="us-east-1").list_objects_v2(Bucket="repo", Prefix="prefix/keys/")
        assert keys["KeyCount"] == 1
        _round_trip(Repository.open("s3://repo/prefix"))
