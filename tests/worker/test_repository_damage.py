"""Damage: a corrupt or missing pack is named by readers and by verify; nothing damaged reads as data."""

from __future__ import annotations

import random

import pytest
from rdsbackup.errors import CorruptObject, MissingObject, RestorePointNotFound
from rdsbackup.repository import Repository


@pytest.fixture
def repo_with_backup(tmp_path):
    url = f"file://{tmp_path}/repo"
    repo = Repository.init(url, password="pw")
    data = random.Random(1).randbytes(3_000_000)
    with repo.begin_backup(source_id="s", engine="postgres") as writer:
        ref = writer.add_stream("t", [data], profile="table")
        rp_id = writer.commit({"streams": {"t": ref}})
    [(pack_key, _)] = list(repo.backend.list("data/"))
    return Repository.open(url, password="pw"), ref, rp_id, tmp_path / "repo" / pack_key, pack_key


def test_corrupt_pack_byte_is_named_on_read_and_by_verify_read_data(repo_with_backup):
    repo, ref, rp_id, pack_path, pack_key = repo_with_backup
    raw = bytearray(pack_path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    pack_path.write_bytes(bytes(raw))

    assert repo.verify()["errors"] == []  # structure is intact: only reading the data finds it
    errors = repo.verify(read_data=True)["errors"]
    assert len(errors) == 1 and pack_key in errors[0] and "corrupt" in errors[0] and rp_id in errors[0]

    with pytest.raises(CorruptObject) as excinfo:
        b"".join(repo.open_stream(ref, restore_point=rp_id))
    assert pack_key in str(excinfo.value) and rp_id in str(excinfo.value)
    # The damage is recorded (by verify and by the failed read): a structural verify names it now too.
    errors = repo.verify()["errors"]
    assert len(errors) == 1 and pack_key in errors[0] and "corrupt" in errors[0] and rp_id in errors[0]


def test_missing_pack_is_named_on_read_and_by_verify(repo_with_backup):
    repo, ref, rp_id, pack_path, pack_key = repo_with_backup
    pack_path.unlink()
    with pytest.raises(MissingObject) as excinfo:
        b"".join(repo.open_stream(ref))
    assert pack_key in str(excinfo.value)
    errors = repo.verify()["errors"]
    assert errors and pack_key in errors[0] and "missing" in errors[0] and rp_id in errors[0]


def test_truncated_pack_is_reported(repo_with_backup):
    repo, ref, rp_id, pack_path, pack_key = repo_with_backup
    pack_path.write_bytes(pack_path.read_bytes()[:1000])
    with pytest.raises(CorruptObject, match=pack_key):
        b"".join(repo.open_stream(ref))
    errors = repo.verify(rp_id)["errors"]
    assert errors and pack_key in errors[0] and "truncated" in errors[0]


def test_tampered_manifest_is_corrupt_and_unknown_restore_point_is_not_found(repo_with_backup, tmp_path):
    repo, _ref, rp_id, _pack_path, _ = repo_with_backup
    with pytest.raises(RestorePointNotFound, match="nope"):
        repo.load_manifest("nope")
    manifest = tmp_path / "repo" / "manifests" / rp_id
    raw = bytearray(manifest.read_bytes())
    raw[-1] ^= 0x80
    manifest.write_bytes(bytes(raw))
    with pytest.raises(CorruptObject, match=rp_id):
        repo.load_manifest(rp_id)
    assert any(rp_id in e for e in repo.verify()["errors"])
    [listed] = repo.list_restore_points()
    assert listed["id"] == rp_id and "corrupt" in listed["error"]
    assert repo.forget(keep_last=0) == []  # what cannot be read is not forgotten


def test_manifest_renamed_to_another_id_fails_authentication(repo_with_backup, tmp_path):
    _repo, _ref, rp_id, _pack_path, _ = repo_with_backup
    manifests = tmp_path / "repo" / "manifests"
    (manifests / rp_id).rename(manifests / "0123456789abcdef")
    repo = Repository.open(f"file://{tmp_path}/repo", password="pw")
    with pytest.raises(CorruptObject):
        repo.load_manifest("0123456789abcdef")


def test_every_chunk_is_checked_against_its_id_even_when_its_block_authenticates(tmp_path):
    url = f"file://{tmp_path}/repo"
    repo = Repository.init(url, password="pw")
    data = random.Random(2).randbytes(200_000)
    with repo.begin_backup(source_id="s", engine="postgres") as writer:
        ref = writer.add_stream("t", [data], profile="table")
        writer.commit({"streams": {"t": ref}})
    reader = Repository.open(url, password="pw")
    index = reader._index()
    # Point one chunk id at a neighbour's bytes: the block still decrypts, the chunk must not pass.
    items = sorted(index.chunks.items(), key=lambda item: item[1])
    (first_id, _first_loc), (_second_id, second_loc) = items[0], items[1]
    bucket = index.chunks._buckets[(first_id[0] << 8) | first_id[1]]
    pos = bucket.find(first_id)
    bucket[pos + 16 : pos + 24] = second_loc.to_bytes(8, "little")
    with pytest.raises(CorruptObject, match="does not match its id"):
        b"".join(reader.open_stream(ref))


def test_a_chunk_list_holding_a_partial_id_is_corrupt(tmp_path):
    """Every chunk of a chunk list holds whole 16-byte ids; one that does not (a forged root naming a
    20-byte chunk as its list) fails the read, whole or in parts, with the restore point named."""
    from rdsbackup.repository.streams import ROOT_MAGIC

    url = f"file://{tmp_path}/repo"
    repo = Repository.init(url, password="pw")
    odd = b"x" * 20
    with repo.begin_backup(source_id="s", engine="postgres") as writer:
        odd_ref = writer.add_stream("odd", [odd], profile="bulk")  # one chunk of 20 bytes
        odd_id = repo._keys.chunk_id(odd)
        forged_root = ROOT_MAGIC + bytes((1,)) + odd_id  # "level 1: my list is that chunk"
        root_ref = writer.add_stream("root", [forged_root], profile="bulk")
        writer.commit({"streams": {"odd": odd_ref, "root": root_ref}})
    forged = {"blob": repo._keys.chunk_id(forged_root).hex()}
    with pytest.raises(CorruptObject, match=r"ends in a partial id \(restore point rp1\)"):
        b"".join(repo.open_stream(forged, restore_point="rp1"))
    with pytest.raises(CorruptObject, match="ends in a partial id"):
        b"".join(repo.open_stream(forged, part=(0, 2)))
