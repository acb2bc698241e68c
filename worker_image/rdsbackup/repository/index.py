"""The index: which pack and block hold each chunk. Kept in memory as compact tables, stored as index
objects (one per backup, consolidated by prune).

Index object plaintext (little endian), sealed with associated data b"rdsbackup index":

    magic b"RBIX", u8 version (1)
    u32 P, then P pack ids (16 bytes each)
    u32 B, then B blocks:  u32 pack (0..P-1), u64 offset, u32 stored length, u32 raw length
    u32 C, then C chunks:  16-byte chunk id, u32 block (0..B-1), u32 offset in block, u32 length
"""

from __future__ import annotations

import struct
import threading

from rdsbackup.repository.crypto import CHUNK_ID_SIZE

MAGIC = b"RBIX"
INDEX_VERSION = 1
_BLOCK = struct.Struct("<IQII")
_CHUNK = struct.Struct("<16sIII")
_U32 = struct.Struct("<I")

# A chunk's location packs into one int: block number, offset in the block, length (24 bits each).
_SHIFT_BLOCK = 48
_SHIFT_OFFSET = 24
_MASK24 = (1 << 24) - 1


def pack_key(pack_id: bytes) -> str:
    h = pack_id.hex()
    return f"data/{h[:2]}/{h}"


def pack_id_from_key(key: str) -> bytes | None:
    name = key.rsplit("/", 1)[-1]
    try:
        pid = bytes.fromhex(name)
    except ValueError:
        return None
    return pid if len(pid) == 16 else None


class ChunkTable:
    """Chunk id -> packed location, in 24 bytes per chunk (a dict of bytes -> int costs ~130).

    Ids are keyed hashes, hence uniformly spread: their first two bytes pick one of 65536 buckets, a
    bucket is a bytearray of records (16-byte id, 8-byte location), searched with bytearray.find (C
    speed). Records are only appended, so a record's position stays valid: an id claimed by a backup
    (location CLAIMED until its block has a number and offset) is given its location in place.
    """

    RECORD = 24
    CLAIMED = (1 << 64) - 1

    def __init__(self) -> None:
        self._buckets = [bytearray() for _ in range(65536)]
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def _find(self, bucket: bytearray, cid: bytes) -> int:
        pos = bucket.find(cid)
        while pos > 0 and pos % 24:
            pos = bucket.find(cid, pos + 1)
        return pos

    def get(self, cid: bytes) -> int | None:
        """The location of `cid`, -1 if claimed but not yet placed, None if unknown."""
        bucket = self._buckets[(cid[0] << 8) | cid[1]]
        pos = self._find(bucket, cid)
        if pos < 0:
            return None
        loc = int.from_bytes(bucket[pos + 16 : pos + 24], "little")
        return -1 if loc == self.CLAIMED else loc

    def __contains__(self, cid: bytes) -> bool:
        return self._find(self._buckets[(cid[0] << 8) | cid[1]], cid) >= 0

    def add(self, cid: bytes, loc: int) -> None:
        """Add `cid` unless it is known (the first location stays: every indexed location is valid)."""
        bucket = self._buckets[(cid[0] << 8) | cid[1]]
        if self._find(bucket, cid) < 0:
            bucket += cid
            bucket += loc.to_bytes(8, "little")
            self._len += 1

    def get_many(self, ids: list[bytes]) -> list[int | None]:
        """`get` for a batch (the lookup inlined: one call per batch, not three per id)."""
        buckets = self._buckets
        claimed = self.CLAIMED
        out: list[int | None] = []
        for cid in ids:
            bucket = buckets[(cid[0] << 8) | cid[1]]
            pos = bucket.find(cid)
            while pos > 0 and pos % 24:
                pos = bucket.find(cid, pos + 1)
            if pos < 0:
                out.append(None)
                continue
            loc = int.from_bytes(bucket[pos + 16 : pos + 24], "little")
            out.append(-1 if loc == claimed else loc)
        return out

    def append_new(self, cid: bytes, loc: int) -> None:
        """Add `cid`, which the caller knows is not in the table (no lookup: an archive's own index,
        built once from ids that are distinct)."""
        bucket = self._buckets[(cid[0] << 8) | cid[1]]
        bucket += cid
        bucket += loc.to_bytes(8, "little")
        self._len += 1

    def claim_many(self, ids: list[bytes]) -> list[tuple[int, bytearray, int]]:
        """`claim` for a batch: (position in `ids`, bucket, record offset) of each id claimed. An id
        repeated within the batch is claimed once."""
        buckets = self._buckets
        claimed = []
        for i, cid in enumerate(ids):
            bucket = buckets[(cid[0] << 8) | cid[1]]
            pos = bucket.find(cid)
            while pos > 0 and pos % 24:
                pos = bucket.find(cid, pos + 1)
            if pos < 0:
                claimed.append((i, bucket, len(bucket)))
                bucket += cid
                bucket += b"\xff\xff\xff\xff\xff\xff\xff\xff"
        self._len += len(claimed)
        return claimed

    def items(self):
        for bucket in self._buckets:
            for pos in range(0, len(bucket), 24):
                loc = int.from_bytes(bucket[pos + 16 : pos + 24], "little")
                if loc != self.CLAIMED:
                    yield bytes(bucket[pos : pos + 16]), loc

    def values(self):
        for _cid, loc in self.items():
            yield loc


