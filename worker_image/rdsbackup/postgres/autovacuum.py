"""Autovacuum held off the large tables a restore loads, until their indexes and constraints exist.

Right after a table is loaded, autovacuum finds it full of new rows and starts on it, taking a core
away from the load; then the restore's `ALTER TABLE ... ADD CONSTRAINT` waits for the lock until the
server cancels autovacuum (deadlock_timeout, 1 s by default), once per table. `pg_restore` suffers
both; measured on the benchmark database, post-data took 2.6 to 3.4 s depending on whether it did.

So `autovacuum_enabled = false` is set on each large table after pre-data and reset when the restore
is done (also when it fails), leaving the table as the schema dump made it. A table whose own
settings already name autovacuum_enabled is left alone, and so is one the restoring role may not
alter: this only saves time, it never fails a restore.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg
from psycopg import sql

# Smaller tables are vacuumed in moments: not worth two ALTER TABLEs each.
PAUSE_MIN_BYTES = 16 * 1024 * 1024


@contextlib.contextmanager
def autovacuum_paused(conn: psycopg.Connection, tables: list[dict]) -> Iterator[list[tuple[str, str]]]:
    """Within the block, autovacuum skips those of `tables` (metadata entries: schema, name, bytes) with
    at least PAUSE_MIN_BYTES. `conn` must be in autocommit mode. Yields the tables paused."""
    paused: list[tuple[str, str]] = []
    for table in tables:
        if table.get("bytes", 0) < PAUSE_MIN_BYTES:
            continue
        row = conn.execute(
            "SELECT c.relkind, coalesce(c.reloptions, '{}') FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
            (table["schema"], table["name"])).fetchone()
        if row is None or row[0] != "r" or any(o.startswith("autovacuum_enabled=") for o in row[1]):
            continue
        name = sql.Identifier(table["schema"], table["name"])
        try:
            conn.execute(sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = false)").format(name))
        except psycopg.Error:
            continue
        paused.append((table["schema"], table["name"]))
    try:
        yield paused
    finally:
        for schema, name in paused:
            with contextlib.suppress(psycopg.Error):
                conn.execute(sql.SQL("ALTER TABLE {} RESET (autovacuum_enabled)").format(
                    sql.Identifier(schema, name)))
