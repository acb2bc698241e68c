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


class Index:
    """In-memory index. `chunks` maps chunk id -> packed location; `blocks[n]` is (pack number, offset,
    stored length, raw length) or None while the block is still being written."""

    def __init__(self) -> None:
        self.packs: list[bytes] = []
        self.pack_numbers: dict[bytes, int] = {}
        self.blocks: list[tuple[int, int, int, int] | None] = []
        self.chunks: dict[bytes, int] = {}
        self.lock = threading.Lock()

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

    def load(self, plain: bytes) -> None:
        """Merge one index object's plaintext into this index."""
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
        pos = end
        (n_chunks,) = _U32.unpack_from(plain, pos)
        pos += 4
        end = pos + _CHUNK.size * n_chunks
        if end != len(plain):
            raise ValueError("index object has trailing or missing bytes")
        chunks = self.chunks
        for cid, block, off, length in _CHUNK.iter_unpack(plain[pos:end]):
            chunks[cid] = ((base + block) << _SHIFT_BLOCK) | (off << _SHIFT_OFFSET) | length


def encode_index(index: Index, chunk_ids, *, pack_filter=None) -> bytes:
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
        if loc is None:
            continue
        block_no, off, length = Index.unpack_location(loc)
        lb = block_local.get(block_no)
        if lb is None:
            entry = index.blocks[block_no]
            if entry is None:
                raise ValueError("block not yet stored")
            pack_no, boff, stored, raw = entry
            if pack_filter is not None and not pack_filter(pack_no):
                continue
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
