"""`rdsbackup backup sqlserver`: RDS native backup of every user database (or those named) into a
temporary S3 bucket, then each `.bak` streamed into one restore point of the repository.

Per database: `msdb.dbo.rds_backup_database` writes `s3://<temp bucket>/<prefix><db>.bak` (RDS writes
it with the IAM role of the option group's SQLSERVER_BACKUP_RESTORE option), `msdb.dbo.rds_task_status`
is polled with growing intervals until the task ends, the object is read from S3 in blocks (bounded
memory; a dropped connection resumes with a ranged GET of the same object version) into the repository,
its length checked, and the object deleted. Nothing is committed unless every database made it; the
temporary objects go on every path.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from ..progress import Reporter
from .connection import ConnectionFactory, SqlServerInfo, one_line
from .connection import connect as tds_connect
from .errors import (
    BackupFileMissing,
    NativeBackupFailed,
    NativeBackupTimeout,
    NativeBackupUnavailable,
    SqlServerDatabaseNotFound,
    SqlServerError,
)

METADATA_FORMAT = "rdsbackup-sqlserver/1"
SYSTEM_DATABASES = frozenset({"master", "model", "msdb", "tempdb", "rdsadmin"})
READ_BLOCK = 8 * 1024 * 1024
READ_RETRIES = 5

SQL_VERSION = ("SELECT CAST(SERVERPROPERTY('ProductVersion') AS nvarchar(128)) AS version, "
               "CAST(SERVERPROPERTY('Edition') AS nvarchar(128)) AS edition")
SQL_DATABASES = "SELECT name, state_desc FROM sys.databases ORDER BY name"
SQL_BACKUP = ("exec msdb.dbo.rds_backup_database @source_db_name=%s, @s3_arn_to_backup_to=%s, "
              "@overwrite_s3_backup_file=1, @type='FULL'")
SQL_BACKUP_KMS = SQL_BACKUP + ", @kms_master_key_arn=%s"
SQL_TASK_STATUS = "exec msdb.dbo.rds_task_status @task_id=%s"


@dataclass(frozen=True)
class PollPolicy:
    """How `rds_task_status` is polled: `first` s, growing by `factor` up to `longest`, for at most
    `timeout` s in all."""

    first: float = 5.0
    longest: float = 60.0
    factor: float = 1.5
    timeout: float = 12 * 3600.0

    @classmethod
    def from_env(cls, timeout: float | None = None) -> PollPolicy:
        """Defaults, or `$RDSBACKUP_SQLSERVER_POLL` = "first[,longest[,timeout]]" seconds (tests and
        the local run poll fast); an explicit `timeout` wins."""
        policy = cls()
        text = os.environ.get("RDSBACKUP_SQLSERVER_POLL")
        if text:
            try:
                values = [float(v) for v in text.split(",")]
            except ValueError:
                raise SqlServerError(f"RDSBACKUP_SQLSERVER_POLL={text!r}: expected first[,longest[,timeout]]") from None
            names = ("first", "longest", "timeout")
            policy = cls(**{**policy.__dict__, **dict(zip(names, values, strict=False))})
        if timeout is not None:
            policy = cls(**{**policy.__dict__, "timeout": float(timeout)})
        return policy


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def object_name(db: str) -> str:
    """The `.bak` file name of a database: the name itself when it is plain, else percent-encoded."""
    return (db if re.fullmatch(r"[A-Za-z0-9._-]+", db) else quote(db, safe="")) + ".bak"


def _s3_client():
    """The temporary bucket is the worker's own account's."""
    from ..s3_clients import TEMP_BUCKET_OWNER_ENV, owner_from_env, s3_client

    return s3_client(owner_from_env(TEMP_BUCKET_OWNER_ENV))


class NativeBackup:
    """One server's native backups: runs the RDS procedures and waits for their tasks."""

    def __init__(self, conn, info: SqlServerInfo, *, poll: PollPolicy, sleep: Callable[[float], None],
                 option_group: str | None = None, reporter: Reporter):
        self.conn = conn
        self.info = info
        self.poll = poll
        self.sleep = sleep
        self.option_group = option_group
        self.reporter = reporter

    def start(self, db: str, s3_arn: str, kms_key_arn: str | None) -> int:
        sql, params = (SQL_BACKUP_KMS, (db, s3_arn, kms_key_arn)) if kms_key_arn else (SQL_BACKUP, (db, s3_arn))
        try:
            rows = self.conn.query(sql, params)
        except SqlServerError:
            raise
        except Exception as exc:
            raise self._explain_start(db, exc) from None
        task_id = next((r.get("task_id") for r in rows if r.get("task_id") is not None), None)
        if task_id is None:
            raise NativeBackupFailed(f"rds_backup_database for database {db!r} at {self.info.endpoint} "
                                     f"returned no task id")
        return int(task_id)

    def _explain_start(self, db: str, exc: Exception) -> SqlServerError:
        text = one_line(exc)
        if "could not find stored procedure" in text.lower() and "rds_backup_database" in text.lower():
            group = f"option group {self.option_group!r}" if self.option_group else "the DB instance's option group"
            return NativeBackupUnavailable(
                f"RDS native backup is not available on {self.info.endpoint}: {group} has no "
                f"SQLSERVER_BACKUP_RESTORE option; add it (with an IAM role that may write to the temporary "
                f"bucket) and apply it to the instance")
        return NativeBackupFailed(f"rds_backup_database for database {db!r} at {self.info.endpoint} failed: {text}")

    def wait(self, db: str, task_id: int, action: str = "native backup") -> dict:
        """Poll until the task ends; its status row on SUCCESS, a clear error otherwise. `action` names the
        task in messages (the same procedure polls restores)."""
        deadline = time.monotonic() + self.poll.timeout
        interval = self.poll.first
        while True:
            row = self.status(task_id)
            lifecycle = str(row.get("lifecycle") or "").upper() if row else ""
            if lifecycle == "SUCCESS":
                return row
            if lifecycle in ("ERROR", "CANCELLED", "CANCEL_REQUESTED"):
                info = one_line(row.get("task_info") or "no task_info")
                raise NativeBackupFailed(
                    f"{action} of database {db!r} (task {task_id}) ended {lifecycle}: {info}")
            if row:
                pct = row.get("% complete")
                self.reporter.status(f"{db}: {action} {lifecycle.lower() or 'queued'}"
                                     + (f" {pct}%" if pct is not None else ""))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NativeBackupTimeout(
                    f"{action} of database {db!r} (task {task_id}) did not finish in "
                    f"{self.poll.timeout:.0f} s (last state {lifecycle or 'unknown'})")
            self.sleep(min(interval, remaining))
            interval = min(interval * self.poll.factor, self.poll.longest)

    def status(self, task_id: int) -> dict | None:
        try:
            rows = self.conn.query(SQL_TASK_STATUS, (task_id,))
        except SqlServerError:
            raise
        except Exception as exc:
            raise NativeBackupFailed(f"rds_task_status for task {task_id} at {self.info.endpoint} failed: "
                                     f"{one_line(exc)}") from None
        for row in rows:
            if row.get("task_id") is not None and int(row["task_id"]) == task_id:
                return row
        return rows[0] if len(rows) == 1 else None


