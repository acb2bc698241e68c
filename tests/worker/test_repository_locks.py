"""Concurrent backups into one repository, and prune against running backups (locks)."""

from __future__ import annotations

import json
import random
import threading
import time

import pytest
from rdsbackup.errors import LockLost, RepositoryLocked
from rdsbackup.repository import Repository
from rdsbackup.repository.locks import LOCK_AD


def data_of(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture
def url(tmp_path):
    url = f"file://{tmp_path}/repo"
    Repository.init(url, password="pw")
    return url


def test_concurrent_backups_into_one_repository_are_both_restorable(url):
    shared = data_of(1, 3_000_000)
    results: dict[str, tuple[str, dict, bytes]] = {}
    barrier = threading.Barrier(2)

    def run(source_id: str, seed: int):
        repo = Repository.open(url, password="pw")  # a separate process would have its own
        data = shared + data_of(seed, 2_000_000)
        with repo.begin_backup(source_id=source_id, engine="postgres") as writer:
            barrier.wait()
            ref = writer.add_stream("t", (data[i : i + 65536] for i in range(0, len(data), 65536)), profile="table")
            barrier.wait()
            results[source_id] = (writer.commit({"streams": {"t": ref}}), ref, data)

    threads = [threading.Thread(target=run, args=(f"db{i}", 10 + i)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2
    repo = Repository.open(url, password="pw")
    assert {rp["source_id"] for rp in repo.list_restore_points()} == {"db0", "db1"}
    for _rp_id, ref, data in results.values():
        assert b"".join(repo.open_stream(ref)) == data
    assert repo.verify(read_data=True)["errors"] == []
    # Forget one, prune: the other still restores completely.
    repo.forget(keep_last=0, source_id="db0")
    repo.prune()
    _, ref, data = results["db1"]
    assert b"".join(Repository.open(url, password="pw").open_stream(ref)) == data
    assert repo.verify(read_data=True)["errors"] == []


def test_prune_refuses_to_run_while_a_backup_holds_its_lock(url):
    repo = Repository.open(url, password="pw")
    with repo.begin_backup(source_id="old", engine="postgres") as writer:
        old_ref = writer.add_stream("t", [data_of(2, 1_000_000)], profile="table")
        writer.commit({"streams": {"t": old_ref}})

    backup_repo = Repository.open(url, password="pw")
    backup_repo.lock_ttl = 4.0  # refreshed every ~0.7 s while the backup runs (bound 2 s: room for a busy CI)
    with backup_repo.begin_backup(source_id="new", engine="postgres") as writer:
        # The running backup dedups against the old restore point's chunks...
        ref = writer.add_stream("t", [data_of(2, 1_000_000) + data_of(3, 500_000)], profile="table")
        other = Repository.open(url, password="pw")
        assert other.forget(keep_last=0, source_id="old")
        time.sleep(4.5)  # longer than the lock's lifetime: only the refresh keeps it alive
        # ...so prune, which would now delete those chunks, must not run.
        with pytest.raises(RepositoryLocked, match="backup of new"):
            other.prune()
        rp_id = writer.commit({"streams": {"t": ref}})
    assert b"".join(Repository.open(url, password="pw").open_stream(ref)) == data_of(2, 1_000_000) + data_of(3, 500_000)
    other.prune()  # the lock is gone now
    reopened = Repository.open(url, password="pw")
    assert b"".join(reopened.open_stream(ref)) == data_of(2, 1_000_000) + data_of(3, 500_000)
    assert reopened.verify(rp_id, read_data=True)["errors"] == []


def test_backup_waits_for_prune_and_fails_clearly_if_it_does_not_end(url):
    repo = Repository.open(url, password="pw")
    from rdsbackup.repository.locks import Lock

    prune_lock = Lock(repo.backend, repo._keys, "exclusive", owner="prune").acquire()
    try:
        with pytest.raises(RepositoryLocked, match="locked by prune"):
            repo.begin_backup(source_id="s", engine="postgres", lock_wait=0.0)
    finally:
        prune_lock.release()
    with repo.begin_backup(source_id="s", engine="postgres", lock_wait=0.0) as writer:
        writer.commit({})


def test_a_crashed_process_lock_expires_and_prune_removes_it(url):
    repo = Repository.open(url, password="pw")
    stale = {"kind": "backup", "owner": "crashed worker", "created": "2020-01-01T00:00:00Z", "expires": time.time() - 5}
    repo.backend.put("locks/" + "ab" * 16, repo._keys.seal(json.dumps(stale).encode(), LOCK_AD))
    result = repo.prune()
    assert result["stale_locks_removed"] == 1
    assert list(repo.backend.list("locks/")) == []


def test_lock_is_released_when_the_backup_ends_either_way(url):
    repo = Repository.open(url, password="pw")
    with repo.begin_backup(source_id="s", engine="postgres") as writer:
        assert len(list(repo.backend.list("locks/"))) == 1
        writer.commit({})
    assert list(repo.backend.list("locks/")) == []
    with pytest.raises(RuntimeError), repo.begin_backup(source_id="s", engine="postgres"):
        raise RuntimeError("boom")
    assert list(repo.backend.list("locks/")) == []


def test_an_unreadable_lock_object_blocks_nothing_and_prune_removes_it(url):
    repo = Repository.open(url, password="pw")
    repo.backend.put("locks/" + "cd" * 16, b"not a sealed lock")
    with repo.begin_backup(source_id="s", engine="postgres", lock_wait=0.0) as writer:
        writer.commit({})
    assert repo.prune()["stale_locks_removed"] == 1
    assert list(repo.backend.list("locks/")) == []


def test_a_backup_whose_lock_could_not_be_refreshed_does_not_commit(url, monkeypatch):
    from rdsbackup.repository import locks

    repo = Repository.open(url, password="pw")
    repo.lock_ttl = 0.6
    real_write = locks.Lock._write
    calls = {"n": 0}

    def failing_refresh(self):
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError("network unreachable")
        real_write(self)

    monkeypatch.setattr(locks.Lock, "_write", failing_refresh)
    with pytest.raises(LockLost, match="not refreshed"), repo.begin_backup(source_id="s", engine="postgres") as w:
        ref = w.add_stream("t", [data_of(4, 100_000)], profile="table")
        time.sleep(0.8)  # a prune could have started: the lock expired unrefreshed
        w.commit({"streams": {"t": ref}})
    assert repo.list_restore_points() == []


def test_concurrent_backups_through_one_repository_object(url):
    repo = Repository.open(url, password="pw")
    refs: dict[int, dict] = {}

    def run(i: int):
        with repo.begin_backup(source_id=f"db{i}", engine="postgres") as writer:
            refs[i] = writer.add_stream("t", [data_of(20 + i, 1_500_000)], profile="table")
            writer.commit({"streams": {"t": refs[i]}})

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(repo.list_restore_points()) == 3
    for i, ref in refs.items():
        assert b"".join(repo.open_stream(ref)) == data_of(20 + i, 1_500_000)
