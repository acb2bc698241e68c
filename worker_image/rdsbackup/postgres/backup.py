"""`rdsbackup backup postgres`: every database (or those named) plus the cluster globals, into one
restore point.

Per database, one REPEATABLE READ transaction exports a snapshot; pg_dump (`--snapshot`) writes the
schema, sequence values and everything else that is not table rows; table rows are streamed with
`COPY (SELECT ... ORDER BY <primary key>) TO STDOUT` by several sessions that import the same
snapshot, one repository stream per table: large tables by a `psql` child each (its stdout read in
1 MiB blocks: no Python work per row), small ones on psycopg connections, a hundred to a task. pg_dump
starts as soon as the snapshot is exported, and the tables are listed and copied while it runs: for a
database of many small tables its catalog reads are the longest part. Memory stays bounded: COPY
output goes straight into the repository writer in blocks.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime

import psycopg
from psycopg import generators as psycopg_generators

from ..progress import Reporter
from . import catalog
from .catalog import DatabaseInfo, TableInfo, quote_ident
from .connection import ConnectionInfo, connect_maintenance, one_line, pg_tool
from .errors import BackupFailed, PostgresError, ToolFailed
from .globals import dump_globals
from .largeobjects import dump_large_objects
from .settings import data_session_settings, options_string
from .snapshot import READ_SETTINGS, READER_LOCK_WAIT, SnapshotSession
from .table_digest import TableDigest, digesting, session_time_zone
from .tools import first_error, run_tool

# 2: the schema stream holds pg_dump's pre- and post-data sections only; sequence values are in the
# metadata (`sequences`), extension configuration tables' rows in streams. 1: the schema stream also
# held the data section (sequence values, extension configuration rows). A restore reads both.
METADATA_FORMAT = "rdsbackup-postgres/2"
METADATA_FORMATS = ("rdsbackup-postgres/1", METADATA_FORMAT)
COPY_BLOCK = 256 * 1024
# Tables at least this large (heap + TOAST) are copied by a `psql` child and read in blocks of up to
# PSQL_READ; smaller ones through the snapshot session's psycopg connections, where a table
# costs no process start and no new connection (a database of thousands of small tables).
PSQL_COPY_MIN_BYTES = 4 * 1024 * 1024
# A table of one heap page is streamed as it lies (no ORDER BY to plan and sort): its stream is a few
# chunks at most, so key order would save an incremental next to nothing, and for a database of
# thousands of small tables the sorted queries cost the server a third more time.
KEY_ORDER_MIN_BYTES = 8192 + 1
PSQL_READ = 1024 * 1024
# Tables smaller than this are copied SMALL_BATCH to a task: for thousands of tiny tables the thread
# pool's hand-over per task (a future, a wake-up of a thread) costs as much as the copy itself.
SMALL_TABLE_BYTES = 64 * 1024
SMALL_BATCH = 100


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def stream_name(*parts: str) -> str:
    """Unambiguous stream names whatever characters database and table names hold."""
    return "/".join(p.replace("%", "%25").replace("/", "%2F") for p in parts)


def copy_out_sql(table: TableInfo, *, key_order: bool = True) -> str:
    """The COPY of a table's rows: its stored columns (not generated or dropped ones; none at all for a
    table without columns, whose rows COPY writes as empty lines), in key order when it has a key."""
    cols = ", ".join(quote_ident(c) for c in table.columns)
    # An extension's configuration table: only the rows its condition selects (as pg_dump).
    where = f" {table.condition}" if table.condition else ""
    if table.order == "primary-key" and key_order:
        order = ", ".join(table.order_terms)
        # ONLY: rows of inheritance children belong to the children's own streams.
        return f"COPY (SELECT {cols} FROM ONLY {table.qualified}{where} ORDER BY {order}) TO STDOUT"
    if where:
        return f"COPY (SELECT {cols} FROM ONLY {table.qualified}{where}) TO STDOUT"
    if not table.columns:
        return f"COPY (SELECT FROM ONLY {table.qualified}) TO STDOUT"
    return f"COPY {table.qualified} ({cols}) TO STDOUT"


def _copy_blocks(conn: psycopg.Connection, sql_text: str, counts: dict, reporter: Reporter) -> Iterator[bytes]:
    """The table's COPY text through psycopg, in blocks of about COPY_BLOCK bytes (libpq hands out one
    row at a time, a Python iteration each: fine for small tables, see `_PsqlCopy`).

    Driven by the protocol steps `Cursor.copy` runs (psycopg's `generators.execute` and `copy_from`),
    one `Connection.wait` per block, not through `Cursor.copy`: that builds a cursor and a Copy object
    per table and waits once per row, 44 µs of the worker's CPU for a table of a few rows against 15
    µs here, seconds for a database of tens of thousands of tables. The errors are psycopg's own
    (`errors.error_from_result`, as the cursor raises them). psycopg is pinned (pyproject.toml);
    test_postgres_copy.py checks both give the same bytes, row counts and errors."""
    pgconn = conn.pgconn
    query = sql_text.encode(conn.info.encoding)
    total = 0
    with conn.lock:
        pgconn.send_query(query)
        result = conn.wait(psycopg_generators.execute(pgconn))[-1]
        if result.status != psycopg.pq.ExecStatus.COPY_OUT:
            raise psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
        while True:
            block, result = conn.wait(_copy_out_block(pgconn))
            if block:
                total += len(block)
                reporter.advance(len(block))
                yield bytes(block)
            if result is not None:
                break
    # COPY's command tag counts its rows (what `Cursor.rowcount` reports)
    counts["rows"] = int(result.command_tuples or 0)
    counts["bytes"] = total


def _copy_out_block(pgconn):
    """psycopg generator: COPY OUT rows until COPY_BLOCK bytes or the end; returns (bytes, the final
    result or None). `copy_from` raises the server's error if the COPY failed."""
    buf = bytearray()
    while len(buf) < COPY_BLOCK:
        out = yield from psycopg_generators.copy_from(pgconn)
        if not isinstance(out, (bytes, bytearray, memoryview)):
            return buf, out
        buf += out
    return buf, None


def _psql_copy_script(snapshot_id: str, sql_text: str, status_path: str | None = None) -> bytes:
    """psql input: a transaction that imports the exported snapshot, the same settings as the
    connections of `SnapshotSession`, then the COPY (its rows go to psql's stdout).

    With `status_path` the COPY runs as psql's `\\copy ... TO pstdout`: the rows still go to stdout,
    and its command tag (`COPY <rows>`) to that file (`\\o`), so the row count comes from the server
    instead of counting the newlines of every byte in the worker (a quarter of a second of held GIL
    per 650 MB). Only for a COPY that `\\copy` takes as it is (`_copy_meta_command`)."""
    lines = ["BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;",
             "SET TRANSACTION SNAPSHOT '" + snapshot_id.replace("'", "''") + "';",
             *(stmt + ";" for stmt in READ_SETTINGS),
             f"SET LOCAL lock_timeout = '{READER_LOCK_WAIT}';"]
    meta = _copy_meta_command(sql_text) if status_path is not None else None
    if meta is None:
        lines.append(sql_text + ";")
    else:
        lines += ["\\o '" + status_path + "'", "\\set QUIET off", meta, "\\set QUIET on", "\\o"]
    lines.append("COMMIT;")
    return ("\n".join(lines) + "\n").encode()


def _copy_meta_command(sql_text: str) -> str | None:
    """`COPY <x> TO STDOUT` as psql's `\\copy <x> TO pstdout`, or None when psql's `\\copy` could read
    it otherwise than the server would: it takes one line, splits it into words outside double and
    single quotes and joins them with single spaces (so no newline, no string literal, no backslash,
    no dollar quote)."""
    head, tail = "COPY ", " TO STDOUT"
    if not (sql_text.startswith(head) and sql_text.endswith(tail)):
        return None
    if any(c in sql_text for c in "\n\r\\'$") or not sql_text.isprintable():
        return None
    return "\\copy " + sql_text[len(head):-len(tail)] + " TO pstdout"


def _stdout_buffered(size: int) -> list[str]:
    """A command prefix that gives a program's stdio stdout a buffer of `size` bytes (coreutils'
    stdbuf), or nothing where stdbuf is missing. psql writes COPY rows through a 4 KiB stdio buffer:
    one write(2) per 4 KiB, which for a table of gigabytes is half of psql's CPU time."""
    stdbuf = shutil.which("stdbuf")
    return [stdbuf, f"--output={size}"] if stdbuf else []


class _PsqlCopy:
    """A `psql` child that runs one table's COPY inside the exported snapshot; its stdout is read in
    large blocks. libpq gives COPY OUT data one row per call, which in C (psql) costs next to nothing
    but through psycopg is a Python iteration per row: for a table of millions of rows, seconds of
    the worker's CPU. Connection parameters go through a minimal environment and the password through
    a temporary password file (`ConnectionInfo.tool_environment`), never the command line; the script
    goes through a file."""

    def __init__(self, info: ConnectionInfo, dbname: str, encoding: str, snapshot_id: str, sql_text: str,
                 workdir: str):
        # The COPY text must be in the database's encoding (what a restore's COPY FROM expects), as on a
        # psycopg connection; psql would otherwise pick the client encoding from the locale.
        self._environment = contextlib.ExitStack()
        env = self._environment.enter_context(info.tool_environment(dbname))
        env["PGCLIENTENCODING"] = encoding
        env["PGOPTIONS"] = options_string(data_session_settings(encoding))
        self._status = None  # psql's status file, when it reports the COPY's row count
        if _copy_meta_command(sql_text) is not None and "'" not in workdir:  # the path goes into `\o '...'`
            fd, self._status = tempfile.mkstemp(prefix="copy-", suffix=".status", dir=workdir)
            os.close(fd)
        fd, self._script = tempfile.mkstemp(prefix="copy-", suffix=".sql", dir=workdir)
        with os.fdopen(fd, "wb") as f:
            f.write(_psql_copy_script(snapshot_id, sql_text, self._status))
        self._stderr = tempfile.TemporaryFile(dir=workdir)  # noqa: SIM115 - closed in close()
        try:
            self.proc = subprocess.Popen(
                [*_stdout_buffered(PSQL_READ), pg_tool("psql"), "--no-psqlrc", "--quiet", "--no-password",
                 "--set=ON_ERROR_STOP=1",
                 f"--file={self._script}"],
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr, bufsize=0)
        except BaseException:
            self._stderr.close()
            self._environment.close()
            with contextlib.suppress(OSError):
                os.unlink(self._script)
            raise
        # A larger pipe: fewer wake-ups of psql and of the reading thread per MiB.
        with contextlib.suppress(OSError):
            fcntl.fcntl(self.proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, PSQL_READ)

    def source(self, counts: dict, reporter: Reporter, digest: TableDigest):
        """What the repository reads the table's rows from. When psql reports the row count, its
        stdout is read straight into the chunker's buffer (`readinto`, no copy of every byte into a
        batch); otherwise in blocks whose newlines are counted."""
        if self._status is None:
            return digesting(self.blocks(counts, reporter), digest, counts)
        return _CopyReader(self, counts, reporter, digest)

    def blocks(self, counts: dict, reporter: Reporter) -> Iterator[bytes]:
        read = self.proc.stdout.read
        count = self._status is None  # else psql writes the COPY's command tag to the status file
        rows = total = 0
        while True:
            piece = read(PSQL_READ)
            if not piece:
                break
            # In COPY text format every row ends with a newline; newlines inside values are escaped.
            if count:
                rows += piece.count(b"\n")
            total += len(piece)
            reporter.advance(len(piece))
            yield piece
        self.finish()
        if not count:
            rows = self._reported_rows()
        counts["rows"] = rows
        counts["bytes"] = total

    def finish(self) -> None:
        """Wait for psql (its stdout is at its end); ToolFailed with the server's error if it failed."""
        self.proc.wait()
        if self.proc.returncode != 0:
            self._stderr.seek(0)
            message = first_error(self._stderr.read().decode(errors="replace"))
            # "psql:/tmp/.../copy-x.sql:9: ERROR:  ..." -> "ERROR: ..."
            message = one_line(message[message.find("ERROR:"):]) if "ERROR:" in message else message
            raise ToolFailed(message or f"psql failed (exit {self.proc.returncode})")

    def _reported_rows(self) -> int:
        """The row count of the COPY's command tag (`COPY <rows>`) in the status file."""
        with open(self._status, encoding="utf-8", errors="replace") as f:
            tags = [line.split() for line in f if line.startswith("COPY ")]
        if len(tags) != 1 or len(tags[0]) != 2 or not tags[0][1].isdigit():
            raise ToolFailed(f"psql did not report the COPY's row count (status: {tags or 'none'})")
        return int(tags[0][1])

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self._stderr.close()
        self._environment.close()
        with contextlib.suppress(OSError):
            os.unlink(self._script)
        if self._status is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._status)


