"""Per-table digests of the COPY stream, computed while it streams into the repository (no extra scan).

A restore point records, per table, the row count and a digest of the rows exactly as COPY wrote them
under the pinned session settings (`settings.data_session_settings`) and the session's time zone. A
restore test recomputes both from a restored database (`validate.py`) and names every table that
differs. Tables streamed in key order get a cryptographic hash of the stream; tables without a key
(or streamed in physical order) get an order-independent digest, the sum of each row's 128-bit BLAKE2b, because a
restore does not keep their physical order.

The ordered digest is BLAKE3 (`blake3:<hex>`): as collision-resistant as SHA-256 and three times
faster, which matters because every byte of every table goes through it during the backup (SHA-256
cost a full backup of the benchmark database ~7% more worker CPU). Restore points written before
record `sha256:<hex>`; they are re-digested with SHA-256.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

import psycopg

try:
    import blake3
except ImportError:  # an environment installed before the dependency (pyproject.toml) came: SHA-256, slower
    blake3 = None

ORDERED = "blake3" if blake3 is not None else "sha256"
UNORDERED = "rowsum-blake2b128"
# Stream hashes by kind: what a backup writes now, and what older restore points recorded.
_STREAM_HASHES = {"sha256": hashlib.sha256, **({"blake3": blake3.blake3} if blake3 is not None else {})}
_MODULUS = 1 << 128
_ROW_HASH = hashlib.blake2b(digest_size=16)  # each row's 128-bit BLAKE2b (unordered digests)


def digest_kind(value: str) -> str:
    """The kind of a recorded digest (`"<kind>:<hex>"`)."""
    return value.partition(":")[0]


class TableDigest:
    """Fed the COPY text block by block; `value` is ``"<kind>:<hex>"``. `kind` (a recorded digest's,
    to recompute it) overrides what `ordered` chooses."""

    def __init__(self, ordered: bool, *, kind: str | None = None):
        self.kind = kind or (ORDERED if ordered else UNORDERED)
        if self.kind != UNORDERED and self.kind not in _STREAM_HASHES:
            raise ValueError(f"unknown table digest kind {self.kind!r}: this rdsbackup knows "
                             f"{', '.join([*_STREAM_HASHES, UNORDERED])}")
        self._sha = _STREAM_HASHES[self.kind]() if self.kind != UNORDERED else None
        self._sum = 0
        self._rest = b""

    def update(self, block: bytes) -> None:
        if self._sha is not None:
            self._sha.update(block)
            return
        # COPY text ends every row with a newline (newlines inside values are escaped)
        rows = (self._rest + bytes(block)).split(b"\n")  # bytes(): a memoryview too (no copy of bytes)
        self._rest = rows.pop()
        total = self._sum
        # copying an initialised state costs less than setting one up per row (a third of the time here)
        new_hash, from_bytes = _ROW_HASH.copy, int.from_bytes
        for row in rows:
            h = new_hash()
            h.update(row)
            total += from_bytes(h.digest(), "big")
        self._sum = total % _MODULUS

    @property
    def value(self) -> str:
        if self._sha is not None:
            return f"{self.kind}:{self._sha.hexdigest()}"
        if self._rest:  # a stream always ends with a newline; a partial row counts as one
            self.update(b"\n")
        return f"{self.kind}:{self._sum:032x}"


def digesting(blocks: Iterable[bytes], digest: TableDigest, counts: dict) -> Iterator[bytes]:
    """Pass the blocks on unchanged, feeding `digest`; at the end `counts["digest"]` holds its value."""
    for block in blocks:
        digest.update(block)
        yield block
    counts["digest"] = digest.value


def session_time_zone(conn: psycopg.Connection) -> str:
    """The TimeZone the COPY sessions wrote `timestamptz` values in (the validation sets the same)."""
    return conn.execute("SELECT current_setting('TimeZone')").fetchone()[0]
