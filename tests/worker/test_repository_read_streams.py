"""Reading many small streams at once (a restore's batch of small tables): each stream comes back whole
and verified, and their blocks are read together, not twice per stream."""

from __future__ import annotations

import pytest
from rdsbackup.errors import CorruptObject
from rdsbackup.repository import Repository

from tests.worker.test_repository_roundtrip import PASSWORD, backup, read, table_rows


@pytest.fixture
def url(tmp_path) -> str:
    return f"file://{tmp_path}/repo"


def small_tables(n: int) -> dict[str, bytes]:
    return {f"t{i}": table_rows(i, 1 + i % 40) for i in range(n)}


def counting_reads(repo: Repository) -> list[str]:
    """The keys of every ranged read the repository's backend is asked for from now on."""
    reads: list[str] = []
    real = repo.backend.get_range

    def get_range(key, offset, length):
        reads.append(key)
        return real(key, offset, length)

    repo.backend.get_range = get_range
    return reads


def test_each_stream_comes_back_whole_in_order(url):
    repo = Repository.init(url, password=PASSWORD)
    streams = {**small_tables(50), "empty": b"", "tiny": b"x\n", "large": table_rows(99, 60_000)}
    rp_id, refs = backup(repo, streams)
    reopened = Repository.open(url, password=PASSWORD)
    names = list(streams)[::-1]  # not the order they were written in
    got = list(reopened.read_streams([refs[n] for n in names], restore_point=rp_id))
    assert [bytes(g) for g in got] == [streams[n] for n in names]


def test_blocks_of_many_small_streams_are_read_together(url):
    repo = Repository.init(url, password=PASSWORD)
    streams = small_tables(200)
    _, refs = backup(repo, streams)

    one_by_one = Repository.open(url, password=PASSWORD)
    reads = counting_reads(one_by_one)
    assert [read(one_by_one, refs[n]) for n in streams] == list(streams.values())
    assert len(reads) >= 2 * len(streams)  # the root's block, then the data's, for every stream

    together = Repository.open(url, password=PASSWORD)
    reads = counting_reads(together)
    assert [bytes(d) for d in together.read_streams([refs[n] for n in streams])] == list(streams.values())
    assert len(reads) <= 4, reads  # the streams were written one after another: adjacent blocks


def test_streams_stored_by_an_earlier_backup_are_found_where_they_are(url):
    """An incremental backup dedups unchanged tables against the older blocks: read from there."""
    repo = Repository.init(url, password=PASSWORD)
    first = small_tables(30)
    backup(repo, first)
    second = {**first, "t3": b"changed\n", "new": b"new table\n"}
    rp_id, refs = backup(repo, second)
    reopened = Repository.open(url, password=PASSWORD)
    got = reopened.read_streams([refs[n] for n in second], restore_point=rp_id)
    assert [bytes(g) for g in got] == list(second.values())


def test_a_corrupt_block_is_named_and_no_bytes_of_it_are_returned(url, tmp_path):
    repo = Repository.init(url, password=PASSWORD)
    rp_id, refs = backup(repo, small_tables(20))
    [(pack_key, _)] = list(repo.backend.list("data/"))
    pack_path = tmp_path / "repo" / pack_key
    raw = bytearray(pack_path.read_bytes())
    raw[len(raw) // 3] ^= 0x01
    pack_path.write_bytes(bytes(raw))
    reopened = Repository.open(url, password=PASSWORD)
    with pytest.raises(CorruptObject) as excinfo:
        list(reopened.read_streams(list(refs.values()), restore_point=rp_id))
    assert pack_key in str(excinfo.value) and rp_id in str(excinfo.value)
