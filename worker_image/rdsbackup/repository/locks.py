"""Lock objects: `locks/<id>`, sealed JSON {kind, owner, host, pid, created, expires}.

A backup holds a shared "backup" lock; prune holds an "exclusive" lock. Taking a lock = write it, then
list the others: if a live one conflicts, remove ours and fail (or wait and retry). Because each side
writes before it looks, at least one of two racing processes sees the other. A lock is live until its
expiry; a running backup refreshes it well before then, so only a crashed process's lock goes stale.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from datetime import UTC, datetime

from rdsbackup.errors import MissingObject, RepositoryLocked
from rdsbackup.repository.crypto import AuthenticationFailed, Keys

LOCK_AD = b"rdsbackup lock"
# Short enough that a crashed holder (a killed worker) stops blocking others within minutes; a live
# holder refreshes every third of it.
DEFAULT_TTL = 5 * 60.0


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_locks(backend, keys: Keys) -> list[tuple[str, dict]]:
    """Every lock object: (key, document); an unreadable one has kind "unreadable" and expires 0."""
    out = []
    for key, _size in backend.list("locks/"):
        try:
            doc = json.loads(keys.open(backend.get(key), LOCK_AD))
        except MissingObject:
            continue  # released meanwhile
        except (AuthenticationFailed, ValueError):
            # Every lock holder has the repository key and writes atomically, so an unreadable lock
            # object is damage, not a live lock: it counts as expired (and prune removes it).
            doc = {"kind": "unreadable", "owner": f"unreadable lock object {key}", "expires": 0}
        out.append((key, doc))
    return out


class Lock:
    def __init__(self, backend, keys: Keys, kind: str, *, owner: str | None = None, ttl: float = DEFAULT_TTL):
        self.backend = backend
        self.keys = keys
        self.kind = kind
        self.ttl = ttl
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self.key = f"locks/{os.urandom(16).hex()}"
        self.created = time.time()
        self.expires = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refresh_error: BaseException | None = None

    def _write(self) -> None:
        expires = time.time() + self.ttl
        doc = {
            "kind": self.kind,
            "owner": self.owner,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "created": _iso(self.created),
            "expires": expires,
        }
        self.backend.put(self.key, self.keys.seal(json.dumps(doc).encode(), LOCK_AD, compress=False))
        self.expires = expires

    def _conflicts(self) -> list[dict]:
        now = time.time()
        found = []
        for key, doc in read_locks(self.backend, self.keys):
            if key == self.key or float(doc.get("expires", 0)) <= now:
                continue
            if self.kind == "exclusive" or doc.get("kind") == "exclusive":
                found.append(doc)
        return found

    def acquire(self, *, wait: float = 0.0, poll: float = 2.0) -> Lock:
        deadline = time.monotonic() + wait
        while True:
            self._write()
            conflicts = self._conflicts()
            if not conflicts:
                break
            self.backend.delete(self.key)
            if time.monotonic() >= deadline:
                other = conflicts[0]
                raise RepositoryLocked(
                    f"repository {self.backend.url} is locked by {other.get('owner')} "
                    f"({other.get('kind')} lock, expires {_iso(float(other.get('expires', 0)))})"
                )
            time.sleep(poll)
        self._thread = threading.Thread(target=self._refresh_loop, name="rdsbackup-lock", daemon=True)
        self._thread.start()
        return self

    def _refresh_loop(self) -> None:
        interval = max(self.ttl / 3, 0.05)
        while not self._stop.wait(interval):
            try:
                self._write()
                self.refresh_error = None
            except Exception as exc:  # keep trying until the lock would expire; check() reports it
                self.refresh_error = exc

    def check(self) -> None:
        """Fail if the lock may have expired (a refresh failed for too long): committing then could
        race a prune that saw no live lock."""
        if time.time() >= self.expires - min(60.0, self.ttl / 10):
            raise RepositoryLocked(
                f"the {self.kind} lock on {self.backend.url} expired before the backup finished "
                f"(last refresh error: {self.refresh_error})"
            )

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        # A lock object left behind expires on its own; never mask the caller's error.
        with contextlib.suppress(Exception):
            self.backend.delete(self.key)
