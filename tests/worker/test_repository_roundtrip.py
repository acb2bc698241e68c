"""Repository round trips: what goes in comes out, on file:// and on S3 (moto's server), deduplicated."""

from __future__ import annotations

import io
import random
import threading

import boto3
import pytest
from rdsbackup.errors import RepositoryExists, RepositoryNotFound
from rdsbackup.repository import Repository
from rdsbackup.repository import backends as backends_module
from rdsbackup.repository.index import Index
from rdsbackup.repository.packs import read_trailer

from tests.support import moto_server

# moto's server fixtures, used by name in the S3 tests
moto_server_url = moto_server.moto_server_url
moto_endpoint = moto_server.moto_endpoint

PASSWORD = "correct horse battery staple"


def table_rows(seed: int, rows: int) -> bytes:
    """COPY-like text rows: compressible, but every row differs."""
    rng = random.Random(seed)
    return b"".join(
        b"%d\t%d\tpaid\t%d.%02d\t%s\n"
        % (i, rng.randrange(10**6), rng.randrange(1000), i % 100, rng.randbytes(16).hex().encode())
        for i in range(rows)
    )


def mixed(seed: int, size: int) -> bytes:
    rng = random.Random(seed)
    text = table_rows(seed, size // 90)
    return (text + rng.randbytes(size // 3))[:size]


def pieces(data: bytes, size: int = 1000):
    """The data as an iterable of small bytes objects, as a COPY reader produces it."""
    return (data[i : i + size] for i in range(0, len(data), size))


@pytest.fixture
def file_url(tmp_path) -> str:
    return f"file://{tmp_path}/repo"


def backup(repo: Repository, streams: dict[str, bytes], *, profile="table", source_id="src") -> tuple[str, dict]:
    with repo.begin_backup(source_id=source_id, engine="postgres") as writer:
        refs = {name: writer.add_stream(name, pieces(data), profile=profile) for name, data in streams.items()}
        rp_id = writer.commit({"source_id": source_id, "engine": "postgres", "streams": refs})
    return rp_id, refs


def read(repo: Repository, ref: dict) -> bytes:
    return b"".join(repo.open_stream(ref))


@pytest.mark.parametrize("profile", ["table", "bulk"])
def test_file_repository_round_trip_restores_every_stream_exactly(file_url, profile):
    repo = Repository.init(file_url, password=PASSWORD)
    streams = {"a": mixed(1, 3_000_000), "b": table_rows(2, 20_000), "empty": b"", "tiny": b"x"}
    rp_id, refs = backup(repo, streams, profile=profile)

    reopened = Repository.open(file_url, password=PASSWORD)
    for name, data in streams.items():
        assert read(reopened, refs[name]) == data, name
        assert refs[name]["size"] == len(data)
        buf = io.BytesIO()
        assert reopened.read_stream_to(refs[name], buf) == len(data)
        assert buf.getvalue() == data
    manifest = reopened.load_manifest(rp_id)
    assert manifest["id"] == rp_id and manifest["streams"] == refs and manifest["time"]
    [listed] = reopened.list_restore_points()
    assert listed["id"] == rp_id and listed["source_id"] == "src" and listed["engine"] == "postgres"
    assert listed["size"] == sum(map(len, streams.values()))
    report = reopened.verify(read_data=True)
    assert report["errors"] == [] and report["restore_points"] == 1 and report["bytes_read"] > 0


def test_file_like_source_is_read_in_blocks(file_url):
    repo = Repository.init(file_url, password=PASSWORD)
    data = mixed(3, 2_500_000)
    with repo.begin_backup(source_id="s", engine="sqlserver") as writer:
        ref = writer.add_stream("db.bak", io.BytesIO(data), profile="bulk")
        writer.commit({"streams": {"bak": ref}})
    assert read(repo, ref) == data


def test_init_refuses_an_existing_repository_and_open_needs_one(file_url, tmp_path):
    Repository.init(file_url, password=PASSWORD)
    with pytest.raises(RepositoryExists, match="already exists"):
        Repository.init(file_url, password=PASSWORD)
    with pytest.raises(RepositoryNotFound, match="no repository"):
        Repository.open(f"file://{tmp_path}/elsewhere", password=PASSWORD)


def test_second_backup_of_the_same_data_stores_almost_nothing(file_url):
    repo = Repository.init(file_url, password=PASSWORD)
    streams = {"orders": table_rows(4, 60_000), "blob": mixed(5, 2_000_000)}
    backup(repo, streams)
    first = repo.stats["bytes_written"]
    _, refs = backup(repo, streams)
    second = repo.stats["bytes_written"] - first
    assert all(ref["new_bytes"] == 0 for ref in refs.values())
    assert second < 2000, second  # the manifest only
    assert read(repo, refs["orders"]) == streams["orders"]


def test_scattered_small_edits_store_a_small_fraction(file_url):
    repo = Repository.init(file_url, password=PASSWORD)
    rows = table_rows(6, 100_000).split(b"\n")
    backup(repo, {"orders": b"\n".join(rows)})
    first = repo.stats["bytes_written"]
    for i in range(0, len(rows), 5000):  # 20 scattered updated rows
        rows[i] = rows[i] + b"-updated"
    _, refs = backup(repo, {"orders": b"\n".join(rows)})
    second = repo.stats["bytes_written"] - first
    assert read(repo, refs["orders"]) == b"\n".join(rows)
    # 20 changed ~2 KiB chunks plus the chunk list's changed parts and index: a few percent at most.
    assert second < first * 0.08, (second, first)
    assert refs["orders"]["new_bytes"] < first * 0.08


def test_new_chunks_between_known_ones_are_stored_at_their_own_places(file_url):
    """A stream whose new chunks lie between known ones (and one new piece twice): each new run of
    chunks is copied into the block on its own, and every chunk's index location, pack trailer entry
    and stored bytes agree (`verify --read-data` hashes every chunk at its location)."""
    repo = Repository.init(file_url, password=PASSWORD)
    old = table_rows(8, 20_000)
    backup(repo, {"t": old})
    new = [table_rows(100 + k, 300) for k in range(6)]
    mixed_stream = (old[:150_000] + new[0] + old[150_000:260_000] + new[1] + new[2] + old[260_000:300_000]
                    + new[3] + new[1] + old[300_000:] + new[4] + new[5])
    _, refs = backup(repo, {"t": mixed_stream})
    assert 0 < refs["t"]["new_bytes"] < len(mixed_stream) // 2
    repo = Repository.open(file_url, password=PASSWORD)
    assert read(repo, refs["t"]) == mixed_stream
    assert repo.verify(read_data=True)["errors"] == []
    index = repo._index(reload=True)
    in_trailers = {}
    for key, size in repo.backend.list("data/"):
        pid = bytes.fromhex(key.rsplit("/", 1)[-1])
        for offset, _stored, _raw, chunks in read_trailer(repo.backend, repo._keys, pid, size):
            in_trailers.update({cid: (pid, offset, off, length) for cid, off, length in chunks})
    located = {}
    for cid, loc in index.chunks.items():
        block_no, off, length = Index.unpack_location(loc)
        pack_no, offset, _stored, _raw = index.blocks[block_no]
        located[cid] = (index.packs[pack_no], offset, off, length)
    assert located == in_trailers


def test_packs_are_several_mib_and_one_put_each(file_url):
    repo = Repository.init(file_url, password=PASSWORD)
    data = random.Random(7).randbytes(40 * 1024 * 1024)  # incompressible
    with repo.begin_backup(source_id="s", engine="postgres") as writer:
        writer.add_stream("x", io.BytesIO(data), profile="bulk")
        writer.commit({})
    packs = list(repo.backend.list("data/"))
    assert 4 <= len(packs) <= 6
    assert all(size >= 7 * 1024 * 1024 for _, size in packs[:-1] if size != min(s for _, s in packs))
    # packs + one index + one manifest
    assert repo.stats["puts"] == len(packs) + 2


def test_add_stream_is_safe_from_many_threads(file_url):
    repo = Repository.init(file_url, password=PASSWORD)
    shared = table_rows(8, 30_000)
    datas = {f"t{i}": shared[: 200_000 * (i + 1)] + table_rows(100 + i, 5_000) for i in range(8)}
    refs: dict[str, dict] = {}
    errors = []
    with repo.begin_backup(source_id="s", engine="postgres") as writer:

        def run(name):
            try:
                refs[name] = writer.add_stream(name, pieces(datas[name], 4096), profile="table")
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(n,)) for n in datas]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rp_id = writer.commit({"streams": refs})
    assert errors == []
    reopened = Repository.open(repo.url, password=PASSWORD)
    for name, data in datas.items():
        assert read(reopened, refs[name]) == data
    assert reopened.verify(rp_id, read_data=True)["errors"] == []
    # The shared prefixes are stored once, not once per thread (without dedup: over half of the total).
    stored = sum(size for _, size in reopened.backend.list("data/"))
    assert stored < sum(map(len, datas.values())) * 0.3


def test_s3_round_trip_through_moto_server(moto_endpoint):
    boto3.client("s3").create_bucket(Bucket="repo-roundtrip")
    url = "s3://repo-roundtrip/backups/prod"
    repo = Repository.init(url, password=PASSWORD)
    streams = {"orders": table_rows(9, 50_000), "bak": mixed(10, 12_000_000)}
    rp_id, refs = backup(repo, streams)
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="repo-roundtrip")["Contents"]]
    assert all(k.startswith("backups/prod/") for k in keys)
    assert "backups/prod/config" in keys and f"backups/prod/manifests/{rp_id}" in keys
    reopened = Repository.open(url, password=PASSWORD)
    for name, data in streams.items():
        assert read(reopened, refs[name]) == data
    assert reopened.verify(read_data=True)["errors"] == []
    packs = [k for k in keys if "/data/" in k]
    assert repo.stats["puts"] == len(packs) + 2