def s3_object_blocks(s3, bucket: str, key: str, *, reporter: Reporter, block: int = READ_BLOCK) -> Iterator[bytes]:
    """The object's bytes in blocks. A read that breaks off resumes where it stopped (ranged GET pinned
    to the same ETag); the total must equal the object's length."""
    from botocore.exceptions import BotoCoreError, ClientError

    where = f"s3://{bucket}/{key}"
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("404", "NoSuchKey", "NotFound"):
            raise BackupFileMissing(f"the native backup file {where} is not there (the task said SUCCESS)") from None
        raise BackupFileMissing(f"cannot read the native backup file {where}: {code or exc}") from None
    size, etag = head["ContentLength"], head.get("ETag")
    reporter.add_total(size)
    done, failures = 0, 0
    while done < size:
        args = {"Bucket": bucket, "Key": key, "Range": f"bytes={done}-"}
        if etag:
            args["IfMatch"] = etag
        try:
            body = s3.get_object(**args)["Body"]
            try:
                while True:
                    piece = body.read(block)
                    if not piece:
                        break
                    done += len(piece)
                    reporter.advance(len(piece))
                    yield piece
            finally:
                body.close()
            if done < size:
                raise BackupFileMissing(f"{where} ended after {done} of {size} bytes")
        except (BotoCoreError, ClientError, OSError, BackupFileMissing) as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "404", "NoSuchKey"):
                raise BackupFileMissing(f"the native backup file {where} changed or vanished while it was read "
                                        f"({code})") from None
            failures += 1
            if failures > READ_RETRIES:
                raise BackupFileMissing(f"cannot read the native backup file {where} after {READ_RETRIES} "
                                        f"retries: {one_line(exc)}") from None
            time.sleep(min(2.0**failures * 0.1, 5.0))
    if done != size:
        raise BackupFileMissing(f"read {done} bytes of {where}, expected {size}")


