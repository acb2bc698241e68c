"""Packs: sealed blocks concatenated into objects of ~8 MiB, one PUT each, uploaded by background
threads while chunking goes on. A pack has no header: the index says where each block starts, and
every block is a self-contained sealed object (so prune can move blocks between packs unchanged)."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

from rdsbackup.errors import BackupAborted
from rdsbackup.repository.backends import Backend
from rdsbackup.repository.index import Index, pack_key

PACK_TARGET = 8 * 1024 * 1024


class Stats:
    """Counters of what a Repository wrote since it was opened."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.objects_written = 0
        self.bytes_written = 0
        self.puts = 0

    def record(self, size: int) -> None:
        with self.lock:
            self.objects_written += 1
            self.bytes_written += size
            self.puts += 1

    def as_dict(self) -> dict:
        return {"objects_written": self.objects_written, "bytes_written": self.bytes_written, "puts": self.puts}


class Uploader:
    """Writes objects on background threads; at most `max_pending` objects wait in memory, so a fast
    producer blocks instead of growing the heap. The first failure is kept and re-raised to producers."""

    def __init__(self, backend: Backend, stats: Stats, *, threads: int = 2, max_pending: int = 1):
        self.backend = backend
        self.stats = stats
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rdsbackup-upload")
        self._slots = threading.BoundedSemaphore(max_pending + threads)
        self._futures: list = []
        self._futures_lock = threading.Lock()
        self.error: BaseException | None = None

    def check(self) -> None:
        if self.error is not None:
            raise BackupAborted(f"backup aborted: {self.error}") from self.error

    def submit(self, key: str, data: bytes | bytearray) -> None:
        self.check()
        self._slots.acquire()
        try:
            future = self._pool.submit(self._put, key, data)
        except BaseException:
            self._slots.release()
            raise
        with self._futures_lock:
            self._futures = [f for f in self._futures if not f.done()]
            self._futures.append(future)

    def _put(self, key: str, data: bytes | bytearray) -> None:
        try:
            if self.error is None:
                self.backend.put(key, data)
                self.stats.record(len(data))
        except BaseException as exc:
            if self.error is None:
                self.error = exc
        finally:
            self._slots.release()

    def wait(self) -> None:
        with self._futures_lock:
            futures = list(self._futures)
        for f in futures:
            f.result()
        self.check()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class Packer:
    """Collects sealed blocks from every stream of a backup into packs."""

    def __init__(self, index: Index, uploader: Uploader, *, target: int = PACK_TARGET):
        self.index = index
        self.uploader = uploader
        self.target = target
        self.lock = threading.Lock()
        self.new_packs: list[bytes] = []
        self._buf: bytearray | None = None
        self._pack_no = -1
        self._pack_id = b""

    def add_block(self, block_no: int, sealed: bytes, raw_len: int) -> None:
        self.uploader.check()
        full = None
        with self.lock:
            if self._buf is None:
                self._pack_id = os.urandom(16)
                with self.index.lock:
                    self._pack_no = self.index.add_pack(self._pack_id)
                self._buf = bytearray()
            offset = len(self._buf)
            self._buf += sealed
            self.index.set_block(block_no, self._pack_no, offset, len(sealed), raw_len)
            if len(self._buf) >= self.target:
                full = self._take()
        if full is not None:
            self.uploader.submit(*full)

    def _take(self) -> tuple[str, bytearray] | None:
        if not self._buf:
            return None
        data = self._buf  # handed over, never written again
        self.new_packs.append(self._pack_id)
        key = pack_key(self._pack_id)
        self._buf = None
        return key, data

    def flush(self) -> None:
        with self.lock:
            last = self._take()
        if last is not None:
            self.uploader.submit(*last)
        self.uploader.wait()