def test_s3_large_objects_go_up_in_parts(moto_endpoint, monkeypatch):
    monkeypatch.setattr(backends_module, "MULTIPART_THRESHOLD", 6 * 1024 * 1024)
    monkeypatch.setattr(backends_module, "MULTIPART_CHUNK", 5 * 1024 * 1024)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="repo-multipart")
    calls = []
    backend = backends_module.S3Backend("repo-multipart", "p")
    real = backend.client.create_multipart_upload

    def spy(**kwargs):
        calls.append(kwargs["Key"])
        return real(**kwargs)

    monkeypatch.setattr(backend.client, "create_multipart_upload", spy)
    data = random.Random(11).randbytes(13 * 1024 * 1024)
    backend.put("data/ab/big", data)
    assert calls == ["p/data/ab/big"]
    assert backend.get("data/ab/big") == data
    assert backend.get_range("data/ab/big", 5, 10) == data[5:15]


def test_a_long_open_repository_reads_backups_committed_after_it_loaded_its_index(file_url):
    reader = Repository.init(file_url, password=PASSWORD)
    backup(reader, {"old": table_rows(12, 1000)})
    assert reader.list_restore_points()  # loads nothing yet; reading does:
    read(reader, reader.load_manifest(reader.list_restore_points()[0]["id"])["streams"]["old"])
    writer = Repository.open(file_url, password=PASSWORD)
    _, refs = backup(writer, {"new": table_rows(13, 20_000)})
    assert read(reader, refs["new"]) == table_rows(13, 20_000)


