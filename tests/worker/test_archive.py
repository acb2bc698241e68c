"""Archive repositories (rdsbackup.repository.archive): self-contained archived points with their own
packs and key, blocks moved without recompressing, interruption, damage, retention with Object Lock
and the early-deletion charge, Glacier retrieval states, GFS selection."""

from __future__ import annotations

import io
import random
import re
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from rdsbackup.errors import ArchivedObject, CorruptObject, RepositoryError, WrongRepositoryKey
from rdsbackup.repository import Repository, crypto
from rdsbackup.repository import archive as archive_module
from rdsbackup.repository.archive import (
    ArchiveRepository,
    archive_restore_point,
    forget_archived,
    verify_archive,
)
from rdsbackup.repository.crypto import CHUNK_ID_BLAKE2B, CHUNK_ID_BLAKE3
from rdsbackup.repository.gfs import gfs_keep
from rdsbackup.repository.index import pack_key
from rdsbackup.repository.retrieval import (
    ARCHIVED,
    IN_PROGRESS,
    READY,
    early_deletion_charge,
    listed_states,
    request_retrieval,
)

from rdsbackup_local.moto_patches import aws_behaviour, slow_retrievals
from tests.support.moto_server import moto_endpoint, moto_server_url  # noqa: F401  (fixtures)


def churned(data: bytearray, seed: int, edits: int = 60) -> bytearray:
    r = random.Random(seed)
    out = bytearray(data)
    for _ in range(edits):
        p = r.randrange(len(out) - 8)
        out[p : p + 6] = r.randbytes(6)
    return out


def backup(repo: Repository, data: bytes, *, source_id: str = "orders-db") -> str:
    with repo.begin_backup(source_id=source_id, engine="postgres") as writer:
        table = writer.add_stream("t", [bytes(data)], profile="table")
        schema = writer.add_stream("s", [bytes(data[:300_000])], profile="bulk")
        return writer.commit({"streams": {"t": table, "s": schema}, "databases": ["shop"]})


def read_table(repo: Repository, rp_id: str) -> bytes:
    out = io.BytesIO()
    repo.read_stream_to(repo.load_manifest(rp_id)["streams"]["t"], out, restore_point=rp_id)
    return out.getvalue()


@pytest.fixture(params=[CHUNK_ID_BLAKE3, CHUNK_ID_BLAKE2B])
def source(tmp_path, request):
    """A backup repository as `init` makes it now (keyed BLAKE3 chunk ids), or as format 2 made it
    (keyed BLAKE2b)."""
    return Repository.init(f"file://{tmp_path}/backup", password="backup key", chunk_ids=request.param)


@pytest.fixture(params=["source-ids", "own-ids"])
def archive(tmp_path, source, request):
    """An archive named with the source's chunk-id key and scheme (what `rdsbackup archive` creates:
    blocks and lists copied as they are) or with its own (every chunk hashed again, lists rewritten)."""
    ids_of = source._keys if request.param == "source-ids" else None
    return ArchiveRepository.init_archive(f"file://{tmp_path}/archive", password="archive key", ids_of=ids_of)


@pytest.fixture
def three_days(source):
    """Three restore points of one slowly changing table: (ids, contents)."""
    day = bytearray(random.Random(1).randbytes(2_000_000))
    ids, contents = [], []
    for n in range(3):
        if n:
            day = churned(day, n)
        ids.append(backup(source, day))
        contents.append(bytes(day))
    return ids, contents


def objects(repo, prefix: str) -> set[str]:
    return {k for k, _ in repo.backend.list(prefix)}


