"""Packs: sealed blocks concatenated into objects of ~8 MiB, one PUT each, uploaded by background
threads while chunking goes on. Every block is a self-contained sealed object (so prune can move blocks
between packs unchanged); the index says where each block and chunk is.

Since format version 2 a pack also describes itself, so that `repair index` can rebuild the index from
the packs alone: after its blocks comes a sealed *trailer* listing them and their chunks, then an
8-byte footer:

    pack    = block ... block  sealed trailer  u32 length of the sealed trailer  "RBPK"
    trailer = "RBPT" u8 version (1)  u32 B
              B x (u64 offset, u32 stored length, u32 raw length, u32 chunks in the block)
              then every block's chunks in order: (16-byte id, u32 writer's block number (unused),
              u32 offset in block plaintext, u32 length)

The trailer is sealed with associated data "rdsbackup pack " + the pack id (16 bytes), so a trailer
cannot be passed off as another pack's. Blocks start at offset 0, as in version 1 packs (which end
with their last block): readers that go through the index never look at the trailer.
"""

from __future__ import annotations

import os
import struct
import threading
from concurrent.futures import ThreadPoolExecutor

from rdsbackup.errors import BackupAborted, MissingObject
from rdsbackup.repository.backends import Backend
from rdsbackup.repository.crypto import AuthenticationFailed, Keys
from rdsbackup.repository.index import CHUNK_RECORD, Index, pack_key

PACK_TARGET = 8 * 1024 * 1024
TRAILER_AD = b"rdsbackup pack "
TRAILER_MAGIC = b"RBPT"
TRAILER_VERSION = 1
FOOTER_MAGIC = b"RBPK"
_FOOTER = struct.Struct("<I4s")
_TRAILER_BLOCK = struct.Struct("<QIII")
FOOTER_SIZE = _FOOTER.size


class TrailerMissing(Exception):
    """The pack has no trailer (a format 1 pack) or its footer is unreadable."""


