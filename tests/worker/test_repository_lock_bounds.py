"""Locks that cannot be outlived: a holder paused past the refresh bound stops without committing, prune
never deletes packs a lock holder may still commit, restore and verify hold shared locks, lock waits
are reported and bounded. A short lock lifetime ($RDSBACKUP_LOCK_LIFETIME) keeps the pauses short."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

import boto3
import pytest
from rdsbackup import cli
from rdsbackup.errors import RepositoryLocked
from rdsbackup.repository import Repository
from rdsbackup.repository.locks import LOCK_AD

from tests.support import moto_server

moto_server_url = moto_server.moto_server_url
moto_endpoint = moto_server.moto_endpoint

# A backup in its own process: stores a stream, says so (a file), waits for the test's "go" (a file),
# then commits. The test pauses it (SIGSTOP) in between, as a frozen container would be.
HOLDER = textwrap.dedent("""
    import os, random, sys, time
    from rdsbackup.repository import Repository
    url, ready, go = sys.argv[1:4]
    repo = Repository.open(url, password="pw")
    with repo.begin_backup(source_id="paused", engine="postgres") as writer:
        ref = writer.add_stream("t", [random.Random(7).randbytes(10_000_000)], profile="bulk")
        writer.uploader.wait()  # its first packs are in the repository
        open(ready, "w").close()
        while not os.path.exists(go):
            time.sleep(0.02)
        print(writer.commit({"streams": {"t": ref}}))
