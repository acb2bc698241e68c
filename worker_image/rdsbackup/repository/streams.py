"""Streams: a byte stream becomes chunks (deduplicated by id), new chunks go into blocks, and the list
of the stream's chunk ids is itself stored as a chunked stream, level upon level, until it fits in one
root chunk. The root chunk's id names the stream.

Root chunk = b"RBL" || u8 level || chunk ids (16 bytes each). Level 0: the ids are the data chunks.
Level k > 0: the ids are the chunks of a stream whose bytes are the concatenated ids of level k-1.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from rdsbackup.errors import CorruptObject, MissingObject
from rdsbackup.repository.chunking import PROFILES, ChunkingProfile, chunk_batches
from rdsbackup.repository.crypto import CHUNK_ID_SIZE, AuthenticationFailed, Keys
from rdsbackup.repository.damage import record_damage
from rdsbackup.repository.index import CHUNK_RECORD, Index, pack_key
from rdsbackup.repository.packs import read_blocks

ROOT_MAGIC = b"RBL"
# A level's ids go into one root chunk while they are at most this many bytes (256 ids).
ROOT_MAX_IDS = 4096
BLOCK_AD = b"rdsbackup block"
LIST_PROFILE = PROFILES["table"]  # only its block size applies to lists
GROUP_THRESHOLD = 32
GROUP_MAX = 64
_LOCATION = struct.Struct("<Q")
# Decrypted blocks kept per stream being read: a day's new chunks of a table sit in blocks that its
# older chunks' blocks interleave with, ~20 blocks apart; 16 MiB holds 128 table blocks.
DATA_CACHE = 16 * 1024 * 1024
# A stream read in parts is divided among at least this many entries of its chunk lists per part.
PART_ENTRIES = 64
# Bytes of a stream read, decrypted and verified in one go (one helper-thread task).
WINDOW_BYTES = 4 * 1024 * 1024


class StreamWriter:
    """Push side of one stream (or of one level of its chunk list): `add_batch` chunks, `finish`
    stores the chunk lists and returns the root chunk id."""

    def __init__(self, session, prof: ChunkingProfile, *, level: int = 0, sealed: list | None = None):
        self.session = session
        # Futures of this stream's blocks being sealed (shared with its list levels): their results
        # are the stored sizes.
        self.sealed: list = [] if sealed is None else sealed
        self.prof = prof
        self.level = level
        self.keys: Keys = session.keys
        self.index: Index = session.index
        self.block = bytearray()
        self.block_no = -1
        self.block_records = bytearray()  # the open block's chunk records, for its pack's trailer
        self.ids = bytearray()  # this level's chunk ids not yet handed to the list stream
        self.child: _ListSink | None = None
        self.size = 0
        self.chunks = 0

    def add_batch(self, view: memoryview, ends: list[int]) -> None:
        """Add the chunks that tile `view` (chunk i ends at ends[i])."""
        ids = self.keys.chunk_ids(view, ends)
        self.size += ends[-1] if ends else 0
        self.chunks += len(ends)
        self.ids += b"".join(ids)
        self._store(view, ends, ids)
        if len(self.ids) >= 65536:
            if self.child is None:
                self.child = _ListSink(self.session, level=self.level + 1, sealed=self.sealed)
            self.child.feed(bytes(self.ids))
            self.ids = bytearray()

    def add_stored_ids(self, ids: bytes) -> None:
        """Append ids of chunks already stored (e.g. by a copy that moved whole blocks) to this level's
        list, as `add_batch` does for the chunks it stores."""
        self.ids += ids
        if len(self.ids) >= 65536:
            if self.child is None:
                self.child = _ListSink(self.session, level=self.level + 1, sealed=self.sealed)
            self.child.feed(bytes(self.ids))
            self.ids = bytearray()

    def _store(self, view: memoryview, ends: list[int], ids: list[bytes]) -> None:
        """Put the chunks whose ids the index does not know yet into this stream's open block.

        This runs once per chunk of every stream (~2 KiB each), so the loop does the least it can per
        chunk: a run of new chunks that lie one after another in `view` (every chunk of a first
        backup) is copied into the block in one piece, and the block's index records join the
        backup's (`new_records`) once, when it closes."""
        index = self.index
        with index.lock:
            # Claim new ids at once so parallel streams dedup against them (they get their location
            # below), and a chunk repeated within the batch is stored once.
            missing = index.chunks.claim_many(ids)
        if not missing:
            return
        pack_record = CHUNK_RECORD.pack
        set_location = _LOCATION.pack_into
        limit = self.prof.block_size
        starts = [0]
        starts += ends
        block = self.block
        block_records = self.block_records
        block_no = self.block_no
        rel = block_no - self.session.block_base
        high = block_no << 48
        off = len(block)
        run_start = run_end = 0  # the bytes of `view` still to copy into the block
        for i, bucket, pos in missing:
            start = starts[i]
            end = ends[i]
            if start != run_end:
                block += view[run_start:run_end]
                run_start = start
            run_end = end
            if block_no < 0:
                block_no = self.block_no = index.new_block()
                rel = block_no - self.session.block_base
                high = block_no << 48
            length = end - start
            set_location(bucket, pos + 16, high | (off << 24) | length)
            block_records += pack_record(ids[i], rel, off, length)
            off += length
            if off >= limit:
                block += view[run_start:run_end]
                run_start = run_end
                self.close_block()
                block = self.block
                block_records = self.block_records
                block_no = -1
                off = 0
        block += view[run_start:run_end]

    def close_block(self) -> None:
        """Seal the open block and hand it to the packer. Called also when the stream failed: a
        parallel stream may already dedup against the block's chunks."""
        if self.block_no < 0:
            return
        raw, block_no, records = self.block, self.block_no, self.block_records
        self.block = bytearray()
        self.block_records = bytearray()
        self.block_no = -1
        self.session.new_records += records
        self.sealed.append(self.session.seal_block(block_no, raw, records))

    def new_bytes(self) -> int:
        """Stored bytes of the blocks this stream wrote (waits for their sealing)."""
        return sum(f.result() for f in self.sealed)

    def finish_lists(self, *, close: bool = True) -> tuple[int, bytes]:
        """Store this level's remaining ids; return (level of the root, the root's ids). The open block
        stays open with `close=False` (the root chunk joins the stream's last block)."""
        if close:
            self.close_block()
        level, ids = self.level, bytes(self.ids)
        self.ids = bytearray()
        if self.child is not None:
            self.child.feed(ids)
            level, ids = self.child.finish()
        if len(ids) > ROOT_MAX_IDS:
            sink = _ListSink(self.session, level=level + 1, sealed=self.sealed)
            sink.feed(ids)
            level, ids = sink.finish()
        return level, ids

    def finish(self) -> bytes:
        """Store the chunk lists and the root chunk; return the root chunk's id."""
        level, ids = self.finish_lists(close=False)
        root = ROOT_MAGIC + bytes((level,)) + ids
        root_id = self.keys.chunk_id(root)
        self._store(memoryview(root), [len(root)], [root_id])
        self.close_block()
        return root_id