def test_archived_points_are_self_contained_and_deleting_one_never_touches_another(source, archive, three_days):
    ids, contents = three_days
    results = [archive_restore_point(source, archive, rp_id) for rp_id in ids]
    records = [archive.record(rp_id) for rp_id in ids]
    # Each point owns its packs and index object: no object is shared.
    owned = [set(r["packs"]) | set(r["index"]) for r in records]
    assert all(not (owned[a] & owned[b]) for a in range(3) for b in range(3) if a != b)
    assert objects(archive, "data/") | objects(archive, "index/") == set().union(*owned)
    # Each is a full: about the size of the point's data, although the source stored days 2 and 3 as increments.
    assert all(r["stored_bytes"] > 0.9 * len(c) for r, c in zip(results, contents, strict=True))
    # Same id, time and metadata as in the backup repository.
    for rp_id in ids:
        copied, original = archive.load_manifest(rp_id), source.load_manifest(rp_id)
        assert (copied["id"], copied["time"], copied["source_id"], copied["databases"]) == (
            original["id"], original["time"], original["source_id"], original["databases"])
    # Delete the middle point's objects the way retention does; the others still read and verify.
    middle = records[1]
    archive.backend.delete(f"manifests/{ids[1]}")
    archive.backend.delete_many(middle["index"] + middle["packs"])
    reopened = ArchiveRepository.open_archive(archive.url, password="archive key")
    for rp_id, content in ((ids[0], contents[0]), (ids[2], contents[2])):
        assert read_table(reopened.for_point(rp_id), rp_id) == content
    report = verify_archive(reopened, read_data=True)
    assert report["errors"] == [] and report["restore_points"] == 2 and report["bytes_read"] > 0


def test_a_point_is_read_through_its_own_index_only(source, archive, three_days):
    ids, contents = three_days
    for rp_id in ids:
        archive_restore_point(source, archive, rp_id)
    # Days 1 and 2 share most chunks; with day 1's packs gone, day 2 must not miss any of them.
    first = archive.record(ids[0])
    archive.backend.delete_many(first["packs"])
    assert read_table(archive.for_point(ids[1]), ids[1]) == contents[1]
    with pytest.raises(RepositoryError, match="missing"):
        read_table(archive.for_point(ids[0]), ids[0])


def test_blocks_are_moved_without_recompressing(source, archive, three_days, monkeypatch):
    ids, contents = three_days
    compressed = []
    real = crypto.Keys._compressor

    def counting(self):
        compressed.append(1)
        return real(self)

    monkeypatch.setattr(crypto.Keys, "_compressor", counting)
    result = archive_restore_point(source, archive, ids[0])
    # A first full's blocks are all live: every data block moves whole, only the new chunk lists and
    # roots (a few blocks) are compressed.
    assert result["blocks_moved"] > 10 and result["blocks_rebuilt"] == 0
    assert len(compressed) <= 4, len(compressed)
    assert read_table(archive.for_point(ids[0]), ids[0]) == contents[0]


def test_the_archive_has_its_own_key(source, archive, three_days):
    ids, contents = three_days
    archive_restore_point(source, archive, ids[0])
    with pytest.raises(WrongRepositoryKey):
        ArchiveRepository.open_archive(archive.url, password="backup key")
    opened = ArchiveRepository.open_archive(archive.url, password="archive key")
    assert opened._keys.master != source._keys.master
    assert opened._keys._aead is not source._keys._aead
    # Opened again, the archive names chunks as it did when it was written.
    assert opened._keys.same_chunk_ids(archive._keys)
    assert opened._keys.chunk_id(b"a chunk") == archive._keys.chunk_id(b"a chunk")
    assert read_table(opened.for_point(ids[0]), ids[0]) == contents[0]
    # A pack is not readable with the source's key: the encryption key is the archive's own.
    index = opened.for_point(ids[0])._index()
    pack_no, offset, stored, _raw = index.blocks[0]
    block = archive.backend.get_range(pack_key(index.packs[pack_no]), offset, stored)
    assert opened._keys.open_encoded(block, b"rdsbackup block")
    with pytest.raises(crypto.AuthenticationFailed):
        source._keys.open_encoded(block, b"rdsbackup block")


def test_archiving_twice_archives_nothing_twice(source, archive, three_days):
    ids, _ = three_days
    assert archive_restore_point(source, archive, ids[0])["archived"] is True
    packs = objects(archive, "data/")
    again = archive_restore_point(source, archive, ids[0])
    assert again == {"restore_point_id": ids[0], "archived": False, "already": True}
    assert objects(archive, "data/") == packs