class Index:
    """In-memory index. `chunks` maps chunk id -> packed location; `blocks[n]` is (pack number, offset,
    stored length, raw length) or None while the block is still being written."""

    def __init__(self) -> None:
        self.packs: list[bytes] = []
        self.pack_numbers: dict[bytes, int] = {}
        self.blocks: list[tuple[int, int, int, int] | None] = []
        self.chunks = ChunkTable()
        self.lock = threading.Lock()
        # Chunks left out because their only known location is damaged (damage registry): id -> problem.
        self.damaged_chunks: dict[bytes, str] = {}

    # --- building ---

    def add_pack(self, pack_id: bytes) -> int:
        n = self.pack_numbers.get(pack_id)
        if n is None:
            n = self.pack_numbers[pack_id] = len(self.packs)
            self.packs.append(pack_id)
        return n

    def new_block(self) -> int:
        with self.lock:
            self.blocks.append(None)
            return len(self.blocks) - 1

    def set_block(self, block_no: int, pack_no: int, offset: int, stored: int, raw: int) -> None:
        self.blocks[block_no] = (pack_no, offset, stored, raw)

    @staticmethod
    def location(block_no: int, offset: int, length: int) -> int:
        return (block_no << _SHIFT_BLOCK) | (offset << _SHIFT_OFFSET) | length

    @staticmethod
    def unpack_location(loc: int) -> tuple[int, int, int]:
        return loc >> _SHIFT_BLOCK, (loc >> _SHIFT_OFFSET) & _MASK24, loc & _MASK24

    # --- (de)serialisation ---

    def load(self, plain: bytes, damage=None) -> None:
        """Merge one index object's plaintext into this index. Chunks in a block that `damage` (a
        DamageRegistry) records as damaged are left out (and kept in `damaged_chunks`)."""
        if plain[:4] != MAGIC or plain[4] != INDEX_VERSION:
            raise ValueError("not an rdsbackup index object of version 1")
        pos = 5
        (n_packs,) = _U32.unpack_from(plain, pos)
        pos += 4
        pack_map = []
        for i in range(n_packs):
            pack_map.append(self.add_pack(bytes(plain[pos + 16 * i : pos + 16 * i + 16])))
        pos += 16 * n_packs
        (n_blocks,) = _U32.unpack_from(plain, pos)
        pos += 4
        base = len(self.blocks)
        end = pos + _BLOCK.size * n_blocks
        self.blocks.extend(
            (pack_map[p], off, stored, raw) for p, off, stored, raw in _BLOCK.iter_unpack(plain[pos:end])
        )
        bad: dict[int, str] = {}
        if damage:
            for local, (pack_no, off, _stored, _raw) in enumerate(self.blocks[base:]):
                problem = damage.problem(self.packs[pack_no], off)
                if problem is not None:
                    bad[local] = f"pack {pack_key(self.packs[pack_no])}: {problem}"
        pos = end
        (n_chunks,) = _U32.unpack_from(plain, pos)
        pos += 4
        end = pos + _CHUNK.size * n_chunks
        if end != len(plain):
            raise ValueError("index object has trailing or missing bytes")
        add = self.chunks.add
        if bad:
            for cid, block, off, length in _CHUNK.iter_unpack(plain[pos:end]):
                if block in bad:
                    self.damaged_chunks[cid] = bad[block]
                else:
                    add(cid, ((base + block) << _SHIFT_BLOCK) | (off << _SHIFT_OFFSET) | length)
            return
        for cid, block, off, length in _CHUNK.iter_unpack(plain[pos:end]):
            add(cid, ((base + block) << _SHIFT_BLOCK) | (off << _SHIFT_OFFSET) | length)