class _CopyReader:
    """psql's stdout as a file that the repository reads into its own buffer (`readinto`): every
    byte read is digested and reported; at the end psql's exit is checked (ToolFailed, raised inside
    the stream like any read error) and `counts` gets the rows psql reported, the bytes, the digest."""

    def __init__(self, child: _PsqlCopy, counts: dict, reporter: Reporter, digest: TableDigest):
        self._child = child
        self._read_into = child.proc.stdout.readinto
        self._counts = counts
        self._reporter = reporter
        self._digest = digest
        self._total = 0

    def readinto(self, view) -> int:
        n = self._read_into(view)
        if n:
            piece = view[:n]
            self._digest.update(piece)
            self._total += n
            self._reporter.advance(n)
            return n
        self._child.finish()
        self._counts["rows"] = self._child._reported_rows()
        self._counts["bytes"] = self._total
        self._counts["digest"] = self._digest.value
        return 0


def _schema_dump_args(snapshot_id: str, out_path: str) -> list[str]:
    """pg_dump's pre-data and post-data sections: every definition, grants, comments, indexes,
    constraints, triggers, materialized view refreshes. Its data section is what the backup stores
    itself: table rows (streams), sequence values (`catalog.sequence_values`), large objects. Leaving
    the rows out table by table (`--exclude-table-data` per table) costs pg_dump one catalog query per
    pattern, each reading all of pg_class: minutes for a database of 10,000 tables."""
    return ["--format=custom", "--compress=0", f"--snapshot={snapshot_id}", "--no-blobs", "--no-password",
            "--no-sync", "--section=pre-data", "--section=post-data", f"--file={out_path}"]