class _ListSink:
    """A chunk-id list stored as a stream of its own (level >= 1).

    Its chunks are groups of whole ids, cut after an id whose last byte is below GROUP_THRESHOLD (ids
    are keyed hashes, so that is content-defined and 1 in 8) or after GROUP_MAX ids. Small groups
    matter: scattered changes touch ~4% of a table's chunks a day, so nearly every 2 KiB piece of its
    list would change, while 1 in 4 groups of ~8 ids does."""

    def __init__(self, session, level: int, sealed: list):
        self.level = level
        self.writer = StreamWriter(session, LIST_PROFILE, level=level, sealed=sealed)
        self.pending = bytearray()

    def feed(self, data: bytes) -> None:
        self.pending += data
        if len(self.pending) >= 65536:
            self._cut(final=False)

    def _cut(self, *, final: bool) -> None:
        buf = self.pending
        ends = []
        last = 0
        for i, tail in enumerate(buf[CHUNK_ID_SIZE - 1 :: CHUNK_ID_SIZE]):
            if tail < GROUP_THRESHOLD or i + 1 - last >= GROUP_MAX:
                last = i + 1
                ends.append(last * CHUNK_ID_SIZE)
        if final and last * CHUNK_ID_SIZE < len(buf):
            ends.append(len(buf))
        if not ends:
            return
        view = memoryview(buf)
        self.pending = bytearray(view[ends[-1] :])
        self.writer.add_batch(view[: ends[-1]], ends)

    def finish(self) -> tuple[int, bytes]:
        if self.pending:
            self._cut(final=True)
        return self.writer.finish_lists()