_MEMORY_PROBE = """
import random, sys
from rdsbackup.repository import Repository

def source(total):
    rng = random.Random(1)
    for _ in range(total // (1 << 20)):
        yield rng.randbytes(1 << 19) + b"row of text %d\\n" % rng.randrange(10**9) * 20000

repo = Repository.init(sys.argv[1], password="pw")
with repo.begin_backup(source_id="s", engine="postgres") as writer:
    ref = writer.add_stream("big", source(int(sys.argv[2])), profile="table")
    writer.commit({"streams": {"big": ref}})
# VmHWM, not ru_maxrss: after fork+exec, ru_maxrss also counts the parent's (pytest's) peak.
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0].split()[1]
print(ref["size"], int(hwm) // 1024)
"""


def test_memory_stays_bounded_whatever_the_stream_size(tmp_path):
    import subprocess
    import sys

    size = 400 * (1 << 20)
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, f"file://{tmp_path}/repo", str(size)],
        check=True,
        capture_output=True,
        text=True,
    )
    out = proc.stdout.split()
    streamed, peak_mib = int(out[0]), int(out[1])
    assert streamed > 350 * (1 << 20)
    # ~200k chunks: the index costs a few MiB; packs in flight and buffers a few tens. A stream held in
    # memory would cost its ~370 MiB.
    assert peak_mib < 192, peak_mib