CHUNK_RECORD = _CHUNK


def encode_new_entries(index: Index, block_base: int, chunk_records: bytearray) -> bytes:
    """Serialise what one backup added: its blocks (numbers from `block_base` on, all of them its own)
    with their packs, and `chunk_records` (CHUNK_RECORD entries, blocks numbered from block_base)."""
    pack_local: dict[int, int] = {}
    packs: list[bytes] = []
    blocks = bytearray()
    for entry in index.blocks[block_base:]:
        if entry is None:
            raise ValueError("a block of this backup was never stored")
        pack_no, boff, stored, raw = entry
        lp = pack_local.get(pack_no)
        if lp is None:
            lp = pack_local[pack_no] = len(packs)
            packs.append(index.packs[pack_no])
        blocks += _BLOCK.pack(lp, boff, stored, raw)
    out = bytearray(MAGIC)
    out.append(INDEX_VERSION)
    out += _U32.pack(len(packs))
    for p in packs:
        out += p
    out += _U32.pack(len(index.blocks) - block_base)
    out += blocks
    out += _U32.pack(len(chunk_records) // _CHUNK.size)
    out += chunk_records
    return bytes(out)


def encode_index(index: Index, chunk_ids) -> bytes:
    """Serialise the entries of `chunk_ids` (with their blocks and packs) from `index`."""
    pack_local: dict[int, int] = {}
    block_local: dict[int, int] = {}
    packs: list[bytes] = []
    blocks = bytearray()
    chunks = bytearray()
    n_blocks = 0
    n_chunks = 0
    for cid in chunk_ids:
        loc = index.chunks.get(cid)
        if loc is None or loc < 0:
            continue
        block_no, off, length = Index.unpack_location(loc)
        lb = block_local.get(block_no)
        if lb is None:
            entry = index.blocks[block_no]
            if entry is None:
                raise ValueError("block not yet stored")
            pack_no, boff, stored, raw = entry
            lp = pack_local.get(pack_no)
            if lp is None:
                lp = pack_local[pack_no] = len(packs)
                packs.append(index.packs[pack_no])
            lb = block_local[block_no] = n_blocks
            n_blocks += 1
            blocks += _BLOCK.pack(lp, boff, stored, raw)
        chunks += _CHUNK.pack(cid, lb, off, length)
        n_chunks += 1
    out = bytearray(MAGIC)
    out.append(INDEX_VERSION)
    out += _U32.pack(len(packs))
    for p in packs:
        out += p
    out += _U32.pack(n_blocks)
    out += blocks
    out += _U32.pack(n_chunks)
    out += chunks
    return bytes(out)


assert CHUNK_ID_SIZE == 16