def test_an_interrupted_archive_leaves_no_point_and_nothing_behind(source, archive, three_days, monkeypatch):
    ids, contents = three_days

    def interrupted(self, streams):
        raise KeyboardInterrupt

    monkeypatch.setattr(archive_module._Copy, "write_lists", interrupted)
    with pytest.raises(KeyboardInterrupt):
        archive_restore_point(source, archive, ids[0])
    assert archive.list_restore_points() == []
    assert objects(archive, "data/") == objects(archive, "index/") == objects(archive, "locks/") == set()
    monkeypatch.undo()
    assert archive_restore_point(source, archive, ids[0])["archived"] is True
    assert read_table(archive.for_point(ids[0]), ids[0]) == contents[0]


def test_a_killed_archive_leaves_orphans_that_the_next_run_removes(source, archive, three_days, monkeypatch):
    ids, contents = three_days
    # A kill gives the copy no chance to clean up: its packs and index object stay, no manifest.
    monkeypatch.setattr(archive_module._Copy, "abort", lambda self: None)
    real_commit = archive_module._Copy.commit

    def killed_before_manifest(self, *args, **kwargs):
        self.writer.lock.check = lambda: (_ for _ in ()).throw(SystemExit("killed"))
        return real_commit(self, *args, **kwargs)

    monkeypatch.setattr(archive_module._Copy, "commit", killed_before_manifest)
    with pytest.raises(SystemExit):
        archive_restore_point(source, archive, ids[0])
    left = objects(archive, "data/") | objects(archive, "index/")
    assert left and archive.list_restore_points() == []
    monkeypatch.undo()
    # Nothing trips the next run: it removes the orphans and archives normally.
    result = archive_restore_point(source, archive, ids[1])
    assert result["orphans_removed"] == len(left)
    assert not (left & (objects(archive, "data/") | objects(archive, "index/")))
    assert verify_archive(archive, read_data=True)["errors"] == []
    assert read_table(archive.for_point(ids[1]), ids[1]) == contents[1]


def test_archiving_a_point_with_a_damaged_pack_fails_naming_the_point(source, archive, three_days, tmp_path):
    ids, _ = three_days
    pack = sorted(objects(source, "data/"))[0]
    path = tmp_path / "backup" / pack
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    path.write_bytes(bytes(damaged))
    failures = []
    for rp_id in ids:
        try:
            archive_restore_point(source, archive, rp_id)
        except CorruptObject as exc:
            failures.append((rp_id, str(exc)))
    assert failures, "no restore point used the damaged pack"
    for rp_id, message in failures:
        assert rp_id in message and pack in message
    failed = {rp for rp, _ in failures}
    assert {p["id"] for p in archive.list_restore_points()} == set(ids) - failed
    assert verify_archive(archive, read_data=True)["errors"] == []


def test_archive_repositories_refuse_backups_and_prune(archive):
    with pytest.raises(RepositoryError, match="archive repository"):
        archive.begin_backup(source_id="x", engine="postgres")
    with pytest.raises(RepositoryError, match="never pruned"):
        archive.prune()
    with pytest.raises(RepositoryError, match="not an archive repository"):
        Repository.init(archive.url.replace("archive", "plain"), password="x")
        ArchiveRepository.open_archive(archive.url.replace("archive", "plain"), password="x")


def test_retention_deletes_old_points_whole_and_keeps_the_gfs_selection(source, archive, three_days, monkeypatch):
    ids, contents = three_days
    for rp_id in ids:
        archive_restore_point(source, archive, rp_id)
    times = {p["id"]: archive_module._parse_time(p["time"]) for p in archive.list_restore_points()}
    now = max(times.values()) + 100 * 86400
    kept_by_gfs = {ids[0]}
    result = forget_archived(archive, retention_days=90, now=now, keep=lambda points: kept_by_gfs)
    assert sorted(result["deleted"]) == sorted(ids[1:]) and result["kept_by_selection"] == [ids[0]]
    assert result["locked"] == [] and result["early_deletion_charge_usd"] == 0  # file:// has no storage class
    assert [p["id"] for p in archive.list_restore_points()] == [ids[0]]
    assert objects(archive, "data/") == set(archive.record(ids[0])["packs"])
    assert read_table(archive.for_point(ids[0]), ids[0]) == contents[0]


