"""Many connections reading one exported snapshot: the consistent view a backup is made from, with
every table it reads locked against `TRUNCATE` and table rewrites.

An exported snapshot does not protect a table from `TRUNCATE` or a rewriting `ALTER TABLE` (they are
not MVCC-safe: a reader that comes later finds the new, empty file). pg_dump therefore holds `ACCESS
SHARE` on every table it dumps for its whole run, and so do we: the exporting session locks every
table *before* it takes its snapshot (`LOCK` takes none), so no such command can commit between the
snapshot and the lock; one that comes later waits until the backup ends.

A command that waits on the exporter's lock stands in the lock queue, and every later `ACCESS SHARE`
request on that table queues behind it: a reader session that has not touched the table yet would
wait for the waiter, which waits for the exporter, which waits for the reader. Readers therefore wait
at most READER_LOCK_WAIT for a lock (the exporter holds one, so a longer wait can only be that queue)
and the table is then read by the exporter itself, which holds the lock already (`exporter_read`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import psycopg
from psycopg import sql

from . import catalog
from .connection import ConnectionInfo, one_line
from .errors import BackupFailed, LockConflict
from .settings import data_session_settings

READ_SETTINGS = (
    # A backup may take hours: server-side timeouts must not cut it (the exporter sits idle in its
    # transaction while the others read).
    "SET LOCAL statement_timeout = 0",
    "SET LOCAL idle_in_transaction_session_timeout = 0",
    # Error out instead of silently reading a policy-filtered subset of a table.
    "SET LOCAL row_security = off",
    # A scan that joins another one in progress would start mid-table: keep physical order stable.
    "SET LOCAL synchronize_seqscans = off",
)
# How long a reader waits for a table lock the exporter already holds (see the module docstring).
READER_LOCK_WAIT = "1s"
LOCK_BATCH = 1000
# Tables a reader reads per transaction (see `SnapshotSession.connection`).
READER_TABLES = 500


class SnapshotSession:
    """Owns the exporting transaction of one database and hands out connections that import it."""

    def __init__(self, info: ConnectionInfo, dbname: str, encoding: str):
        self.info = info
        self.dbname = dbname
        # Output styles pinned at connection start (see settings.py): the database's own defaults
        # must not decide how dates, intervals or floats are written.
        self.settings = data_session_settings(encoding)
        self.exporter = info.connect(dbname, settings=self.settings)
        if self.exporter.info.server_version >= 110000:
            # The exporter's catalog queries (catalog.py) over thousands of tables have plan costs
            # above jit_above_cost; compiling them takes seconds (JIT is on by default, also on RDS)
            # and saves nothing on a catalog scan.
            self.exporter.execute("SET jit = off")
        self.snapshot_id: str | None = None
        self._local = threading.local()
        self._opened: list[psycopg.Connection] = []
        self._lock = threading.Lock()
        self._exporter_lock = threading.Lock()
        self._stopped = False

    def list_tables(self) -> list[tuple[int, str]]:
        """(oid, qualified name) of the tables to back up, listed before the exporting transaction
        (which locks them before its snapshot)."""
        return catalog.list_table_names(self.exporter)

    def begin(self, tables: list[str], *, lock_timeout_ms: int, parents: list[str] = ()) -> None:
        """Start the exporting transaction: lock `tables` and the partitioned tables `parents`
        (qualified names) in ACCESS SHARE mode, waiting at most `lock_timeout_ms` (0: forever), then
        export the snapshot. The exporter keeps that lock timeout: what it reads later is locked."""
        conn = self.exporter
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        for stmt in READ_SETTINGS:
            conn.execute(stmt)
        conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(int(lock_timeout_ms))))
        names = list(tables) + list(parents)
        for start in range(0, len(names), LOCK_BATCH):
            batch = names[start:start + LOCK_BATCH]
            try:
                conn.execute("LOCK TABLE " + ", ".join(f"ONLY {n}" for n in batch) + " IN ACCESS SHARE MODE")
            except psycopg.errors.LockNotAvailable:
                conn.execute("ROLLBACK")
                raise LockConflict(self._explain_lock_timeout(batch, lock_timeout_ms)) from None
        self.snapshot_id = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]

    def _explain_lock_timeout(self, names: list[str] | None, lock_timeout_ms: int) -> str:
        """Which of `names` (None: of any table) another session holds (or awaits) in ACCESS EXCLUSIVE
        mode, and who."""
        where = f"database {self.dbname!r}"
        try:
            with self.info.connect(self.dbname) as conn:
                rows = conn.execute(
                    """
                    SELECT l.relation::regclass::text, l.granted, a.pid, a.usename, a.application_name,
                           a.state, left(regexp_replace(a.query, '\\s+', ' ', 'g'), 120)
                    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                    WHERE l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock'
                      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                      AND (%s::regclass[] IS NULL OR l.relation = ANY (%s::regclass[]))
                      AND l.pid <> pg_backend_pid()
                    ORDER BY l.granted DESC, a.pid
                    """, (names, names)).fetchall()
        except (psycopg.Error, BackupFailed) as exc:
            return f"{where}: cannot lock its tables within {lock_timeout_ms} ms ({one_line(str(exc))})"
        if not rows:
            return (f"{where}: cannot lock its tables within {lock_timeout_ms} ms (lock_timeout); "
                    f"the session holding the conflicting lock has ended since")
        table, granted, pid, user, app, state, query = rows[0]
        how = "holds" if granted else "waits for"
        return (f"{where}: cannot lock table {table} within {lock_timeout_ms} ms (lock_timeout): session pid {pid} "
                f"(user {user!r}, application {app!r}, {state}) {how} an ACCESS EXCLUSIVE lock on it; "
                f"its statement: {query!r}")

    def connection(self) -> psycopg.Connection:
        """This thread's connection, inside a transaction that imported the snapshot. Every
        READER_TABLES calls it starts a new transaction on the same snapshot: a reader's table locks
        are released then, so the server's lock table holds the exporter's and pg_dump's locks and
        only a few hundred more, not the whole database's once more per reader."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.info.connect(self.dbname, settings=self.settings)
            with self._lock:
                self._opened.append(conn)
                if self._stopped:
                    raise BackupFailed("stopped")
            self._begin_reading(conn)
            self._local.conn, self._local.uses = conn, 0
        elif self._local.uses >= READER_TABLES:
            conn.execute("COMMIT")
            self._begin_reading(conn)
            self._local.uses = 0
        self._local.uses += 1
        return conn

    def _begin_reading(self, conn: psycopg.Connection) -> None:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(self.snapshot_id)))
        for stmt in READ_SETTINGS:
            conn.execute(stmt)
        conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(READER_LOCK_WAIT)))

    def discard_connection(self) -> None:
        """Drop this thread's connection (its transaction failed); the next `connection()` opens one."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock:
                if conn in self._opened:
                    self._opened.remove(conn)
            with contextlib.suppress(Exception):
                conn.close()

    @contextlib.contextmanager
    def exporter_read(self) -> Iterator[psycopg.Connection]:
        """The exporting connection, which holds every table's lock, for one reader at a time."""
        with self._exporter_lock:
            yield self.exporter

    def stop(self) -> None:
        """Cancel what every connection is running (another part of the backup failed)."""
        with self._lock:
            self._stopped = True
            conns = [*self._opened, self.exporter]
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.cancel()

    def close(self) -> None:
        with self._lock:
            conns, self._opened = [*self._opened, self.exporter], []
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()