def write_stream(session, source, prof: ChunkingProfile) -> dict:
    """Store one stream; return its ref (a JSON-able dict)."""
    writer = StreamWriter(session, prof)
    try:
        for view, ends in chunk_batches(source, prof):
            writer.add_batch(view, ends)
    except BaseException:
        writer.close_block()
        raise
    root_id = writer.finish()
    return {
        "blob": root_id.hex(),
        "size": writer.size,
        "chunks": writer.chunks,
        "new_bytes": writer.new_bytes(),
        "profile": prof.name,
    }


# --- reading -------------------------------------------------------------------------------------


class StreamReader:
    """Reads chunks by id, verifying each: blocks are authenticated on decryption and every chunk's
    keyed hash must equal its id. Decrypted blocks are cached (LRU, bounded in bytes)."""

    def __init__(self, repo, *, restore_point: str | None = None, cache_bytes: int = 4 * 1024 * 1024):
        self.repo = repo
        self.keys: Keys = repo._keys
        self.index: Index = repo._index()
        self.backend = repo.backend
        self.restore_point = restore_point
        self.cache: OrderedDict[int, bytes] = OrderedDict()
        self.cache_bytes = cache_bytes
        self.cached = 0
        self._reloaded = False

    def _where(self) -> str:
        return f" (restore point {self.restore_point})" if self.restore_point else ""

    def locate(self, cid: bytes) -> tuple[int, int, int]:
        loc = self.index.chunks.get(cid)
        if (loc is None or loc < 0) and self._reload_index():
            loc = self.index.chunks.get(cid)
        if loc is None or loc < 0:
            problem = self.index.damaged_chunks.get(cid)
            if problem is not None:
                raise CorruptObject(
                    f"chunk {cid.hex()} is damaged ({problem}){self._where()}: the next backup of the source "
                    "stores it again if the source still has it; `rdsbackup repair points` marks the "
                    "restore points that need it",
                    object_name=f"chunk {cid.hex()}",
                    restore_point=self.restore_point,
                )
            bad_index = getattr(self.repo, "bad_index_objects", {})
            hint = f" ({next(iter(bad_index.values()))})" if bad_index else ""
            raise MissingObject(
                f"chunk {cid.hex()} is not in the index of {self.backend.url}{self._where()}{hint}",
                object_name=f"chunk {cid.hex()}",
                restore_point=self.restore_point,
            )
        return Index.unpack_location(loc)

    def _record_damage(self, block_no: int, *, whole_pack: bool, problem: str) -> None:
        """Remember damage found while reading (best effort), so later backups store the chunks again."""
        pack_no, offset, _stored, _raw = self.index.blocks[block_no]
        entry = {"pack": self.index.packs[pack_no].hex(), "offset": None if whole_pack else offset,
                 "problem": problem}
        record_damage(self.backend, self.keys, [entry], "restore" if self.restore_point else "read")

    def _reload_index(self) -> bool:
        """An unknown id may come from a backup committed since the index was loaded: reload once."""
        if self._reloaded:
            return False
        self._reloaded = True
        self.index = self.repo._index(reload=True)
        self.cache.clear()  # block numbers change with a reload
        self.cached = 0
        return True

    def _remember(self, block_no: int, plain: bytes) -> None:
        self.cache[block_no] = plain
        self.cached += len(plain)
        while self.cached > self.cache_bytes and len(self.cache) > 1:
            _, old = self.cache.popitem(last=False)
            self.cached -= len(old)

    def _open_block(self, block_no: int, sealed: bytes) -> bytes:
        pack_no, offset, stored, raw = self.index.blocks[block_no]
        key = pack_key(self.index.packs[pack_no])
        if len(sealed) != stored:
            self._record_damage(block_no, whole_pack=False, problem="truncated")
            raise CorruptObject(
                f"pack {key} is truncated: block at offset {offset} is short{self._where()}",
                object_name=key,
                restore_point=self.restore_point,
            )
        try:
            return self.keys.open(sealed, BLOCK_AD, max_size=raw)
        except AuthenticationFailed as exc:
            self._record_damage(block_no, whole_pack=False, problem=f"corrupt: block failed authentication ({exc})")
            raise CorruptObject(
                f"pack {key} is corrupt: block at offset {offset} failed authentication ({exc}){self._where()}",
                object_name=key,
                restore_point=self.restore_point,
            ) from None

    def fetch_blocks(self, block_nos) -> None:
        """Bring the given blocks into the cache, reading adjacent blocks of a pack in one request."""
        blocks = self.index.blocks
        need = sorted({b for b in block_nos if b not in self.cache}, key=lambda b: blocks[b][:2])

        def missing(key: str, run: list[int]) -> MissingObject:
            self._record_damage(run[0], whole_pack=True, problem="missing")
            return MissingObject(f"pack {key} is missing from {self.backend.url}{self._where()}",
                                 object_name=key, restore_point=self.restore_point)

        for _key, block_no, sealed in read_blocks(self.backend, self.index, need, missing):
            self._remember(block_no, self._open_block(block_no, sealed))

    def read_chunk(self, cid: bytes, block_no: int, off: int, length: int) -> bytes:
        plain = self.cache.get(block_no)
        if plain is None:
            self.fetch_blocks([block_no])
            plain = self.cache[block_no]
        else:
            self.cache.move_to_end(block_no)
        data = plain[off : off + length]
        if len(data) != length or self.keys.chunk_id(data) != cid:
            raise self._chunk_damaged(cid, block_no)
        return data

    def _chunk_damaged(self, cid: bytes, block_no: int) -> CorruptObject:
        """Record that block `block_no` holds a chunk that does not match its id `cid`; the error to raise."""
        key = pack_key(self.index.packs[self.index.blocks[block_no][0]])
        self._record_damage(block_no, whole_pack=False, problem=f"corrupt: chunk {cid.hex()} does not match its id")
        return CorruptObject(
            f"chunk {cid.hex()} in pack {key} does not match its id{self._where()}",
            object_name=key,
            restore_point=self.restore_point,
        )

    def read_chunks(self, ids: list[bytes]) -> Iterator[bytes]:
        """Yield the data of `ids` in order, fetching their blocks in as few requests as possible."""
        locs = [self.locate(cid) for cid in ids]
        self.fetch_blocks([b for b, _, _ in locs])
        for cid, (b, off, length) in zip(ids, locs, strict=True):
            yield self.read_chunk(cid, b, off, length)

    def root(self, root_id: bytes) -> tuple[int, list[bytes]]:
        """The level and the ids held by the stream's root chunk."""
        b, off, length = self.locate(root_id)
        root = self.read_chunk(root_id, b, off, length)
        if root[:3] != ROOT_MAGIC or (len(root) - 4) % CHUNK_ID_SIZE:
            raise CorruptObject(
                f"chunk {root_id.hex()} is not a stream root{self._where()}",
                object_name=f"chunk {root_id.hex()}",
                restore_point=self.restore_point,
            )
        return root[3], [root[i : i + CHUNK_ID_SIZE] for i in range(4, len(root), CHUNK_ID_SIZE)]

    def iter_ids(self, root_id: bytes, *, every_chunk: bool = False) -> Iterator[bytes]:
        """Yield the data chunk ids of the stream whose root chunk is `root_id` (with `every_chunk`,
        also the root's and the chunk lists' own ids)."""
        for batch in self.iter_id_batches(root_id, every_chunk=every_chunk):
            yield from batch

    def iter_id_batches(self, root_id: bytes, *, every_chunk: bool = False) -> Iterator[list[bytes]]:
        """`iter_ids` in lists (a chunk list's worth at a time): for callers with work per id, it saves
        a generator hop per id and level."""
        level, ids = self.root(root_id)
        if every_chunk:
            yield [root_id]
        yield from self._expand(level, ids, every_chunk)

    def _level_below(self, ids: list[bytes]) -> list[bytes]:
        """The ids that the chunk lists `ids` hold (each list chunk holds whole ids)."""
        lower: list[bytes] = []
        for data in self.read_chunks(ids):
            if len(data) % CHUNK_ID_SIZE:
                raise CorruptObject(
                    f"a chunk list in {self.backend.url} ends in a partial id{self._where()}",
                    restore_point=self.restore_point,
                )
            lower += [data[k : k + CHUNK_ID_SIZE] for k in range(0, len(data), CHUNK_ID_SIZE)]
        return lower

    def _expand(self, level: int, ids: list[bytes], every_chunk: bool) -> Iterator[list[bytes]]:
        """The data chunk ids below `ids` (chunk lists of `level`), in lists."""
        if level == 0:
            yield ids
            return
        window = 256
        for i in range(0, len(ids), window):
            part = ids[i : i + window]
            if every_chunk:
                yield part
            yield from self._expand(level - 1, self._level_below(part), every_chunk)

    def read_window(self, items: list[tuple[bytes, int]]) -> bytearray:
        """The bytes of the chunks `items` ((id, location) pairs), each checked against its id."""
        self.fetch_blocks({loc >> 48 for _, loc in items})
        cache = self.cache
        out = bytearray()
        ends: list[int] = []  # where each chunk ends in `out`
        current = -1
        view = memoryview(b"")
        # Chunks written one after another sit one after another in a block: copied out as one run.
        run_start = run_end = 0
        for cid, loc in items:
            block_no = loc >> 48
            off = (loc >> 24) & 0xFFFFFF
            end = off + (loc & 0xFFFFFF)
            if block_no != current or off != run_end:
                out += view[run_start:run_end]
                if block_no != current:
                    plain = cache.get(block_no)
                    if plain is None:  # evicted by a window wider than the cache
                        self.fetch_blocks([block_no])
                        plain = cache[block_no]
                    else:
                        cache.move_to_end(block_no)
                    view = memoryview(plain)
                    current = block_no
                run_start = off
            if end > len(view):  # the location reaches past its block's end
                raise self._chunk_damaged(cid, block_no)
            run_end = end
            ends.append(len(out) + run_end - run_start)
        out += view[run_start:run_end]
        # Every chunk checked against its id in one pass over the window's bytes.
        with memoryview(out) as whole:
            ids = self.keys.chunk_ids(whole, ends)
        if ids != [cid for cid, _ in items]:
            cid, loc = next(item for item, got in zip(items, ids, strict=True) if item[0] != got)
            raise self._chunk_damaged(cid, loc >> 48)
        return out

    def read_streams(self, root_ids: list[bytes]) -> Iterator[bytearray]:
        """The bytes of each stream of `root_ids`, whole, in order, every chunk verified. For many small
        streams (a table of a few rows each): the blocks they are in are read together, in as few
        requests as their places in the packs allow (a few for hundreds of streams written one after
        another), where `iter_stream` costs two reads, two decryptions and a helper thread per stream.
        Every stream and its blocks are held in memory at once: meant for streams of at most a few
        hundred KiB each."""
        while True:
            reloaded = self._reloaded
            self._fetch_all(self.locate(rid)[0] for rid in root_ids)
            streams = []
            for rid in root_ids:
                level, ids = self.root(rid)
                if level:
                    ids = [cid for batch in self._expand(level, ids, False) for cid in batch]
                streams.append([(cid, self._location(cid)) for cid in ids])
            if self._reloaded == reloaded:
                break  # else the index was reloaded meanwhile: locations in its numbering, once more
        self._fetch_all(loc >> 48 for items in streams for _, loc in items)
        for items in streams:
            yield self.read_window(items)

    def _location(self, cid: bytes) -> int:
        loc = self.index.chunks.get(cid)
        if loc is None or loc < 0:
            self.locate(cid)  # reloads the index once, or raises MissingObject naming the chunk
            loc = self.index.chunks.get(cid)
        return loc

    def _fetch_all(self, block_nos) -> None:
        """Bring every block of `block_nos` into the cache at once, the cache grown to hold them all."""
        need = {b for b in block_nos if b not in self.cache}
        blocks = self.index.blocks
        self.cache_bytes = max(self.cache_bytes, self.cached + sum(blocks[b][3] for b in need))
        self.fetch_blocks(need)

    def _windows(self, ids: Iterator[bytes], window_bytes: int) -> Iterator[list[tuple[bytes, int]]]:
        get = self.index.chunks.get
        window: list[tuple[bytes, int]] = []
        size = 0
        for cid in ids:
            loc = get(cid)
            if loc is None or loc < 0:
                self.locate(cid)  # reloads the index once, or raises MissingObject naming the chunk
                get = self.index.chunks.get
                loc = get(cid)
            window.append((cid, loc))
            size += loc & 0xFFFFFF
            if size >= window_bytes:
                yield window
                window = []
                size = 0
        if window:
            yield window

    def _read_ahead(self, windows: Iterator[list[tuple[bytes, int]]]) -> Iterator[bytes]:
        """The bytes of each window; the next one is read, decrypted and verified on a helper thread
        while the caller consumes the current one."""
        data_reader = StreamReader(self.repo, restore_point=self.restore_point, cache_bytes=DATA_CACHE)
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rdsbackup-read")
        pending = None
        try:
            for window in windows:
                if self.index is not data_reader.index:  # reloaded: locations are in the new numbering
                    data_reader = StreamReader(self.repo, restore_point=self.restore_point, cache_bytes=DATA_CACHE)
                future = pool.submit(data_reader.read_window, window)
                if pending is not None:
                    yield pending.result()
                pending = future
            if pending is not None:
                yield pending.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def iter_stream(self, root_id: bytes, *, window_bytes: int = WINDOW_BYTES) -> Iterator[bytes]:
        """Yield the stream's bytes in pieces of about `window_bytes`."""
        yield from self._read_ahead(self._windows(self.iter_ids(root_id), window_bytes))

    def iter_part(self, root_id: bytes, part: int, parts: int, *, separator: bytes,
                  window_bytes: int = WINDOW_BYTES) -> Iterator[bytes]:
        """Yield part `part` of `parts` of a stream of records that each end with `separator` (one
        byte), so that the parts can be loaded side by side: the parts together are the stream, each
        record in exactly one of them.

        The entries of the chunk lists (the root's, or those of a lower level when the root has few)
        are divided evenly; part p starts just after the first separator at or after its first entry
        (part 0 at the start) and ends with the first separator at or after the next part's first
        entry, reading on into the next part's chunks as far as that. A part inside which no record
        starts is empty."""
        if len(separator) != 1 or not 0 <= part < parts:
            raise ValueError("a stream part needs a one-byte separator and 0 <= part < parts")
        level, entries = self.root(root_id)
        # The entries of one level cover very different amounts of data (a list chunk holds 1 to 64
        # ids, and that compounds level upon level): divide among many entries of a lower level.
        while level > 0 and len(entries) < PART_ENTRIES * parts:
            entries = self._level_below(entries)
            level -= 1
        # Rounded up: with fewer entries than parts, the first parts get them and the last are empty.
        start = -(-len(entries) * part // parts)
        end = -(-len(entries) * (part + 1) // parts)

        def ids(first: int, stop: int) -> Iterator[bytes]:
            for e in range(first, stop):
                for batch in self._expand(level, [entries[e]], False):
                    yield from batch

        seeking = part > 0
        for data in self._read_ahead(self._windows(ids(start, end), window_bytes)):
            if seeking:
                cut = data.find(separator)
                if cut < 0:
                    continue
                data = data[cut + 1 :]
                seeking = False
            if data:
                yield data
        if seeking:
            return  # no record starts in this part: the previous part reads on through it
        # Records are small next to a part: read the rest of the last one in small windows.
        for data in self._read_ahead(self._windows(ids(end, len(entries)), 64 * 1024)):
            cut = data.find(separator)
            if cut >= 0:
                yield data[: cut + 1]
                return
            yield data