def test_early_deletion_charge_follows_the_class_minimum():
    gib = 1e9
    assert early_deletion_charge("DEEP_ARCHIVE", 100 * gib, 180) == 0
    assert early_deletion_charge("DEEP_ARCHIVE", 100 * gib, 0) == pytest.approx(100 * 0.00099 * 6)
    assert early_deletion_charge("GLACIER", 100 * gib, 60) == pytest.approx(100 * 0.0036 * 1)
    assert early_deletion_charge("STANDARD", 100 * gib, 0) == 0


def test_gfs_keeps_the_newest_point_of_each_recent_period():
    def point(i, stamp):
        return {"id": f"p{i}", "time": f"{stamp}T03:00:00.000000Z"}

    points = [point(i, f"2026-{m:02d}-{d:02d}") for i, (m, d) in enumerate(
        [(1, 5), (1, 20), (1, 29), (2, 2), (2, 3), (2, 27), (3, 1), (3, 2)])]
    # Weeks (ISO): 2026-03-02 is a Monday; 03-01 a Sunday of the week before.
    assert gfs_keep(points, weekly=2) == {"p7", "p6"}
    assert gfs_keep(points, monthly=2) == {"p7", "p5"}
    assert gfs_keep(points, monthly=5) == {"p7", "p5", "p2"}
    assert gfs_keep(points, yearly=1, weekly=1) == {"p7"}
    assert gfs_keep(points) == set()


# --- S3: storage classes, retrieval, Object Lock -------------------------------------------------------


@pytest.fixture
def s3_archive(moto_endpoint, request):  # noqa: F811
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())
    bucket = f"archive-{name[-40:]}"
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    return s3, bucket


def test_packs_go_to_the_cold_class_and_index_manifests_keys_stay_standard(source, three_days, s3_archive):
    s3, bucket = s3_archive
    ids, contents = three_days
    archive = ArchiveRepository.init_archive(f"s3://{bucket}/nightly", password="archive key")
    archive_restore_point(source, archive, ids[0], storage_class="DEEP_ARCHIVE")
    classes = {}
    for obj in s3.list_objects_v2(Bucket=bucket)["Contents"]:
        classes.setdefault(obj["Key"].split("/")[1], set()).add(obj.get("StorageClass", "STANDARD"))
    assert classes["data"] == {"DEEP_ARCHIVE"}
    assert classes["index"] == classes["manifests"] == classes["keys"] == classes["config"] == {"STANDARD"}
    # Listing and structural verify need no retrieval; reading data does.
    assert [p["id"] for p in archive.list_restore_points()] == [ids[0]]
    report = verify_archive(archive)
    assert report["errors"] == [] and report["needs_retrieval"] == []
    report = verify_archive(archive, read_data=True)
    assert report["errors"] == []
    assert {w["pack"] for w in report["needs_retrieval"]} == set(archive.record(ids[0])["packs"])
    view = archive.for_point(ids[0])
    with pytest.raises(ArchivedObject):
        read_table(view, ids[0])
    # Retrieval: Deep Archive has no Expedited tier; Standard is requested, runs, then reads.
    states = view.pack_states(ids[0])
    assert {s.state for s in states} == {ARCHIVED}
    with pytest.raises(RepositoryError, match="Expedited is not offered for DEEP_ARCHIVE"):
        request_retrieval(view.backend, states, tier="Expedited", days=1)
    with slow_retrievals() as retrievals:
        assert request_retrieval(view.backend, states, tier="Standard", days=1) == len(states)
        assert {s.state for s in view.pack_states(ids[0])} == {IN_PROGRESS}
        with pytest.raises(ArchivedObject):
            read_table(view, ids[0])
        # Asking again while it runs makes no second request.
        assert request_retrieval(view.backend, view.pack_states(ids[0]), tier="Standard", days=1) == 0
        retrievals.complete()
        assert {s.state for s in view.pack_states(ids[0])} == {READY}
    assert read_table(view, ids[0]) == contents[0]
    assert verify_archive(archive, read_data=True)["needs_retrieval"] == []


