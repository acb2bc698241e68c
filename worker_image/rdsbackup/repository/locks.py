"""Lock objects: `locks/<id>`, sealed JSON {kind, owner, host, pid, created, expires}.

Kinds: "backup", "restore" and "verify" are shared (any number at once); "exclusive" (prune, forget,
repair, upgrade) conflicts with every other lock. Taking a lock = write it, then list the others: if a
live one conflicts, remove ours and fail (or wait and retry). Because each side writes before it looks,
at least one of two racing processes sees the other.

The numbers (see docs/repository-format.md, "Locks"), for a lifetime L (30 minutes by default):
- a holder rewrites its lock every L/6 (5 minutes);
- a lock not rewritten for L is stale: others ignore it, prune deletes it;
- a holder whose last successful refresh is older than L/2 (the refresh bound, 15 minutes) has *lost*
  its lock: it stops (a backup writes no manifest), because from L on a prune may have treated it as
  stale. The margin between L/2 and L covers clock skew between hosts and the time from the last check
  to the manifest write. So a pause (SIGSTOP, a frozen container, a long GC pause, a network outage)
  shorter than L/2 is survived; a longer one aborts the holder, and stale means twice that long.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from rdsbackup.errors import LockLost, MissingObject, RepositoryLocked
from rdsbackup.repository.crypto import AuthenticationFailed, Keys

LOCK_AD = b"rdsbackup lock"
LIFETIME_ENV = "RDSBACKUP_LOCK_LIFETIME"
# Far longer than any pause a holder survives (LIFETIME / 2), as restic does (30 minutes stale); a
# crashed holder on the same host is recognised at once (its pid is gone), one elsewhere after this.
DEFAULT_LIFETIME = 30 * 60.0
DEFAULT_TTL = DEFAULT_LIFETIME  # the name older callers use
SHARED_KINDS = ("backup", "restore", "verify", "archive")


def default_lifetime() -> float:
    """The lock lifetime: $RDSBACKUP_LOCK_LIFETIME seconds (tests shorten it), else 30 minutes."""
    text = os.environ.get(LIFETIME_ENV)
    if not text:
        return DEFAULT_LIFETIME
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{LIFETIME_ENV}={text!r} is not a number of seconds") from None
    if value <= 0:
        raise ValueError(f"{LIFETIME_ENV} must be positive, not {text!r}")
    return value


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def created_time(doc: dict) -> float | None:
    """When a lock was first taken (unix time), from its document."""
    value = doc.get("created_ts")
    if isinstance(value, int | float):
        return float(value)
    try:
        return datetime.strptime(str(doc.get("created")), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def _process_gone(doc: dict) -> bool:
    """A lock of a process on this host that no longer runs (a crash, kill -9) is stale at once."""
    if doc.get("host") != socket.gethostname():
        return False
    pid = doc.get("pid")
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def is_live(doc: dict, now: float | None = None) -> bool:
    now = time.time() if now is None else now
    return float(doc.get("expires", 0)) > now and not _process_gone(doc)


def read_locks(backend, keys: Keys) -> list[tuple[str, dict]]:
    """Every lock object: (key, document); an unreadable one has kind "unreadable" and expires 0."""
    out = []
    for key, _size in backend.list("locks/"):
        try:
            doc = json.loads(keys.open(backend.get(key), LOCK_AD))
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
        except MissingObject:
            continue  # released meanwhile
        except (AuthenticationFailed, ValueError) as exc:
            # Every lock holder has the repository key and writes atomically, so an unreadable lock
            # object is damage, not a live lock: it counts as expired (and prune removes it).
            doc = {"kind": "unreadable", "owner": f"unreadable lock object {key} ({exc})", "expires": 0}
        out.append((key, doc))
    return out


def describe_lock(doc: dict) -> str:
    return (f"{doc.get('owner')} ({doc.get('kind')} lock on {doc.get('host', '?')} pid {doc.get('pid', '?')}, "
            f"taken {doc.get('created', '?')}, stale after {_iso(float(doc.get('expires', 0)))} unless refreshed)")


class Lock:
    def __init__(self, backend, keys: Keys, kind: str, *, owner: str | None = None, ttl: float | None = None,
                 on_wait: Callable[[dict], None] | None = None):
        self.backend = backend
        self.keys = keys
        self.kind = kind
        self.ttl = default_lifetime() if ttl is None else ttl
        self.refresh_interval = self.ttl / 6
        self.refresh_bound = self.ttl / 2
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self.key = f"locks/{os.urandom(16).hex()}"
        self.created = time.time()
        self.expires = 0.0
        self.last_refresh = 0.0  # wall time at which the last successful write started
        self.lost: str | None = None
        self.on_wait = on_wait
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refresh_error: BaseException | None = None

    def _write(self) -> None:
        started = time.time()
        expires = started + self.ttl
        doc = {
            "kind": self.kind,
            "owner": self.owner,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "created": _iso(self.created),
            "created_ts": self.created,
            "expires": expires,
        }
        # rewritten in place on every refresh: the one mutable kind of object (backends.py)
        self.backend.replace(self.key, self.keys.seal(json.dumps(doc).encode(), LOCK_AD, compress=False))
        self.expires = expires
        self.last_refresh = started

    def _conflicts(self) -> list[dict]:
        now = time.time()
        found = []
        for key, doc in read_locks(self.backend, self.keys):
            if key == self.key or not is_live(doc, now):
                continue
            if self.kind == "exclusive" or doc.get("kind") == "exclusive":
                found.append(doc)
        return found

    def acquire(self, *, wait: float = 0.0, poll: float = 2.0) -> Lock:
        """Take the lock, waiting up to `wait` seconds for conflicting locks to go (RepositoryLocked
        after that, naming the holder). `on_wait` hears of every wait, with the holder and the bound."""
        started = time.monotonic()
        deadline = started + wait
        told: set[str] = set()
        while True:
            self._write()
            conflicts = self._conflicts()
            if not conflicts:
                break
            self.backend.delete(self.key)
            other = conflicts[0]
            if time.monotonic() >= deadline:
                waited = f" after waiting {time.monotonic() - started:.0f} s" if wait > 0 else ""
                raise RepositoryLocked(
                    f"repository {self.backend.url} is locked by {describe_lock(other)}{waited}; "
                    f"give --lock-wait SECONDS to wait longer"
                )
            holder = describe_lock(other)
            if self.on_wait is not None and holder not in told:
                told.add(holder)
                self.on_wait({"event": "waiting for lock", "repository": self.backend.url, "kind": self.kind,
                              "holder": other.get("owner"), "holder_kind": other.get("kind"),
                              "holder_host": other.get("host"), "holder_pid": other.get("pid"),
                              "holder_stale_after": _iso(float(other.get("expires", 0))),
                              "wait_seconds": wait,
                              "message": f"waiting up to {wait:.0f} s for the lock on {self.backend.url} "
                                         f"held by {holder}"})
            time.sleep(max(0.0, min(poll, deadline - time.monotonic())))
        self._thread = threading.Thread(target=self._refresh_loop, name="rdsbackup-lock", daemon=True)
        self._thread.start()
        return self

    def _refresh_loop(self) -> None:
        interval = max(self.refresh_interval, 0.02)
        while not self._stop.wait(interval):
            gap = time.time() - self.last_refresh
            if gap > self.refresh_bound:
                # Paused or cut off for longer than the bound: a prune may consider this lock stale.
                # Never refresh it again: the holder must stop.
                self._lose(gap)
                return
            try:
                self._write()
                self.refresh_error = None
            except Exception as exc:  # keep trying until the bound; check() reports it
                self.refresh_error = exc

    def _lose(self, gap: float) -> None:
        if self.lost is None:
            reason = f" (last refresh error: {self.refresh_error})" if self.refresh_error else ""
            self.lost = (f"the {self.kind} lock on {self.backend.url} was not refreshed for {gap:.1f} s, longer "
                         f"than the bound of {self.refresh_bound:.1f} s (lock lifetime {self.ttl:g} s): the "
                         f"process was paused or the repository unreachable, and a prune may have run "
                         f"meanwhile{reason}")

    def check(self) -> None:
        """Fail (LockLost) if a refresh came later than the bound: committing then could race a prune
        that saw no live lock."""
        gap = time.time() - self.last_refresh
        if gap > self.refresh_bound:
            self._lose(gap)
        if self.lost is not None:
            raise LockLost(self.lost)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        # A lock object left behind expires on its own; never mask the caller's error.
        with contextlib.suppress(Exception):
            self.backend.delete(self.key)