def _schema_dump_settings(conn: psycopg.Connection) -> dict[str, str]:
    """Server settings for pg_dump's session. JIT off: pg_dump's catalog queries over a database of
    many objects cost more than jit_above_cost, and the server compiles them (JIT is on by default
    since PostgreSQL 12, and on RDS) to save nothing on a catalog scan: for 10,000 tables a third of
    the server's CPU for the whole dump (2.4 s against 1.5 s with JIT off). pg_dump (15) leaves it on."""
    return {"jit": "off"} if conn.info.server_version >= 110000 else {}


class _SnapshotChanged(BackupFailed):
    """Tables were created, dropped or altered between listing them and taking the snapshot."""


class _Stopped(BackupFailed):
    """Another part of the backup failed first; this part stopped without an error of its own."""


# How often a database's backup starts over after a concurrent change (see `backup_database`).
ATTEMPTS = 3
# pg_dump locks the same tables the exporter holds: waiting longer can only mean a command queued
# behind the exporter (snapshot.py), which a fresh attempt lets through.
PG_DUMP_LOCK_WAIT_MS = 5000
DEFAULT_LOCK_TIMEOUT = 120.0


def backup_database(writer, info: ConnectionInfo, db: DatabaseInfo, *, jobs: int, reporter: Reporter,
                    warnings: list[str], key_order: bool = True,
                    lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> dict:
    """Dump one database into the open restore point; returns its metadata entry. Starts over (at most
    ATTEMPTS times) when the tables changed while it locked them, or pg_dump found a lock queued behind
    ours; what an abandoned attempt stored is only referenced by nothing (prune removes it)."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return _backup_database_once(writer, info, db, jobs=jobs, reporter=reporter, key_order=key_order,
                                         lock_timeout=lock_timeout)
        except _SnapshotChanged as exc:
            if attempt == ATTEMPTS:
                raise BackupFailed(f"{exc} (tried {ATTEMPTS} times)") from None
            warnings.append(f"database {db.name!r}: started over: {exc}")


def _backup_database_once(writer, info: ConnectionInfo, db: DatabaseInfo, *, jobs: int, reporter: Reporter,
                          key_order: bool, lock_timeout: float) -> dict:
    started = utcnow()
    reporter.status(db.name)
    session = SnapshotSession(info, db.name, db.encoding)
    try:
        conn = session.exporter
        # Listed before the transaction, so that the locks come before its snapshot (snapshot.py).
        listed = session.list_tables()
        session.begin([name for _oid, name in listed], lock_timeout_ms=int(lock_timeout * 1000),
                      parents=catalog.list_partitioned_tables(conn))
        schema_dump_settings = _schema_dump_settings(conn)
        children: set = set()  # psql and pg_dump children, killed when the backup stops
        children_lock = threading.Lock()
        pg_dump_name = f"rdsbackup-pg_dump-{secrets.token_hex(6)}"

        def child_started(child) -> None:
            with children_lock:
                children.add(child)
                if runner.failed:
                    child.kill()

        def child_ended(child) -> None:
            with children_lock:
                children.discard(child)

        def dump_schema() -> dict:
            with tempfile.TemporaryDirectory(prefix="rdsbackup-") as workdir:
                path = os.path.join(workdir, "schema.dump")
                args = _schema_dump_args(session.snapshot_id, path)
                try:
                    run_tool("pg_dump", [f"--lock-wait-timeout={PG_DUMP_LOCK_WAIT_MS}", *args], info,
                             dbname=db.name, application_name=pg_dump_name, settings=schema_dump_settings,
                             started=child_started, ended=child_ended)
                except ToolFailed as exc:
                    if "could not obtain lock" in str(exc) or "statement timeout" in str(exc):
                        raise _SnapshotChanged(f"database {db.name!r}: pg_dump: {exc}") from None
                    raise BackupFailed(f"database {db.name!r}, schema: {exc}") from None
                with open(path, "rb") as f:
                    return writer.add_stream(stream_name(db.name, "schema"), f, profile="bulk")

        def copy_with_psql(table: TableInfo, sql_text: str, name: str, counts: dict,
                           digest: TableDigest) -> dict | None:
            """The table through a psql child; None when psql could not lock it (see snapshot.py)."""
            child = _PsqlCopy(info, db.name, db.encoding, session.snapshot_id, sql_text, workdir)
            child_started(child)
            try:
                return writer.add_stream(name, child.source(counts, reporter, digest), profile="table")
            except ToolFailed as exc:
                if "lock timeout" in str(exc) and not counts.get("bytes"):
                    return None
                raise
            finally:
                child_ended(child)
                child.close()

        def copy_with_psycopg(sql_text: str, name: str, counts: dict, digest: TableDigest) -> dict:
            try:
                blocks = _copy_blocks(session.connection(), sql_text, counts, reporter)
                return writer.add_stream(name, digesting(blocks, digest, counts), profile="table")
            except psycopg.errors.LockNotAvailable:
                if counts.get("bytes"):
                    raise
                session.discard_connection()  # its transaction is aborted
            with session.exporter_read() as exporter:
                blocks = _copy_blocks(exporter, sql_text, counts, reporter)
                return writer.add_stream(name, digesting(blocks, digest, counts), profile="table")

        def dump_table(table: TableInfo) -> dict:
            counts: dict = {}
            name = stream_name(db.name, "table", table.schema, table.name)
            ordered = key_order and table.order == "primary-key" and table.relation_bytes >= KEY_ORDER_MIN_BYTES
            sql_text = copy_out_sql(table, key_order=ordered)
            where = f"database {db.name!r}, table {table.schema}.{table.name}"
            digest = TableDigest(ordered=ordered)
            try:
                ref = None
                if table.relation_bytes >= PSQL_COPY_MIN_BYTES:
                    ref = copy_with_psql(table, sql_text, name, counts, digest)
                if ref is None:
                    ref = copy_with_psycopg(sql_text, name, counts, digest)
            except psycopg.Error as exc:
                raise BackupFailed(f"{where}: {one_line(str(exc))}") from None
            except ToolFailed as exc:
                raise BackupFailed(f"{where}: {exc}") from None
            return {"schema": table.schema, "name": table.name, "columns": table.columns, "key": table.key,
                    "order": "primary-key" if ordered else "physical", "rows": counts.get("rows", 0),
                    "bytes": counts.get("bytes", 0), "digest": counts.get("digest"), "stream": ref,
                    "key_order": table.order_terms if ordered else [],
                    **({"condition": table.condition} if table.condition else {})}

        def measure(batch: list[TableInfo]) -> None:
            """The tables' sizes now, which decide how each is copied (`dump_table`). Read on the
            connection that copies them: its server session opens the tables for the COPY anyway
            (the listing's sizes are pg_class's statistics, which can be stale)."""
            oids = [t.oid for t in batch]
            try:
                try:
                    sizes = catalog.relation_sizes(session.connection(), oids)
                except psycopg.errors.LockNotAvailable:
                    session.discard_connection()  # its transaction is aborted; the exporter holds the locks
                    with session.exporter_read() as exporter:
                        sizes = catalog.relation_sizes(exporter, oids)
            except psycopg.Error as exc:
                names = ", ".join(f"{t.schema}.{t.name}" for t in batch[:3]) + (", ..." if len(batch) > 3 else "")
                raise BackupFailed(f"database {db.name!r}, sizes of tables {names}: {one_line(str(exc))}") from None
            for table in batch:
                table.relation_bytes = sizes[table.oid]

        def dump_tables(batch: list[TableInfo]) -> list[dict]:
            if runner.failed:
                raise _Stopped("stopped")
            measure(batch)
            done = []
            for table in batch:
                if runner.failed:
                    raise _Stopped("stopped")
                done.append(dump_table(table))
            return done

        def dump_lobs() -> dict:
            try:
                return writer.add_stream(stream_name(db.name, "large-objects"),
                                         dump_large_objects(session.connection()), profile="bulk")
            except psycopg.Error as exc:
                raise BackupFailed(f"database {db.name!r}, large objects: {one_line(str(exc))}") from None

        def stop_everything() -> None:
            session.stop()
            with children_lock:
                for child in children:
                    child.kill()

        with tempfile.TemporaryDirectory(prefix="rdsbackup-") as workdir, \
                FirstFailure(jobs=jobs, on_failure=stop_everything) as runner:
            # The schema dump is the longest part for a database of many small tables (pg_dump reads
            # every definition, one catalog query per kind of object): it starts as soon as the
            # snapshot exists, and the listing and the tables' rows are read while it runs.
            schema = runner.submit(dump_schema)
            # In the snapshot, under the locks: a table's columns cannot have changed since it was
            # locked (ALTER TABLE waits for the lock), but tables may have come or gone since the listing.
            tables = catalog.list_tables(conn)
            if [t.oid for t in tables] != [oid for oid, _name in listed]:
                raise _SnapshotChanged(f"database {db.name!r}: tables changed while the backup locked them")
            owners = catalog.object_owners(conn)
            has_lobs = catalog.has_large_objects(conn)
            properties = catalog.database_properties(conn)
            sequences = catalog.sequence_values(conn)
            tablespaces = catalog.tablespaces_used(conn)
            reporter.add_total(sum(t.estimated_bytes for t in tables))
            lobs = runner.submit(dump_lobs) if has_lobs else None
            # Largest first: the long copies start early and the pool ends together.
            order = sorted(tables, key=lambda t: t.estimated_bytes, reverse=True)
            copies = {}
            for batch in _batches(order):
                future = runner.submit(functools.partial(dump_tables, batch))
                copies.update({(t.schema, t.name): (future, i) for i, t in enumerate(batch)})
            runner.wait()
        entry: dict = {"name": db.name, "owner": db.owner, "encoding": db.encoding, "collate": db.collate,
                       "ctype": db.ctype, "owners": owners, "properties": properties, "sequences": sequences,
                       "tablespaces": tablespaces, "started": started, "time_zone": session_time_zone(conn)}
        entry["schema"] = schema.result()
        entry["large_objects"] = lobs.result() if lobs else None
        entry["tables"] = [future.result()[i] for future, i in (copies[(t.schema, t.name)] for t in tables)]
        entry["table_bytes"] = sum(t["bytes"] for t in entry["tables"])
        entry["ended"] = utcnow()
        return entry
    finally:
        session.close()


def _batches(tables: list[TableInfo]) -> Iterator[list[TableInfo]]:
    """`tables` (largest first) as the copy tasks' lists: one table each, small ones SMALL_BATCH at a
    time."""
    small: list[TableInfo] = []
    for table in tables:
        if table.estimated_bytes >= SMALL_TABLE_BYTES:
            yield [table]
            continue
        small.append(table)
        if len(small) == SMALL_BATCH:
            yield small
            small = []
    if small:
        yield small


class FirstFailure:
    """Tasks on `jobs` threads, submitted while earlier ones run. The first task to fail, or the
    submitting code itself raising inside the `with` block, calls `on_failure` (which stops the
    others: cancels their statements, kills their children); tasks not started yet do not start. On
    leaving the block every thread has ended, and the first failure is raised, not an error the
    stopping caused in another task."""

    def __init__(self, *, jobs: int, on_failure):
        self._on_failure = on_failure
        self._first: list[BaseException] = []
        self._guard = threading.Lock()
        self._futures: list[Future] = []
        self._pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="rdsbackup-copy")

    @property
    def failed(self) -> bool:
        return bool(self._first)

    def submit(self, task) -> Future:
        future = self._pool.submit(self._run, task)
        self._futures.append(future)
        return future

    def wait(self) -> None:
        """Until every task submitted has ended, or one failed (then raises that failure)."""
        wait(self._futures, return_when=FIRST_EXCEPTION)
        if self._first:
            raise self._first[0]

    def _fail(self, exc: BaseException) -> None:
        with self._guard:
            is_first = not self._first
            if is_first:
                self._first.append(exc)
        if is_first:
            self._on_failure()

    def _run(self, task):
        if self._first:
            raise _Stopped("stopped")
        try:
            return task()
        except BaseException as exc:
            self._fail(exc)
            raise

    def __enter__(self) -> FirstFailure:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None:
            self._fail(exc)
            for future in self._futures:
                future.cancel()
        self._pool.shutdown(wait=True)
        # The pool has ended: every thread is done with the session.
        if self._first and self._first[0] is not exc:
            raise self._first[0]


def backup_postgres(repo, info: ConnectionInfo, *, databases: list[str] | None = None,
                    source_id: str | None = None, jobs: int = 4, reporter: Reporter | None = None,
                    key_order: bool = True, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> dict:
    """Back up a PostgreSQL server into `repo`; returns the restore point's metadata plus its id
    (`restore_point_id`). Nothing is committed unless every database was dumped. `key_order=False`
    streams every table in physical order (cheaper to read, but incrementals store far more).
    `lock_timeout`: seconds to wait for the tables' ACCESS SHARE locks (0: forever), then fail naming
    the table and the session in the way."""
    reporter = reporter or Reporter()
    started = utcnow()
    t0 = time.monotonic()
    with connect_maintenance(info) as conn:
        version, version_num = catalog.server_version(conn)
        maintenance_db = conn.info.dbname
        dbs = catalog.list_databases(conn, databases)
    source_id = source_id or info.host
    warnings: list[str] = []
    with repo.begin_backup(source_id=source_id, engine="postgres") as writer:
        # The globals are dumped while the databases are (no snapshot orders them with a database's
        # contents): the first database's pg_dump starts a pg_dumpall run sooner. The pool has
        # ended, and so has every use of the writer, before the writer commits or aborts.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rdsbackup-globals") as pool:
            globals_dump = pool.submit(_backup_globals, writer, info, maintenance_db)
            entries = [backup_database(writer, info, db, jobs=jobs, reporter=reporter, warnings=warnings,
                                       key_order=key_order, lock_timeout=lock_timeout) for db in dbs]
            globals_ref, globals_warning = globals_dump.result()
        if globals_warning:
            warnings.insert(0, globals_warning)
        refs = [globals_ref] + [r for e in entries for r in _refs(e)]
        metadata = {
            "format": METADATA_FORMAT,
            "source_id": source_id,
            "engine": "postgres",
            "server_version": version,
            "server_version_num": version_num,
            "endpoint": info.endpoint,
            "user": info.user,
            "started": started,
            "ended": utcnow(),
            "duration_seconds": round(time.monotonic() - t0, 3),
            "globals": globals_ref,
            "databases": entries,
            "bytes": sum(r.get("size", 0) for r in refs if r),
            "new_bytes": sum(r.get("new_bytes", 0) for r in refs if r),
            "warnings": warnings,
        }
        rp_id = writer.commit(metadata)
    return {"restore_point_id": rp_id, **metadata}


def _backup_globals(writer, info: ConnectionInfo, maintenance_db: str) -> tuple[dict | None, str | None]:
    """The globals' stream ref, or None and a warning when pg_dumpall failed."""
    try:
        script = dump_globals(info, maintenance_db)
    except PostgresError as exc:
        # Roles matter but must not cost the data: the restore point says they are missing.
        return None, f"globals not dumped: {exc}"
    return writer.add_stream("globals", [script], profile="bulk"), None


def _refs(entry: dict) -> list[dict]:
    return [entry["schema"], entry.get("large_objects"), *(t["stream"] for t in entry["tables"])]