def test_a_listing_tells_the_same_retrieval_states_as_a_head_per_pack(source, three_days, s3_archive):
    """The restore workflow's retrieval steps list (s3:ListBucket) rather than HEAD (s3:GetObject) the packs."""
    s3, bucket = s3_archive
    ids, _ = three_days
    archive = ArchiveRepository.init_archive(f"s3://{bucket}/nightly", password="archive key")
    archive_restore_point(source, archive, ids[0], storage_class="GLACIER")
    archive_restore_point(source, archive, ids[1], storage_class="GLACIER")
    view = archive.for_point(ids[0])
    packs = archive.record(ids[0])["packs"]

    def both():
        listed, heads = listed_states(view.backend, packs), view.pack_states(ids[0])
        assert listed == heads
        return {s.state for s in listed}

    with aws_behaviour():
        assert both() == {ARCHIVED}
        with slow_retrievals() as retrievals:
            request_retrieval(view.backend, view.pack_states(ids[0]), tier="Bulk", days=1)
            assert both() == {IN_PROGRESS}
            retrievals.complete()
            assert both() == {READY}
        # the other point's packs are not this point's: never asked for
        assert {s.state for s in listed_states(view.backend, archive.record(ids[1])["packs"])} == {ARCHIVED}
        s3.delete_object(Bucket=bucket, Key=f"nightly/{packs[0]}")
        with pytest.raises(RepositoryError, match=f"packs are missing .*{packs[0]}"):
            listed_states(view.backend, packs)


def test_the_restore_job_reads_an_archived_point_once_retrieved_and_names_what_is_not(
        source, three_days, s3_archive, monkeypatch):
    from rdsbackup.restore_job import open_restorable

    _, bucket = s3_archive
    ids, contents = three_days
    monkeypatch.setenv("RDSBACKUP_ARCHIVE_PASSWORD", "archive key")
    url = f"s3://{bucket}/nightly"
    archive = ArchiveRepository.init_archive(url)
    archive_restore_point(source, archive, ids[0], storage_class="DEEP_ARCHIVE")
    packs = archive.record(ids[0])["packs"]
    with pytest.raises(RepositoryError, match=f"restore point {ids[0]} of archive {url}: {len(packs)} packs are "
                                              "not retrieved from DEEP_ARCHIVE yet"):
        open_restorable(url, ids[0])
    request_retrieval(archive.backend, archive.pack_states(ids[0]), tier="Standard", days=1)  # moto: at once
    assert read_table(open_restorable(url, ids[0]), ids[0]) == contents[0]


def test_retention_never_deletes_a_point_under_object_lock_and_reports_early_deletion(
        source, three_days, moto_endpoint):  # noqa: F811
    s3 = boto3.client("s3")
    bucket = f"archive-object-lock-{source._keys.chunk_id_scheme}"
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    ids, _ = three_days
    archive = ArchiveRepository.init_archive(f"s3://{bucket}/p", password="archive key")
    archive_restore_point(source, archive, ids[0], storage_class="GLACIER")
    archive_restore_point(source, archive, ids[1], storage_class="GLACIER")
    # The first point's objects are under COMPLIANCE retention for 30 days (as a bucket default
    # retention would put them); the second's are not.
    until = datetime.now(UTC) + timedelta(days=30)
    first = archive.record(ids[0])
    for key in [f"manifests/{ids[0]}", *first["index"], *first["packs"]]:
        s3.put_object_retention(Bucket=bucket, Key=f"p/{key}",
                                Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until})
    now = archive_module._parse_time(archive.load_manifest(ids[1])["time"]) + 10 * 86400
    result = forget_archived(archive, retention_days=5, now=now)
    assert result["deleted"] == [ids[1]]
    assert [item["restore_point_id"] for item in result["locked"]] == [ids[0]]
    [early] = result["early_deletions"]
    assert early["restore_point_id"] == ids[1] and early["storage_class"] == "GLACIER"
    assert result["early_deletion_charge_usd"] == pytest.approx(
        early_deletion_charge("GLACIER", early["bytes"], early["archived_days"]), rel=1e-3)
    assert early["early_deletion_charge_usd"] > 0
    assert [p["id"] for p in archive.list_restore_points()] == [ids[0]]
