"""Clear errors for every damaged repository object, S3 requests that give up within a bound and say
so, and prune that frees space on a full disk."""

from __future__ import annotations

import json
import pathlib
import random
import socket
import threading
import time

import pytest
from rdsbackup import cli
from rdsbackup.errors import RepositoryDamaged, RepositoryError, UnsupportedFormatVersion, WrongRepositoryKey
from rdsbackup.repository import Repository
from rdsbackup.repository.backends import FileBackend, S3Backend
from rdsbackup.repository.locks import LOCK_AD


@pytest.fixture
def repo(tmp_path):
    repo = Repository.init(f"file://{tmp_path}/repo", password="pw")
    with repo.begin_backup(source_id="s", engine="postgres") as writer:
        ref = writer.add_stream("t", [random.Random(1).randbytes(300_000)], profile="table")
        writer.commit({"streams": {"t": ref}})
    return repo


def flip(path: pathlib.Path, position: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[position] ^= 0x01
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("where", ["id", "version", "format", "a quote"])
def test_a_flipped_byte_in_config_is_reported_as_a_damaged_config(repo, tmp_path, where):
    path = tmp_path / "repo" / "config"
    text = path.read_text()
    position = {"id": text.index('"id"') + 8, "version": text.index('"version"') + 11,
                "format": text.index("rdsbackup-repository"), "a quote": text.index('"created"')}[where]
    flip(path, position)
    with pytest.raises(RepositoryDamaged, match=r"config object of .* is damaged"):
        Repository.open(repo.url, password="pw")


def test_something_that_is_not_a_config_is_still_not_a_repository(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "config").write_text('{"hello": 1}')
    with pytest.raises(UnsupportedFormatVersion, match="not an rdsbackup repository"):
        Repository.open(f"file://{tmp_path}/x", password="pw")


@pytest.mark.parametrize("damage", ["flipped byte", "field removed", "not json"])
def test_a_damaged_key_object_is_named_not_mistaken_for_a_wrong_passphrase(repo, tmp_path, damage):
    [key_path] = (tmp_path / "repo" / "keys").iterdir()
    doc = json.loads(key_path.read_text())
    if damage == "flipped byte":
        flip(key_path, key_path.read_text().index("wrapped_master_key") + 25)
    elif damage == "field removed":
        del doc["wrapped_master_key"]
        key_path.write_text(json.dumps(doc))
    else:
        key_path.write_text("{not json")
    with pytest.raises(RepositoryDamaged, match=f"key object keys/{key_path.name} of .* is damaged") as excinfo:
        Repository.open(repo.url, password="pw")
    assert "KeyError" not in str(excinfo.value)


def test_the_wrong_passphrase_is_still_called_that(repo):
    with pytest.raises(WrongRepositoryKey, match=r"wrong repository passphrase$"):
        Repository.open(repo.url, password="not it")


def test_an_unreadable_lock_is_named_by_prune_and_removed(repo):
    repo.backend.put("locks/" + "ef" * 16, b"garbage")
    result = repo.prune()
    assert any("unreadable lock object locks/" + "ef" * 16 in w for w in result["warnings"])
    assert list(repo.backend.list("locks/")) == []


def test_a_lock_that_is_valid_json_but_not_an_object_counts_as_damage(repo):
    repo.backend.put("locks/" + "aa" * 16, repo._keys.seal(b"[1, 2]", LOCK_AD))
    with repo.begin_backup(source_id="s", engine="postgres", lock_wait=0) as writer:
        writer.commit({})


@pytest.fixture
def silent_endpoint():
    """A TCP endpoint that accepts connections and never answers (a hung S3 proxy)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_an_s3_endpoint_that_never_answers_fails_within_the_bound_and_says_so(silent_endpoint, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", silent_endpoint)
    monkeypatch.setenv("RDSBACKUP_S3_CONNECT_TIMEOUT", "1")
    monkeypatch.setenv("RDSBACKUP_S3_READ_TIMEOUT", "1")
    monkeypatch.setenv("RDSBACKUP_S3_MAX_ATTEMPTS", "2")
    backend = S3Backend("bucket", "repo")
    assert backend.timeouts.bound == 2 * (1 + 1) + 20
    started = time.monotonic()
    with pytest.raises(RepositoryError) as excinfo:
        list(backend.list("index/"))
    elapsed = time.monotonic() - started
    assert elapsed < backend.timeouts.bound
    message = str(excinfo.value)
    assert "2 attempt(s)" in message and "read timeout 1 s" in message and "gave up within 24 s" in message
    assert "index/" in message


def test_the_cli_fails_a_hung_s3_listing_with_one_line(silent_endpoint, monkeypatch, capsys):
    monkeypatch.setenv("AWS_ENDPOINT_URL", silent_endpoint)
    for name in ("RDSBACKUP_S3_CONNECT_TIMEOUT", "RDSBACKUP_S3_READ_TIMEOUT"):
        monkeypatch.setenv(name, "0.5")
    monkeypatch.setenv("RDSBACKUP_S3_MAX_ATTEMPTS", "1")
    assert cli.main(["list", "--repo", "s3://bucket/repo"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 attempt(s)" in err and "config" in err


def test_bad_timeout_settings_are_refused_by_name(monkeypatch):
    monkeypatch.setenv("RDSBACKUP_S3_READ_TIMEOUT", "soon")
    with pytest.raises(RepositoryError, match="RDSBACKUP_S3_READ_TIMEOUT"):
        S3Backend("bucket", "repo")


class FullDisk(FileBackend):
    """A filesystem with `capacity` bytes: a write that does not fit fails as ENOSPC does."""

    def __init__(self, root: str, capacity: int):
        super().__init__(root)
        self.capacity = capacity

    def used(self) -> int:
        return sum(p.stat().st_size for p in pathlib.Path(self.root).rglob("*") if p.is_file())

    def put(self, key, data):
        if self.used() + len(data) > self.capacity:
            raise RepositoryError(f"cannot write {key} in {self.url}: No space left on device")
        super().put(key, data)


def test_prune_with_disk_full_frees_a_completely_full_disk(tmp_path, monkeypatch, capsys):
    url = f"file://{tmp_path}/repo"
    repo = Repository.init(url, password="pw")
    refs = {}
    for seed in range(3):
        with repo.begin_backup(source_id=f"s{seed}", engine="postgres") as writer:
            refs[seed] = writer.add_stream("t", [random.Random(seed).randbytes(400_000)], profile="table")
            writer.commit({"streams": {"t": refs[seed]}})
    repo.forget(keep_last=0, source_id="s0")
    repo.forget(keep_last=0, source_id="s1")
    full = FullDisk(str(tmp_path / "repo"), 0)
    full.capacity = full.used()  # not one more byte
    monkeypatch.setattr("rdsbackup.repository.repository.backend_for", lambda _url: full)
    with pytest.raises(RepositoryError, match="No space left"):
        Repository.open(url, password="pw").prune()  # the lock itself cannot be written
    before = full.used()
    monkeypatch.setenv("RDSBACKUP_PASSWORD", "pw")
    assert cli.main(["prune", "--repo", url, "--disk-full", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["prune"]
    assert result["packs_deleted"] == 2 and full.used() < before
    assert any("lack of space" in w for w in result["warnings"])
    reopened = Repository.open(url, password="pw")
    assert b"".join(reopened.open_stream(refs[2])) == random.Random(2).randbytes(400_000)
    assert reopened.verify(read_data=True)["errors"] == []
