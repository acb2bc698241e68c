"""Containment and repair: self-describing packs, the damage registry, repair index|packs|points,
forget --restore-point, damaged manifests and index objects that block nothing, verify naming every
affected restore point, and the format 1 -> 2 upgrade."""

from __future__ import annotations

import json
import os
import random

import boto3
import pytest
from rdsbackup import cli
from rdsbackup.errors import CorruptObject, MissingObject, RepositoryDamaged, RestorePointNotFound
from rdsbackup.repository import FORMAT_VERSION, Repository
from rdsbackup.repository.crypto import CHUNK_ID_BLAKE2B, AuthenticationFailed
from rdsbackup.repository.packs import FOOTER_SIZE, TrailerMissing, decode_trailer, read_trailer, trailer_length
from rdsbackup.repository.repair import repair_index, repair_packs, repair_points

from tests.support import moto_server

moto_server_url = moto_server.moto_server_url
moto_endpoint = moto_server.moto_endpoint


def data_of(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def backup(repo: Repository, source: str, streams: dict[str, bytes]) -> tuple[str, dict]:
    with repo.begin_backup(source_id=source, engine="postgres") as writer:
        refs = {name: writer.add_stream(name, [data], profile="table") for name, data in streams.items()}
        return writer.commit({"streams": refs}), refs


def read(repo: Repository, ref: dict) -> bytes:
    return b"".join(repo.open_stream(ref))


@pytest.fixture(params=["file", "s3"])
def repo(request, tmp_path):
    """An empty repository on file:// and on moto's S3 server."""
    return _new_repository(request, tmp_path)


def _new_repository(request, tmp_path, **kwargs) -> Repository:
    if request.param == "file":
        return Repository.init(f"file://{tmp_path}/repo", password="pw", **kwargs)
    request.getfixturevalue("moto_endpoint")
    bucket = f"repair-{os.urandom(6).hex()}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return Repository.init(f"s3://{bucket}/repo", password="pw", **kwargs)


@pytest.fixture(params=["file", "s3"])
def repo_blake2b(request, tmp_path):
    """An empty repository whose chunks are named as format versions 1 and 2 named them."""
    return _new_repository(request, tmp_path, chunk_ids=CHUNK_ID_BLAKE2B)


def reopen(repo: Repository) -> Repository:
    return Repository.open(repo.url, password="pw")


def packs_of(repo: Repository) -> list[tuple[str, int]]:
    return sorted(repo.backend.list("data/"))


def flip_byte(repo: Repository, key: str, position: int, mask: int = 0x01) -> None:
    raw = bytearray(repo.backend.get(key))
    raw[position] ^= mask
    repo.backend.replace(key, bytes(raw))


def flip_a_byte_in_first_block(repo: Repository, key: str) -> None:
    flip_byte(repo, key, 100)


def test_every_pack_describes_its_blocks_and_chunks_in_a_sealed_trailer(repo):
    _rp, _refs = backup(repo, "s", {"t": data_of(1, 2_000_000)})
    index = repo._index(reload=True)
    [(key, size)] = packs_of(repo)
    pid = bytes.fromhex(key.rsplit("/", 1)[-1])
    blocks = read_trailer(repo.backend, repo._keys, pid, size)
    listed = {cid for *_b, chunks in blocks for cid, _off, _len in chunks}
    assert listed == {cid for cid, _loc in index.chunks.items()}
    # Bound to its pack: the same trailer under another pack id does not open.
    data = repo.backend.get(key)
    length = trailer_length(data[-FOOTER_SIZE:], size)
    with pytest.raises(AuthenticationFailed):
        decode_trailer(repo._keys, b"\0" * 16, data[size - FOOTER_SIZE - length : size - FOOTER_SIZE])
    # A format 1 pack (no footer) is recognised as such.
    with pytest.raises(TrailerMissing):
        trailer_length(b"\x01" * FOOTER_SIZE, size)


def test_repair_index_rebuilds_the_index_from_the_packs_alone(repo):
    _rp1, refs1 = backup(repo, "a", {"t": data_of(2, 1_500_000)})
    _rp2, refs2 = backup(repo, "b", {"t": data_of(3, 1_500_000), "u": data_of(4, 300_000)})
    for key, _size in list(repo.backend.list("index/")):
        repo.backend.delete(key)
    repo = reopen(repo)
    with pytest.raises(MissingObject, match="not in the index"):
        read(repo, refs1["t"])
    result = repair_index(repo)
    assert result["packs_from_trailers"] == len(packs_of(repo)) and result["packs_unreadable"] == 0
    repo = reopen(repo)
    assert read(repo, refs1["t"]) == data_of(2, 1_500_000)
    assert read(repo, refs2["u"]) == data_of(4, 300_000)
    assert repo.verify(read_data=True)["errors"] == []


def test_a_damaged_index_object_blocks_neither_backups_nor_other_restores_and_prune_waits_for_repair(repo):
    _rp1, refs1 = backup(repo, "a", {"t": data_of(5, 800_000)})
    [bad_key] = [k for k, _ in repo.backend.list("index/")]
    _rp2, refs2 = backup(repo, "b", {"t": data_of(6, 800_000)})
    flip_byte(repo, bad_key, 20, 0xFF)

    repo = reopen(repo)
    assert read(repo, refs2["t"]) == data_of(6, 800_000)  # the other index object still serves
    with pytest.raises(MissingObject, match=f"{bad_key} .*is damaged.*repair index"):
        read(repo, refs1["t"])
    _rp3, refs3 = backup(repo, "a", {"t": data_of(5, 800_000)})  # a backup goes on: stores the chunks again
    assert read(reopen(repo), refs3["t"]) == data_of(5, 800_000)
    assert any(bad_key in e for e in repo.verify()["errors"])
    with pytest.raises(RepositoryDamaged, match=r"repair index.*nothing pruned"):
        repo.prune()
    repair_index(repo)
    repo = reopen(repo)
    assert read(repo, refs1["t"]) == data_of(5, 800_000)
    repo.prune()
    assert reopen(repo).verify(read_data=True)["errors"] == []


def test_damage_is_contained_the_next_backup_stores_damaged_chunks_again_and_heals_old_points(repo):
    shared = data_of(7, 1_000_000)
    rp1, refs1 = backup(repo, "s", {"t": shared})
    [(pack, _)] = packs_of(repo)
    flip_a_byte_in_first_block(repo, pack)
    repo = reopen(repo)
    report = repo.verify(read_data=True)  # finds it and records it in the damage registry
    assert any(pack in e and rp1 in e for e in report["errors"])
    assert list(repo.backend.list("damage/"))

    _rp2, refs2 = backup(reopen(repo), "s", {"t": shared})  # same content: must not reuse the damaged chunks
    assert refs2["t"]["new_bytes"] > 0
    repo = reopen(repo)
    assert read(repo, refs2["t"]) == shared
    # The old restore point references the same chunk ids: it reads the new copies now.
    assert b"".join(repo.open_stream(refs1["t"], restore_point=rp1)) == shared
    assert repo.verify(read_data=True)["errors"] == []


def test_a_restore_that_meets_damage_records_it_and_names_it_next_time(repo):
    rp, refs = backup(repo, "s", {"t": data_of(8, 1_000_000)})
    [(pack, _)] = packs_of(repo)
    flip_a_byte_in_first_block(repo, pack)
    with pytest.raises(CorruptObject, match=pack):
        b"".join(reopen(repo).open_stream(refs["t"], restore_point=rp))
    with pytest.raises(CorruptObject, match=f"is damaged \\(pack {pack}: corrupt"):
        b"".join(reopen(repo).open_stream(refs["t"], restore_point=rp))
    _rp2, refs2 = backup(reopen(repo), "s", {"t": data_of(8, 1_000_000)})
    assert refs2["t"]["new_bytes"] > 0


def test_verify_names_every_restore_point_that_a_damaged_pack_breaks(repo):
    shared = data_of(9, 1_000_000)
    rps = [backup(repo, f"src{i}", {"t": shared})[0] for i in range(3)]  # deduplicated: one pack
    [(pack, _)] = packs_of(repo)
    flip_a_byte_in_first_block(repo, pack)
    report = reopen(repo).verify(read_data=True)
    [item] = report["damaged"]
    assert item["object"] == pack and "corrupt" in item["problem"]
    assert item["restore_points"] == sorted(rps)
    assert all(rp in report["errors"][0] for rp in rps)


def test_verify_names_every_restore_point_of_a_missing_pack(repo):
    shared = data_of(10, 600_000)
    rps = [backup(repo, f"src{i}", {"t": shared})[0] for i in range(2)]
    [(pack, _)] = packs_of(repo)
    repo.backend.delete(pack)
    report = reopen(repo).verify()
    [item] = report["damaged"]
    assert item["object"] == pack and item["problem"] == "missing" and item["restore_points"] == sorted(rps)


def test_repair_packs_salvages_readable_blocks_and_records_the_rest(repo):
    big = data_of(11, 3_000_000)  # many blocks in one pack
    rp, refs = backup(repo, "s", {"t": big, "small": data_of(12, 50_000)})
    [(pack, _)] = packs_of(repo)
    flip_a_byte_in_first_block(repo, pack)  # only the first block is damaged
    result = repair_packs(reopen(repo))
    [item] = result["damaged"]
    assert item["object"] == pack and item["restore_points"] == [rp]
    assert result["packs_rewritten"] == 1
    repo = reopen(repo)
    assert pack not in {k for k, _ in packs_of(repo)}  # the damaged pack is gone...
    assert read(repo, refs["small"]) == data_of(12, 50_000)  # ...what was readable survives
    with pytest.raises((CorruptObject, MissingObject)):
        read(repo, refs["t"])
    points = repair_points(repo)
    assert points["damaged"] == [rp]
    [listed] = reopen(repo).list_restore_points()
    assert "damaged" in listed and "lost" in listed["damaged"]


def test_repair_points_forget_removes_the_damaged_points_only(repo):
    good, _ = backup(repo, "good", {"t": data_of(13, 200_000)})
    repo2 = reopen(repo)
    bad, _ = backup(repo2, "bad", {"t": data_of(14, 200_000)})
    index = reopen(repo)._index(reload=True)
    manifest = repo.load_manifest(bad)
    root = bytes.fromhex(manifest["stream_roots"][0])
    pack_no = index.blocks[index.chunks.get(root) >> 48][0]
    repo.backend.delete(f"data/{index.packs[pack_no].hex()[:2]}/{index.packs[pack_no].hex()}")  # the bad one's
    result = repair_points(reopen(repo), forget=True)
    assert result["damaged"] == [bad]
    assert [rp["id"] for rp in reopen(repo).list_restore_points()] == [good]


def test_a_corrupt_manifest_is_reported_and_skipped_by_prune_and_forgotten_by_id(repo, capsys, monkeypatch):
    bad, _ = backup(repo, "a", {"t": data_of(15, 300_000)})
    good, good_refs = backup(repo, "b", {"t": data_of(16, 300_000)})
    flip_byte(repo, f"manifests/{bad}", -1, 0x80)
    result = reopen(repo).prune()
    assert any(bad in w and "forget --restore-point" in w for w in result["warnings"])
    assert read(reopen(repo), good_refs["t"]) == data_of(16, 300_000)
    monkeypatch.setenv("RDSBACKUP_PASSWORD", "pw")
    assert cli.main(["forget", "--repo", repo.url, "--restore-point", bad, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["forgotten"] == [bad] and out["prune"]["warnings"] == []
    assert [rp["id"] for rp in reopen(repo).list_restore_points()] == [good]
    with pytest.raises(RestorePointNotFound, match="nothing forgotten"):
        reopen(repo).forget_restore_points([bad])


def test_cli_repair_commands_report(repo, capsys, monkeypatch):
    backup(repo, "s", {"t": data_of(17, 300_000)})
    monkeypatch.setenv("RDSBACKUP_PASSWORD", "pw")
    for what in ("index", "packs", "points"):
        assert cli.main(["repair", what, "--repo", repo.url, "--json"]) == 0
        assert isinstance(json.loads(capsys.readouterr().out), dict)


def make_format_1(repo: Repository) -> None:
    """Turn a repository into what format 1 wrote: no checksums, no chunk-id scheme (BLAKE2b), packs
    without trailers."""
    assert repo._keys.chunk_id_scheme == CHUNK_ID_BLAKE2B
    config = json.loads(repo.backend.get("config"))
    config.pop("checksum")
    config.pop("chunk_id")
    config["version"] = 1
    repo.backend.replace("config", json.dumps(config).encode())
    for key, _ in list(repo.backend.list("keys/")):
        doc = json.loads(repo.backend.get(key))
        doc.pop("checksum")
        repo.backend.replace(key, json.dumps(doc).encode())
    for key, size in list(repo.backend.list("data/")):
        data = repo.backend.get(key)
        length = trailer_length(data[-FOOTER_SIZE:], size)
        repo.backend.replace(key, data[: size - FOOTER_SIZE - length])


def test_a_format_1_repository_is_read_and_upgraded(repo_blake2b, monkeypatch, capsys):
    repo = repo_blake2b
    _rp, refs = backup(repo, "s", {"t": data_of(18, 1_500_000)})
    make_format_1(repo)
    old = reopen(repo)
    assert old.config["version"] == 1
    assert read(old, refs["t"]) == data_of(18, 1_500_000)
    _rp2, refs2 = backup(old, "s", {"t": data_of(19, 500_000)})  # a backup into it works
    assert repair_index(reopen(repo))["packs_from_old_index"] == 1  # the trailer-less pack keeps its entries
    monkeypatch.setenv("RDSBACKUP_PASSWORD", "pw")
    assert cli.main(["repo", "upgrade", "--repo", repo.url, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["from_version"] == 1 and result["version"] == FORMAT_VERSION and result["packs_rewritten"] == 1
    upgraded = reopen(repo)
    assert upgraded.config["version"] == FORMAT_VERSION
    # Its chunks keep their BLAKE2b names, now said in the config.
    assert upgraded.config["chunk_id"] == CHUNK_ID_BLAKE2B == upgraded._keys.chunk_id_scheme
    for key, size in upgraded.backend.list("data/"):
        read_trailer(upgraded.backend, upgraded._keys, bytes.fromhex(key.rsplit("/", 1)[-1]), size)
    assert read(upgraded, refs["t"]) == data_of(18, 1_500_000)
    assert read(upgraded, refs2["t"]) == data_of(19, 500_000)
    assert upgraded.verify(read_data=True)["errors"] == []
