"""Per-table digests of the COPY stream, computed while it streams into the repository (no extra scan).

A restore point records, per table, the row count and a digest of the rows exactly as COPY wrote them
under the pinned session settings (`settings.data_session_settings`) and the session's time zone. A
restore test recomputes both from a restored database (`validate.py`) and names every table that
differs. Tables streamed in key order get a SHA-256 of the stream; tables without a key (or streamed
in physical order) get an order-independent digest, the sum of each row's 128-bit BLAKE2b, because a
restore does not keep their physical order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

import psycopg

ORDERED = "sha256"
UNORDERED = "rowsum-blake2b128"
_MODULUS = 1 << 128


class TableDigest:
    """Fed the COPY text block by block; `value` is ``"<kind>:<hex>"``."""

    def __init__(self, ordered: bool):
        self.kind = ORDERED if ordered else UNORDERED
        self._sha = hashlib.sha256() if ordered else None
        self._sum = 0
        self._rest = b""

    def update(self, block: bytes) -> None:
        if self._sha is not None:
            self._sha.update(block)
            return
        # COPY text ends every row with a newline (newlines inside values are escaped)
        rows = (self._rest + block).split(b"\n")
        self._rest = rows.pop()
        total = self._sum
        for row in rows:
            total += int.from_bytes(hashlib.blake2b(row, digest_size=16).digest(), "big")
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