def test_s3_forget_and_prune_delete_objects_and_keep_the_rest_restorable(moto_endpoint):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="repo-prune")
    repo = Repository.init("s3://repo-prune/r", password=PASSWORD)
    backup(repo, {"a": mixed(14, 12_000_000)})
    _, refs = backup(repo, {"a": mixed(15, 3_000_000)})
    repo.forget(keep_last=1)
    result = repo.prune()
    assert result["packs_deleted"] >= 1
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="repo-prune", Prefix="r/")["Contents"]]
    assert len([k for k in keys if k.startswith("r/manifests/")]) == 1
    assert len([k for k in keys if k.startswith("r/index/")]) == 1
    assert not [k for k in keys if k.startswith("r/locks/")]
    reopened = Repository.open("s3://repo-prune/r", password=PASSWORD)
    assert read(reopened, refs["a"]) == mixed(15, 3_000_000)
    assert reopened.verify(read_data=True)["errors"] == []


class _ShortReads(io.RawIOBase):
    """A pipe-like source: `readinto` hands out at most a few KiB at a time, of varying size."""

    def __init__(self, data: bytes):
        self._data = memoryview(data)
        self._pos = 0
        self._rng = random.Random(11)

    def readable(self) -> bool:
        return True

    def readinto(self, view) -> int:
        n = min(len(view), self._rng.randrange(1, 70_000), len(self._data) - self._pos)
        view[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


@pytest.mark.parametrize("profile", ["table", "bulk"])
def test_a_source_read_into_the_chunkers_buffer_is_cut_as_pieces_are(profile):
    """A file or pipe is read straight into one reused buffer (`readinto`); the chunks are the same
    as for the same bytes in pieces, whatever the sizes of the reads."""
    from rdsbackup.repository.chunking import chunk_batches
    from rdsbackup.repository.chunking import profile as chunking_profile

    prof = chunking_profile(profile)
    data = mixed(12, 3 * prof.batch_size + 12345)

    def cuts(source) -> list[int]:
        out, base = [], 0
        for view, ends in chunk_batches(source, prof):
            out += [base + e for e in ends]
            base += ends[-1]
            assert bytes(view[: ends[-1]]) == data[out[-len(ends)] - ends[0] : base]
        return out

    by_pieces = cuts(pieces(data, 7000))
    assert by_pieces[-1] == len(data) and len(by_pieces) > 3
    assert cuts(_ShortReads(data)) == by_pieces
    assert cuts(io.BytesIO(data)) == by_pieces


def test_chunking_uses_the_compiled_fastcdc():
    from rdsbackup.repository import chunking

    # The Cython extension, not fastcdc's pure-Python fallback (~50x slower at 2 KiB chunks).
    assert chunking.fastcdc_cy.__module__ == "fastcdc.fastcdc_cy"
    import fastcdc.fastcdc_cy as compiled

    assert compiled.__file__.endswith(".so")
