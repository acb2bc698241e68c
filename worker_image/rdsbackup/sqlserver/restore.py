"""`rdsbackup restore sqlserver`: a SQL Server restore point back into an RDS SQL Server DB instance.

Per database: the `.bak` is streamed from the repository into `s3://<temp bucket>/<prefix><name>.bak`
(multipart, bounded memory), `msdb.dbo.rds_restore_database` restores it (RDS reads it with the IAM role
of the option group's SQLSERVER_BACKUP_RESTORE option), `msdb.dbo.rds_task_status` is polled until the
task ends, and the object is deleted on every path.

A database that exists already is never overwritten unless `replace` is given. With `replace` the
restore goes to `<name>_rdsbackup_new` first; only once it succeeded is the existing database dropped
(`rds_drop_database`) and the new one renamed into its place, so a failed restore leaves the old
database as it was.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable, Iterator

from ..progress import Reporter
from .backup import METADATA_FORMAT, NativeBackup, PollPolicy, _delete_quietly, _s3_client, object_name
from .connection import ConnectionFactory, SqlServerInfo, one_line
from .connection import connect as tds_connect
from .errors import NativeBackupFailed, SqlServerDatabaseExists, SqlServerDatabaseNotFound, SqlServerError

SQL_DATABASES = "SELECT name FROM sys.databases"
SQL_RESTORE = "exec msdb.dbo.rds_restore_database @restore_db_name=%s, @s3_arn_to_restore_from=%s, @type='FULL'"
SQL_RESTORE_KMS = SQL_RESTORE + ", @kms_master_key_arn=%s"
SQL_DROP = "exec msdb.dbo.rds_drop_database @db_name=%s"
# RDS allows renaming a database with ALTER DATABASE ... MODIFY NAME (the master user may)
SQL_RENAME = "ALTER DATABASE {old} MODIFY NAME = {new}"
STAGING_SUFFIX = "_rdsbackup_new"


def quote_name(name: str) -> str:
    """A bracket-quoted SQL Server identifier."""
    return "[" + name.replace("]", "]]") + "]"


class _StreamReader(io.RawIOBase):
    """A file object over an iterator of byte blocks (what `upload_fileobj` reads from)."""

    def __init__(self, blocks: Iterator[bytes]):
        self._blocks, self._pending = blocks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            try:
                self._pending = next(self._blocks)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def _plan(meta: dict, database: str | None, target_database: str | None, rp_id: str) -> list[tuple[dict, str]]:
    if meta.get("engine") != "sqlserver" or meta.get("format") != METADATA_FORMAT:
        raise SqlServerError(f"restore point {rp_id} is not a SQL Server backup of a known format "
                             f"(engine {meta.get('engine')!r}, format {meta.get('format')!r})")
    entries = meta.get("databases") or []
    if database is not None:
        entries = [e for e in entries if e["name"] == database]
        if not entries:
            names = ", ".join(e["name"] for e in meta.get("databases") or []) or "none"
            raise SqlServerDatabaseNotFound(f"restore point {rp_id} has no database {database!r} (it has: {names})")
    if target_database is not None and len(entries) != 1:
        raise SqlServerError("--target-database needs --database: the restore point holds several databases")
    return [(entry, target_database or entry["name"]) for entry in entries]


def restore_sqlserver(repo, rp_id: str, info: SqlServerInfo, *, temp_bucket: str, temp_prefix: str = "",
                      database: str | None = None, target_database: str | None = None, replace: bool = False,
                      kms_key_arn: str | None = None, connect: ConnectionFactory | None = None, s3=None,
                      poll: PollPolicy | None = None, sleep: Callable[[float], None] = time.sleep,
                      reporter: Reporter | None = None) -> dict:
    """Restore the restore point's databases (or `database`, as `target_database`); returns a summary."""
    reporter = reporter or Reporter()
    poll = poll or PollPolicy()
    s3 = s3 or _s3_client()
    t0 = time.monotonic()
    plan = _plan(repo.load_manifest(rp_id), database, target_database, rp_id)
    conn = (connect or tds_connect)(info)
    restored: list[dict] = []
    warnings: list[str] = []
    try:
        existing = {row["name"] for row in conn.query(SQL_DATABASES)}
        taken = [target for _, target in plan if target in existing]
        if taken and not replace:
            raise SqlServerDatabaseExists(
                f"database(s) {', '.join(map(repr, taken))} exist on {info.endpoint}; restore under another "
                "name (--target-database) or pass --replace to overwrite")
        native = NativeBackup(conn, info, poll=poll, sleep=sleep, reporter=reporter)
        for entry, target in plan:
            staging = target + STAGING_SUFFIX if target in existing else target
            if staging in existing:
                raise SqlServerDatabaseExists(f"database {staging!r} (a previous replace's leftover) exists on "
                                              f"{info.endpoint}; drop it first")
            key = f"{temp_prefix}{object_name(staging)}"
            try:
                reporter.status(f"{entry['name']}: staging the .bak")
                blocks = repo.open_stream(entry["stream"], restore_point=rp_id)
                s3.upload_fileobj(io.BufferedReader(_StreamReader(blocks), buffer_size=8 * 1024 * 1024),
                                  temp_bucket, key)
                task_id = _start(conn, staging, f"arn:aws:s3:::{temp_bucket}/{key}", kms_key_arn, info)
                native.wait(staging, task_id, action="native restore")
            finally:
                warning = _delete_quietly(s3, temp_bucket, key)
                if warning:
                    warnings.append(warning)
            if staging != target:  # replace: the old database goes only now that the new one is there
                conn.query(SQL_DROP, (target,))
                conn.query(SQL_RENAME.format(old=quote_name(staging), new=quote_name(target)))
            restored.append({"name": entry["name"], "target": target, "bytes": entry.get("bytes"),
                             "task_id": task_id, "replaced": staging != target})
    finally:
        with contextlib.suppress(Exception):
            conn.close()
    return {"restore_point_id": rp_id, "engine": "sqlserver", "databases": restored, "warnings": warnings,
            "duration_seconds": round(time.monotonic() - t0, 3)}


def _start(conn, db: str, s3_arn: str, kms_key_arn: str | None, info: SqlServerInfo) -> int:
    sql, params = (SQL_RESTORE_KMS, (db, s3_arn, kms_key_arn)) if kms_key_arn else (SQL_RESTORE, (db, s3_arn))
    try:
        rows = conn.query(sql, params)
    except SqlServerError:
        raise
    except Exception as exc:
        raise NativeBackupFailed(f"rds_restore_database for database {db!r} at {info.endpoint} failed: "
                                 f"{one_line(exc)}") from None
    task_id = next((r.get("task_id") for r in rows if r.get("task_id") is not None), None)
    if task_id is None:
        raise NativeBackupFailed(f"rds_restore_database for database {db!r} at {info.endpoint} returned no task id")
    return int(task_id)
