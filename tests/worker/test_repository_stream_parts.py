"""Reading one stream of records as several parts that load side by side (a large table restored by
several COPY sessions): together the parts are the stream, each record in exactly one part."""

from __future__ import annotations

import random

import pytest
from rdsbackup.repository import Repository
from rdsbackup.repository.streams import PART_ENTRIES, StreamReader

from tests.worker.test_repository_roundtrip import PASSWORD, backup, table_rows


def parts_of(repo: Repository, ref: dict, n: int) -> list[bytes]:
    return [b"".join(repo.open_stream(ref, part=(p, n))) for p in range(n)]


def records_with_some_huge(seed: int) -> bytes:
    """Rows of a few dozen bytes, and now and then one of ~100 KiB (a bytea value): several of the
    root's entries may lie inside one record."""
    rng = random.Random(seed)
    rows = []
    for i in range(40_000):
        size = rng.choice([30, 60, 90]) if rng.random() > 0.002 else rng.randrange(50_000, 150_000)
        rows.append(b"%d\t" % i + rng.randbytes(size // 2).hex().encode()[:size] + b"\n")
    return b"".join(rows)


@pytest.fixture
def repo(tmp_path) -> Repository:
    return Repository.init(f"file://{tmp_path}/repo", password=PASSWORD)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 16])
def test_parts_put_together_are_the_stream_and_split_only_after_a_record(repo, n):
    data = table_rows(11, 60_000)  # ~3 MiB: a root at level >= 1 with dozens of entries
    _, refs = backup(repo, {"t": data})
    parts = parts_of(repo, refs["t"], n)
    assert b"".join(parts) == data
    assert all(p == b"" or p.endswith(b"\n") for p in parts)
    if n > 1:  # work is really divided: no part holds nearly everything
        assert max(len(p) for p in parts) < len(data) * 0.9


@pytest.mark.parametrize("n", [2, 5, 40])
def test_records_larger_than_a_part_stay_whole(repo, n):
    data = records_with_some_huge(12)
    _, refs = backup(repo, {"t": data})
    parts = parts_of(repo, refs["t"], n)
    assert b"".join(parts) == data
    for p in parts:
        assert p == b"" or p.endswith(b"\n")


def test_more_parts_than_root_entries_leaves_the_last_parts_empty(repo):
    data = b"".join(b"row %d\n" % i for i in range(300))  # a few chunks: a level-0 root
    _, refs = backup(repo, {"t": data})
    level, entries = StreamReader(repo).root(bytes.fromhex(refs["t"]["blob"]))
    assert level == 0 and len(entries) < 8
    parts = parts_of(repo, refs["t"], 8)
    assert b"".join(parts) == data
    assert parts[0] == data and parts[1:] == [b""] * 7


def test_a_stream_without_any_separator_is_read_whole_by_the_first_part(repo):
    data = random.Random(13).randbytes(2_000_000).replace(b"\n", b" ")
    _, refs = backup(repo, {"t": data})
    parts = parts_of(repo, refs["t"], 3)
    assert parts[0] == data and parts[1:] == [b"", b""]


def test_a_part_needs_a_valid_number_and_a_one_byte_separator(repo):
    _, refs = backup(repo, {"t": b"a\nb\n"})
    with pytest.raises(ValueError):
        list(repo.open_stream(refs["t"], part=(2, 2)))
    with pytest.raises(ValueError):
        list(repo.open_stream(refs["t"], part=(0, 2), separator=b"\r\n"))


def test_parts_are_of_similar_size(repo):
    """Parts are cut among many entries of a lower level of the chunk lists, not among the root's few
    (whose sizes vary several-fold), so side-by-side loads end together."""
    data = table_rows(14, 200_000)  # ~10 MiB, ~5,000 chunks
    _, refs = backup(repo, {"t": data})
    level, entries = StreamReader(repo).root(bytes.fromhex(refs["t"]["blob"]))
    assert level >= 2 and len(entries) < 4 * PART_ENTRIES  # so the parts divide a lower level
    sizes = [len(p) for p in parts_of(repo, refs["t"], 4)]
    assert sum(sizes) == len(data)
    assert max(sizes) < 1.3 * min(sizes), sizes
