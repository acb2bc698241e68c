"""Many connections reading one exported snapshot: the consistent view a backup is made from."""

from __future__ import annotations

import contextlib
import threading

import psycopg
from psycopg import sql

from .connection import ConnectionInfo
from .settings import data_session_settings

READ_SETTINGS = (
    # A backup may take hours: server-side timeouts must not cut it (the exporter sits idle in its
    # transaction while the others read).
    "SET LOCAL statement_timeout = 0",
    "SET LOCAL idle_in_transaction_session_timeout = 0",
    "SET LOCAL lock_timeout = 0",
    # Error out instead of silently reading a policy-filtered subset of a table.
    "SET LOCAL row_security = off",
    # A scan that joins another one in progress would start mid-table: keep physical order stable.
    "SET LOCAL synchronize_seqscans = off",
)


class SnapshotSession:
    """Owns the exporting transaction of one database and hands out connections that import it."""

    def __init__(self, info: ConnectionInfo, dbname: str, encoding: str):
        self.info = info
        self.dbname = dbname
        # Output styles pinned at connection start (see settings.py): the database's own defaults
        # must not decide how dates, intervals or floats are written.
        self.settings = data_session_settings(encoding)
        self.exporter = info.connect(dbname, settings=self.settings)
        self.exporter.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        for stmt in READ_SETTINGS:
            self.exporter.execute(stmt)
        self.snapshot_id: str = self.exporter.execute("SELECT pg_export_snapshot()").fetchone()[0]
        self._local = threading.local()
        self._opened: list[psycopg.Connection] = []
        self._lock = threading.Lock()

    def connection(self) -> psycopg.Connection:
        """This thread's connection, inside a transaction that imported the snapshot."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.info.connect(self.dbname, settings=self.settings)
            with self._lock:
                self._opened.append(conn)
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(self.snapshot_id)))
            for stmt in READ_SETTINGS:
                conn.execute(stmt)
            self._local.conn = conn
        return conn

    def close(self) -> None:
        with self._lock:
            conns, self._opened = [*self._opened, self.exporter], []
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()