""")


def wait_for(path, child, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@pytest.fixture(params=["file", "s3"])
def url(request, tmp_path):
    if request.param == "file":
        url = f"file://{tmp_path}/repo"
    else:
        request.getfixturevalue("moto_endpoint")
        bucket = f"locks-{os.urandom(4).hex()}"
        boto3.client("s3").create_bucket(Bucket=bucket)
        url = f"s3://{bucket}/repo"
    Repository.init(url, password="pw")
    return url


def test_a_backup_paused_past_the_refresh_bound_writes_no_restore_point(url, tmp_path, monkeypatch):
    lifetime = 4.0  # stale after 4 s; the holder must refresh within 2 s (room for a busy machine)
    env = {**os.environ, "RDSBACKUP_LOCK_LIFETIME": str(lifetime)}
    ready, go = tmp_path / "ready", tmp_path / "go"
    child = subprocess.Popen([sys.executable, "-c", HOLDER, url, str(ready), str(go)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(ready, child)
        os.kill(child.pid, signal.SIGSTOP)  # paused: no refresh from here on
        time.sleep(lifetime + 0.5)
        monkeypatch.setenv("RDSBACKUP_LOCK_LIFETIME", str(lifetime))
        repo = Repository.open(url, password="pw")
        # The paused backup's lock is stale, so prune runs; the packs it uploaded are not taken from
        # under it (its lock object is still there).
        pruned = repo.prune()
        assert pruned["young_packs_kept"] >= 1
        assert list(repo.backend.list("data/"))
        os.kill(child.pid, signal.SIGCONT)
        go.touch()
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGCONT)
            child.kill()
            child.wait()
    assert child.returncode == 1, (out, err)
    assert "LockLost" in err and "not refreshed" in err and "bound" in err
    assert Repository.open(url, password="pw").list_restore_points() == []


def test_a_short_pause_within_the_bound_is_survived(url, tmp_path):
    env = {**os.environ, "RDSBACKUP_LOCK_LIFETIME": "6"}  # bound 3 s, refresh every 1 s
    ready, go = tmp_path / "ready", tmp_path / "go"
    child = subprocess.Popen([sys.executable, "-c", HOLDER, url, str(ready), str(go)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(ready, child)
    os.kill(child.pid, signal.SIGSTOP)
    time.sleep(1.2)
    os.kill(child.pid, signal.SIGCONT)
    go.touch()
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    [rp] = Repository.open(url, password="pw").list_restore_points()
    assert rp["id"] == out.strip()


def test_prune_keeps_unindexed_packs_written_after_the_oldest_lock_and_deletes_them_later(tmp_path):
    url = f"file://{tmp_path}/repo"
    repo = Repository.init(url, password="pw")
    stale = {"kind": "backup", "owner": "paused worker", "created": "2020-01-01T00:00:00Z",
             "created_ts": time.time() - 10, "expires": time.time() - 5, "host": "elsewhere", "pid": 1}
    repo.backend.put("locks/" + "ab" * 16, repo._keys.seal(json.dumps(stale).encode(), LOCK_AD))
    repo.backend.put("data/cd/" + "cd" * 16, b"an uncommitted pack of the paused backup")
    first = repo.prune()
    assert first["young_packs_kept"] == 1 and first["stale_locks_removed"] == 1
    assert list(repo.backend.list("data/"))
    second = repo.prune()  # the stale lock is gone: nothing can commit that pack any more
    assert second["packs_deleted"] == 1 and list(repo.backend.list("data/")) == []


def test_verify_holds_a_shared_lock_that_keeps_prune_out(tmp_path):
    url = f"file://{tmp_path}/repo"
    repo = Repository.init(url, password="pw")
    with repo.begin_backup(source_id="s", engine="postgres") as writer:
        ref = writer.add_stream("t", [random.Random(3).randbytes(500_000)], profile="table")
        writer.commit({"streams": {"t": ref}})
    verifying = Repository.open(url, password="pw")
    entered, release = threading.Event(), threading.Event()
    real_get = verifying.backend.get

    def slow_get(key):
        if key.startswith("data/"):
            entered.set()
            release.wait(30)
        return real_get(key)

    verifying.backend.get = slow_get
    result = {}
    thread = threading.Thread(target=lambda: result.update(verifying.verify(read_data=True)))
    thread.start()
    try:
        assert entered.wait(30)
        with pytest.raises(RepositoryLocked, match="verify"):
            Repository.open(url, password="pw").prune()
    finally:
        release.set()
        thread.join()
    assert result["errors"] == []
    Repository.open(url, password="pw").prune()  # the lock went with the verify


def test_restore_command_holds_a_shared_restore_lock(tmp_path, monkeypatch):
    url = f"file://{tmp_path}/repo"
    Repository.init(url, password="pw")
    monkeypatch.setenv("RDSBACKUP_PASSWORD", "pw")
    monkeypatch.setenv("DBPW", "x")
    seen = {}

    def fake_restore(repo, rp_id, info, **kwargs):
        with pytest.raises(RepositoryLocked, match="restore of 0123456789abcdef"):
            Repository.open(url, password="pw").prune()
        seen["locks"] = [doc["kind"] for _k, doc in __import__("rdsbackup.repository.locks", fromlist=["x"])
                         .read_locks(repo.backend, repo._keys)]
        return {"databases": [], "warnings": []}

    import rdsbackup.postgres as postgres

    monkeypatch.setattr(postgres, "restore_postgres", fake_restore)
    code = cli.main(["restore", "postgres", "--repo", url, "--restore-point", "0123456789abcdef", "--host", "h",
                     "--user", "u", "--password-env", "DBPW"])
    assert code == 0 and seen["locks"] == ["restore"]
    assert list(Repository.open(url, password="pw").backend.list("locks/")) == []


def hold_exclusive(url: str, seconds: float) -> threading.Timer:
    """An exclusive lock held by "another host" for `seconds` (cancel the timer and release to end early)."""
    lock = Repository.open(url, password="pw").take_lock("exclusive", "prune on another host")
    timer = threading.Timer(seconds, lock.release)
    timer.lock = lock
    timer.start()
    return timer


def test_waiting_for_a_lock_is_reported_on_stderr_and_in_json_and_bounded(tmp_path, monkeypatch, capsys):
    url = f"file://{tmp_path}/repo"
    Repository.init(url, password="pw")
    monkeypatch.setenv("RDSBACKUP_PASSWORD", "pw")

    holder = hold_exclusive(url, 60.0)
    started = time.monotonic()
    code = cli.main(["verify", "--repo", url, "--lock-wait", "0.5", "--json"])
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 1 and elapsed < 10
    assert "waiting up to 0 s" in err or "waiting up to 1 s" in err
    assert "prune on another host" in err and "locked by prune on another host" in err and "--lock-wait" in err
    holder.cancel()
    holder.lock.release()

    holder2 = hold_exclusive(url, 1.0)
    code = cli.main(["verify", "--repo", url, "--lock-wait", "30", "--json"])
    captured = capsys.readouterr()
    holder2.join()
    assert code == 0
    assert "waiting up to 30 s for the lock" in captured.err
    [event] = json.loads(captured.out)["lock_waits"]
    assert event["holder"] == "prune on another host" and event["wait_seconds"] == 30


def test_forget_takes_its_lock_before_it_forgets_anything(tmp_path, monkeypatch, capsys):
    url = f"file://{tmp_path}/repo"
    repo = Repository.init(url, password="pw")
    with repo.begin_backup(source_id="s", engine="postgres") as writer:
        writer.commit({})
    monkeypatch.setenv("RDSBACKUP_PASSWORD", "pw")
    with repo.begin_backup(source_id="running", engine="postgres"):
        code = cli.main(["forget", "--repo", url, "--keep-last", "1", "--lock-wait", "0"])
        assert code == 1 and "locked by backup of running" in capsys.readouterr().err
        code = cli.main(["forget", "--repo", url, "--restore-point", repo.list_restore_points()[0]["id"]])
        assert code == 1
    assert len(repo.list_restore_points()) == 1  # nothing was forgotten
