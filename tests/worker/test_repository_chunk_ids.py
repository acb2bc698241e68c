"""How a repository names its chunks (format version 3): new repositories use keyed BLAKE3, repositories
of format versions 1 and 2 keep keyed BLAKE2b, and each is read, backed up into (deduplicating against
the chunks it holds), verified and upgraded under its own scheme. The ids are checked against the
hash functions computed here independently, from the master key and the documented HKDF labels."""

from __future__ import annotations

import hashlib
import itertools
import json
import random

import blake3
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from rdsbackup import cli
from rdsbackup.errors import UnsupportedFormatVersion
from rdsbackup.repository import FORMAT_VERSION, Repository
from rdsbackup.repository.chunking import PROFILES, chunk_batches
from rdsbackup.repository.config import with_checksum
from rdsbackup.repository.crypto import CHUNK_ID_BLAKE2B, CHUNK_ID_BLAKE3, CHUNK_ID_SCHEMES, Keys

DATA = random.Random(7).randbytes(1_200_000)


def documented_id(scheme: str, master: bytes, chunk: bytes) -> bytes:
    """A chunk's id as docs/repository-format.md defines it, without rdsbackup's code."""
    labels = {CHUNK_ID_BLAKE2B: b"rdsbackup v1 chunk-id blake2b", CHUNK_ID_BLAKE3: b"rdsbackup v3 chunk-id blake3"}
    info = labels[scheme]
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master)
    if scheme == CHUNK_ID_BLAKE2B:
        return hashlib.blake2b(chunk, key=key, digest_size=16).digest()
    return blake3.blake3(chunk, key=key).digest(16)


def chunks_of(data: bytes) -> list[bytes]:
    out = []
    for view, ends in chunk_batches(iter([data]), PROFILES["table"]):
        start = 0
        for end in ends:
            out.append(bytes(view[start:end]))
            start = end
    return out


def backup(repo: Repository, data: bytes) -> tuple[str, dict, int]:
    """A restore point of one table stream: (id, its stream ref, stored bytes it added)."""
    with repo.begin_backup(source_id="db", engine="postgres") as writer:
        ref = writer.add_stream("t", [data], profile="table")
        rp = writer.commit({"streams": {"t": ref}})
    return rp, ref, ref["new_bytes"]


def make_format_2(url: str) -> None:
    """Rewrite a BLAKE2b repository's config as format version 2 wrote it (no `chunk_id`)."""
    repo = Repository.open(url, password="pw")
    config = {k: v for k, v in repo.config.items() if k not in ("checksum", "chunk_id")}
    config["version"] = 2
    repo.backend.replace("config", with_checksum(config))


@pytest.mark.parametrize("scheme", CHUNK_ID_SCHEMES)
def test_chunk_ids_are_the_documented_keyed_hashes(scheme):
    keys = Keys(bytes(range(32)), chunk_id_scheme=scheme)
    pieces = chunks_of(DATA)
    ends = list(itertools.accumulate(len(p) for p in pieces))
    expected = [documented_id(scheme, keys.master, p) for p in pieces]
    assert keys.chunk_ids(memoryview(DATA), ends) == expected
    assert [keys.chunk_id(p) for p in pieces[:50]] == expected[:50]
    other = Keys(bytes(range(32)), chunk_id_scheme=next(s for s in CHUNK_ID_SCHEMES if s != scheme))
    assert not keys.same_chunk_ids(other) and other.chunk_id(pieces[0]) != expected[0]


def test_a_new_repository_names_its_chunks_with_keyed_blake3(tmp_path):
    url = f"file://{tmp_path}/repo"
    repo = Repository.init(url, password="pw")
    config = json.loads((tmp_path / "repo" / "config").read_text())
    assert config["version"] == FORMAT_VERSION == 3 and config["chunk_id"] == CHUNK_ID_BLAKE3
    _rp, ref, _new = backup(repo, DATA)
    reopened = Repository.open(url, password="pw")
    index = reopened._index()
    assert all(documented_id(CHUNK_ID_BLAKE3, repo._keys.master, c) in index.chunks for c in chunks_of(DATA))
    assert b"".join(reopened.open_stream(ref)) == DATA
    assert reopened.verify(read_data=True)["errors"] == []


def test_a_format_2_repository_keeps_blake2b_names_through_backup_verify_and_upgrade(tmp_path, monkeypatch, capsys):
    url = f"file://{tmp_path}/repo"
    Repository.init(url, password="pw", chunk_ids=CHUNK_ID_BLAKE2B)
    make_format_2(url)
    old = Repository.open(url, password="pw")
    assert old.config["version"] == 2 and old._keys.chunk_id_scheme == CHUNK_ID_BLAKE2B
    _rp, ref, first = backup(old, DATA)
    assert all(documented_id(CHUNK_ID_BLAKE2B, old._keys.master, c) in old._index().chunks for c in chunks_of(DATA))
    # A second backup of the same rows finds every chunk by its BLAKE2b id: nearly nothing new.
    _rp2, _ref2, second = backup(Repository.open(url, password="pw"), DATA)
    assert first > len(DATA) // 2 and second < 4096
    monkeypatch.setenv("RDSBACKUP_PASSWORD", "pw")
    assert cli.main(["repo", "upgrade", "--repo", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["from_version"] == 2
    upgraded = Repository.open(url, password="pw")
    assert upgraded.config["version"] == 3 and upgraded.config["chunk_id"] == CHUNK_ID_BLAKE2B
    assert b"".join(upgraded.open_stream(ref)) == DATA
    assert upgraded.verify(read_data=True)["errors"] == []
    _rp3, _ref3, third = backup(upgraded, DATA)
    assert third < 4096


def test_an_unknown_chunk_id_scheme_is_refused_by_name(tmp_path):
    url = f"file://{tmp_path}/repo"
    Repository.init(url, password="pw")
    config_path = tmp_path / "repo" / "config"
    config = json.loads(config_path.read_text())
    config["chunk_id"] = "sha3-128"  # as a newer rdsbackup might write it
    config_path.write_bytes(with_checksum({k: v for k, v in config.items() if k != "checksum"}))
    with pytest.raises(UnsupportedFormatVersion, match=r"'sha3-128'.*upgrade rdsbackup"):
        Repository.open(url, password="pw")
