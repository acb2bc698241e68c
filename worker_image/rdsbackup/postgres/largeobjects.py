"""Large objects, in our own small stream format (read with `lo_get`, written with `lo_put`, in
pieces, so memory stays bounded whatever their size).

Stream format, version 1: the magic `RDSBLO1\\n`, then per large object a record
`u32 header length | header (JSON: oid, owner, grants, comment, and `labels` — its security labels as
{provider, label} — when it has any) | pieces`, each piece `u32 length | bytes`, a zero-length piece
ending the object. Integers are big-endian. (`labels` came later; a header without it has none.)
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Iterator

import psycopg
from psycopg import sql

from .errors import RestoreFailed

MAGIC = b"RDSBLO1\n"
PIECE = 1 << 20
_U32 = struct.Struct(">I")


def dump_large_objects(conn: psycopg.Connection) -> Iterator[bytes]:
    """Every large object readable in the connection's current transaction, as the stream above."""
    yield MAGIC
    # A server-side cursor: millions of large objects must not be listed into memory at once.
    with conn.cursor(name="rdsbackup_large_objects") as cur:
        cur.execute(
            """
            SELECT l.oid, pg_get_userbyid(l.lomowner), obj_description(l.oid, 'pg_largeobject'),
                   ARRAY(SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee))
                                END || ' ' || a.privilege_type || CASE WHEN a.is_grantable THEN '+' ELSE '' END
                         FROM aclexplode(l.lomacl) a WHERE a.grantee <> l.lomowner),
                   ARRAY(SELECT json_build_object('provider', s.provider, 'label', s.label)::text
                         FROM pg_seclabel s WHERE s.objoid = l.oid AND s.classoid = 'pg_largeobject'::regclass
                         ORDER BY s.provider)
            FROM pg_largeobject_metadata l ORDER BY l.oid
            """
        )
        with conn.cursor() as reader:
            for oid, owner, comment, grants, labels in cur:
                fields = {"oid": oid, "owner": owner, "comment": comment, "grants": list(grants)}
                if labels:
                    fields["labels"] = [json.loads(label) for label in labels]
                header = json.dumps(fields).encode()
                yield _U32.pack(len(header)) + header
                offset = 0
                while True:
                    data = reader.execute("SELECT lo_get(%s, %s, %s)", (oid, offset, PIECE)).fetchone()[0]
                    if data:
                        yield _U32.pack(len(data)) + bytes(data)
                        offset += len(data)
                    if len(data) < PIECE:
                        break
                yield _U32.pack(0)


class _Reader:
    """Exact-size reads over an iterator of byte blocks."""

    def __init__(self, blocks: Iterable[bytes]):
        self._it = iter(blocks)
        self._buf = bytearray()

    def read(self, n: int) -> bytes | None:
        while len(self._buf) < n:
            block = next(self._it, None)
            if block is None:
                if not self._buf:
                    return None
                raise ValueError("large-object stream ends in the middle of a record")
            self._buf += block
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def read_u32(self) -> int | None:
        raw = self.read(4)
        return None if raw is None else _U32.unpack(raw)[0]


def restore_large_objects(conn: psycopg.Connection, blocks: Iterable[bytes], *, set_owner: bool,
                          skip_owners: set[str] = frozenset(), security_labels: bool = True,
                          warn: Callable[[str], None], commit_every: int = 500) -> int:
    """Recreate the large objects of a stream (same OIDs, owner, grants, comments, security labels);
    returns how many. A grant the target refuses (a missing role) is skipped and named through `warn`.
    A security label the target refuses (its provider is not loaded there) fails the restore, as
    pg_restore fails the label of any other object: dropping it could unmask what it protects.
    `security_labels=False` leaves them out (`--no-security-labels`)."""
    reader = _Reader(blocks)
    if reader.read(len(MAGIC)) != MAGIC:
        raise ValueError("not a large-object stream of a known version")
    count = 0
    conn.execute("BEGIN")
    while (size := reader.read_u32()) is not None:
        header = json.loads(reader.read(size))
        oid = header["oid"]
        conn.execute("SELECT lo_create(%s)", (oid,))
        offset = 0
        while piece_len := reader.read_u32():
            data = reader.read(piece_len)
            conn.execute("SELECT lo_put(%s, %s, %s)", (oid, offset, data))
            offset += piece_len
        if set_owner and header["owner"] not in skip_owners:
            conn.execute(sql.SQL("ALTER LARGE OBJECT {} OWNER TO {}").format(
                sql.Literal(oid), sql.Identifier(header["owner"])))
        for grant in header["grants"]:
            grantee, privilege = grant.rsplit(" ", 1)
            option = " WITH GRANT OPTION" if privilege.endswith("+") else ""
            _or_warn(conn, sql.SQL(f"GRANT {privilege.rstrip('+')} ON LARGE OBJECT {int(oid)} TO {grantee}{option}"),
                     oid, warn)
        if header.get("comment") is not None:
            conn.execute(sql.SQL("COMMENT ON LARGE OBJECT {} IS {}").format(
                sql.Literal(oid), sql.Literal(header["comment"])))
        labels = header.get("labels", []) if security_labels else []
        for label in labels:
            stmt = sql.SQL("SECURITY LABEL FOR {} ON LARGE OBJECT {} IS {}").format(
                sql.Identifier(label["provider"]), sql.Literal(oid), sql.Literal(label["label"]))
            try:
                conn.execute(stmt)
            except psycopg.Error as exc:
                raise RestoreFailed(f"large object {oid}: {stmt.as_string(conn)} failed: "
                                    f"{' '.join(str(exc).split())}") from None
        count += 1
        if count % commit_every == 0:
            conn.execute("COMMIT")
            conn.execute("BEGIN")
    conn.execute("COMMIT")
    return count


def _or_warn(conn: psycopg.Connection, stmt: sql.Composable, oid: int, warn: Callable[[str], None]) -> None:
    """Run one statement of a large object's restore; if the server refuses it, undo just that
    statement and say so."""
    try:
        conn.execute("SAVEPOINT lo_statement")
        conn.execute(stmt)
        conn.execute("RELEASE SAVEPOINT lo_statement")
    except psycopg.Error as exc:
        conn.execute("ROLLBACK TO SAVEPOINT lo_statement")
        warn(f"large object {oid}: {stmt.as_string(conn)} failed: {' '.join(str(exc).split())}")