def _delete_quietly(s3, bucket: str, key: str) -> str | None:
    """Delete a temporary object; a warning (not an error) when that fails."""
    try:
        s3.delete_object(Bucket=bucket, Key=key)
    except Exception as exc:
        return f"could not delete the temporary object s3://{bucket}/{key}: {one_line(exc)}"
    return None


def select_databases(conn, wanted: list[str] | None, endpoint: str) -> list[str]:
    rows = conn.query(SQL_DATABASES)
    states = {r["name"]: str(r.get("state_desc") or "ONLINE").upper() for r in rows}
    if wanted:
        missing = [d for d in wanted if d not in states]
        if missing:
            raise SqlServerDatabaseNotFound(f"database(s) {', '.join(map(repr, missing))} do not exist on {endpoint}")
        return list(dict.fromkeys(wanted))
    return [n for n, state in states.items() if n not in SYSTEM_DATABASES and state == "ONLINE"]


def backup_sqlserver(repo, info: SqlServerInfo, *, temp_bucket: str, temp_prefix: str = "",
                     databases: list[str] | None = None, source_id: str | None = None,
                     kms_key_arn: str | None = None, option_group: str | None = None,
                     connect: ConnectionFactory | None = None, s3=None, poll: PollPolicy | None = None,
                     sleep: Callable[[float], None] = time.sleep, reporter: Reporter | None = None) -> dict:
    """Back up a SQL Server DB instance into `repo` through RDS native backup; returns the restore
    point's metadata plus its id (`restore_point_id`)."""
    reporter = reporter or Reporter()
    poll = poll or PollPolicy()
    s3 = s3 or _s3_client()
    started = utcnow()
    t0 = time.monotonic()
    source_id = source_id or info.host
    conn = (connect or tds_connect)(info)
    warnings: list[str] = []
    try:
        try:
            version_row = (conn.query(SQL_VERSION) or [{}])[0]
        except Exception as exc:
            version_row = {}
            warnings.append(f"server version not read: {one_line(exc)}")
        names = select_databases(conn, databases, info.endpoint)
        if not names:
            raise SqlServerDatabaseNotFound(f"no user databases to back up on {info.endpoint}")
        native = NativeBackup(conn, info, poll=poll, sleep=sleep, option_group=option_group, reporter=reporter)
        entries: list[dict] = []
        with repo.begin_backup(source_id=source_id, engine="sqlserver") as writer:
            for db in names:
                key = f"{temp_prefix}{object_name(db)}"
                db_started = utcnow()
                reporter.status(f"{db}: native backup")
                task_id = native.start(db, f"arn:aws:s3:::{temp_bucket}/{key}", kms_key_arn)
                try:
                    row = native.wait(db, task_id)
                    reporter.status(f"{db}: storing")
                    ref = writer.add_stream(f"{db}/bak", s3_object_blocks(s3, temp_bucket, key, reporter=reporter),
                                            profile="bulk")
                finally:
                    # On every path: a .bak of a failed or cancelled task may be there too.
                    warning = _delete_quietly(s3, temp_bucket, key)
                    if warning:
                        warnings.append(warning)
                entries.append({"name": db, "bytes": ref["size"], "stream": ref, "task_id": task_id,
                                "task_info": one_line(row.get("task_info") or "")[:500],
                                "started": db_started, "ended": utcnow()})
            metadata = {
                "format": METADATA_FORMAT,
                "source_id": source_id,
                "engine": "sqlserver",
                "server_version": version_row.get("version"),
                "edition": version_row.get("edition"),
                "endpoint": info.endpoint,
                "user": info.user,
                "started": started,
                "ended": utcnow(),
                "duration_seconds": round(time.monotonic() - t0, 3),
                "databases": entries,
                "bytes": sum(e["bytes"] for e in entries),
                "new_bytes": sum(e["stream"].get("new_bytes", 0) for e in entries),
                "warnings": warnings,
            }
            rp_id = writer.commit(metadata)
    finally:
        with contextlib.suppress(Exception):
            conn.close()
    return {"restore_point_id": rp_id, **metadata}