def encode_trailer(keys: Keys, pack_id: bytes, blocks: list[tuple[int, int, int, bytes]]) -> bytes:
    """The sealed trailer and footer of a pack whose blocks are (offset, stored, raw, chunk records)."""
    head = bytearray(TRAILER_MAGIC)
    head.append(TRAILER_VERSION)
    head += struct.pack("<I", len(blocks))
    for offset, stored, raw, records in blocks:
        head += _TRAILER_BLOCK.pack(offset, stored, raw, len(records) // CHUNK_RECORD.size)
    for *_, records in blocks:
        head += records
    # Chunk ids are keyed hashes: nothing to compress.
    sealed = keys.seal(head, TRAILER_AD + pack_id, compress=False)
    return sealed + _FOOTER.pack(len(sealed), FOOTER_MAGIC)


def trailer_length(footer: bytes, pack_size: int) -> int:
    """The sealed trailer's length from a pack's last FOOTER_SIZE bytes (TrailerMissing if none)."""
    if len(footer) != FOOTER_SIZE:
        raise TrailerMissing("the pack is shorter than a footer")
    length, magic = _FOOTER.unpack(footer)
    if magic != FOOTER_MAGIC or length + FOOTER_SIZE > pack_size or length == 0:
        raise TrailerMissing("no pack footer (a format 1 pack, or the end of the pack is damaged)")
    return length


def decode_trailer(keys: Keys, pack_id: bytes, sealed: bytes) -> list[tuple[int, int, int, list[tuple]]]:
    """[(offset, stored, raw, [(chunk id, offset in block, length), ...]), ...]. AuthenticationFailed
    or ValueError if the trailer is damaged."""
    plain = keys.open(sealed, TRAILER_AD + pack_id)
    if plain[:4] != TRAILER_MAGIC or plain[4] != TRAILER_VERSION:
        raise ValueError("not a pack trailer of version 1")
    (n_blocks,) = struct.unpack_from("<I", plain, 5)
    pos = 9
    heads = list(_TRAILER_BLOCK.iter_unpack(plain[pos : pos + _TRAILER_BLOCK.size * n_blocks]))
    if len(heads) != n_blocks:
        raise ValueError("pack trailer is cut short")
    pos += _TRAILER_BLOCK.size * n_blocks
    out = []
    for offset, stored, raw, n in heads:
        end = pos + CHUNK_RECORD.size * n
        if end > len(plain):
            raise ValueError("pack trailer is cut short")
        chunks = [(cid, off, length) for cid, _b, off, length in CHUNK_RECORD.iter_unpack(plain[pos:end])]
        out.append((offset, stored, raw, chunks))
        pos = end
    if pos != len(plain):
        raise ValueError("pack trailer has trailing bytes")
    return out


def read_trailer(backend: Backend, keys: Keys, pack_id: bytes, size: int) -> list[tuple[int, int, int, list[tuple]]]:
    """Read and open a pack's trailer with two ranged GETs (footer, trailer). TrailerMissing when the
    pack has none; AuthenticationFailed/ValueError when it is damaged."""
    key = pack_key(pack_id)
    length = trailer_length(backend.get_range(key, size - FOOTER_SIZE, FOOTER_SIZE), size)
    sealed = backend.get_range(key, size - FOOTER_SIZE - length, length)
    return decode_trailer(keys, pack_id, sealed)


# Blocks of one pack that lie close together are read in one ranged GET: across gaps of up to
# READ_GAP bytes (cheaper to read than another request), up to READ_SPAN bytes in all.
READ_GAP = 256 * 1024
READ_SPAN = 16 * 1024 * 1024


def ranged_reads(blocks: list, order: list[int]):
    """Group block numbers (sorted by pack and offset; `blocks` is an index's block table) into ranged
    reads: yields (pack number, start, end, the block numbers the range holds)."""
    i = 0
    while i < len(order):
        pack_no, start, stored, _ = blocks[order[i]]
        j, end = i + 1, start + stored
        while j < len(order):
            p2, o2, s2, _ = blocks[order[j]]
            if p2 != pack_no or o2 - end > READ_GAP or o2 + s2 - start > READ_SPAN:
                break
            end = max(end, o2 + s2)
            j += 1
        yield pack_no, start, end, order[i:j]
        i = j


def read_blocks(backend: Backend, index: Index, order: list[int], missing):
    """Read the sealed blocks `order` (sorted by pack and offset) in ranged GETs: yields (pack key, block
    number, its sealed bytes: a memoryview, shorter than the index says if the pack is truncated). A
    missing pack raises `missing(pack key, the block numbers it should hold)`."""
    for pack_no, start, end, run in ranged_reads(index.blocks, order):
        key = pack_key(index.packs[pack_no])
        try:
            data = backend.get_range(key, start, end - start)
        except MissingObject as exc:
            raise missing(key, run) from exc
        view = memoryview(data)
        for block_no in run:
            _, off, size, _ = index.blocks[block_no]
            yield key, block_no, view[off - start : off - start + size]


__all__ = ["AuthenticationFailed", "TrailerMissing", "decode_trailer", "encode_trailer", "ranged_reads",
           "read_blocks", "read_trailer"]


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
    """Collects sealed blocks from every stream of a backup into packs, each closed by its trailer."""

    def __init__(self, index: Index, uploader: Uploader, keys: Keys, *, target: int = PACK_TARGET):
        self.index = index
        self.uploader = uploader
        self.keys = keys
        self.target = target
        self._blocks: list[tuple[int, int, int, bytes]] = []
        self.lock = threading.Lock()
        self.new_packs: list[bytes] = []
        self._buf: bytearray | None = None
        self._pack_no = -1
        self._pack_id = b""

    def add_block(self, block_no: int, sealed: bytes, raw_len: int, records: bytes) -> None:
        """Append a sealed block; `records` are its chunks' CHUNK_RECORDs (for the pack trailer)."""
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
            self._blocks.append((offset, len(sealed), raw_len, records))
            self.index.set_block(block_no, self._pack_no, offset, len(sealed), raw_len)
            if len(self._buf) >= self.target:
                full = self._take()
        if full is not None:
            self.uploader.submit(*full)

    def _take(self) -> tuple[str, bytearray] | None:
        if not self._buf:
            return None
        data = self._buf  # handed over, never written again
        data += encode_trailer(self.keys, self._pack_id, self._blocks)
        self._blocks = []
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
