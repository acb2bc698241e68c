"""A fake SQL Server DB instance on RDS: answers the queries and RDS stored procedures the worker runs
(`rds_backup_database` hands out a task id, `rds_task_status` says IN_PROGRESS, then SUCCESS) and, when
a backup "runs", puts the database's `.bak` into the (moto) S3 bucket named in `@s3_arn_to_backup_to`.

In-process:    fake = FakeRdsSqlServer({"orders": bak_bytes}); backup_sqlserver(..., connect=fake.connect)
Out of process (the worker as a subprocess, e.g. `rdsbackup job` in the end-to-end tests):
    RDSBACKUP_SQLSERVER_CONNECT=tests.support.sqlserver_fake:connect_from_env
    RDSBACKUP_FAKE_SQLSERVER='{"databases": {"orders": 3000000}, "statuses": ["IN_PROGRESS", "SUCCESS"]}'
makes `.bak` files of those sizes with deterministic content (`fake_bak(name, size)`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass, field

import boto3

SYSTEM = ["master", "model", "msdb", "tempdb", "rdsadmin"]


def fake_bak(name: str, size: int) -> bytes:
    """Deterministic, incompressible-ish bytes standing in for a database's .bak."""
    out = bytearray()
    seed = hashlib.sha256(name.encode()).digest()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest() * 8  # some repetition, like a .bak
        counter += 1
    return bytes(out[:size])


@dataclass
class Task:
    task_id: int
    database: str
    s3_arn: str
    kms_key_arn: str | None
    statuses: list[str]
    polls: int = 0
    kind: str = "BACKUP_DB"


@dataclass
class FakeRdsSqlServer:
    """`databases`: name -> .bak bytes. `statuses`: the lifecycles `rds_task_status` walks through
    (the last one sticks). `task_info`: what an ERROR task says. `upload=False`: the task says SUCCESS
    but no object appears. `native_backup=False`: the option group lacks SQLSERVER_BACKUP_RESTORE."""

    databases: dict[str, bytes]
    statuses: list[str] = field(default_factory=lambda: ["IN_PROGRESS", "SUCCESS"])
    task_info: str = "[2025-01-01 00:00:00.000] Task execution has started. [2025-01-01 00:00:01.000] Aborted the task because of a task failure or an overlap with your preferred backup window."  # noqa: E501
    upload: bool = True
    native_backup: bool = True
    offline: tuple[str, ...] = ()
    # databases whose DBCC CHECKDB finds consistency errors (as a damaged database's would)
    corrupt: tuple[str, ...] = ()
    endpoint: str | None = None
    calls: list[tuple[str, tuple]] = field(default_factory=list)
    call_log: str | None = None
    # what rds_restore_database made: name -> the .bak bytes it read from S3
    restored: dict[str, bytes] = field(default_factory=dict)
    tasks: dict[int, Task] = field(default_factory=dict)
    connections: int = 0
    closed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def connect(self, info) -> FakeConnection:
        self.connections += 1
        self.info = info
        return FakeConnection(self)

    def _s3(self):
        return boto3.client("s3", endpoint_url=self.endpoint or os.environ.get("AWS_ENDPOINT_URL") or None)

    def _log(self, sql: str, params: list) -> None:
        """A worker subprocess's calls (and, as "-- restored" [name, sha256], the bytes each native restore read
        from S3), for the test that started it."""
        if self.call_log:
            with open(self.call_log, "a") as log:
                log.write(json.dumps([sql, params]) + "\n")

    def answer(self, sql: str, params: tuple) -> list[dict]:
        self.calls.append((" ".join(sql.split()), tuple(params or ())))
        self._log(" ".join(sql.split()), list(params or ()))
        text = " ".join(sql.split()).lower()
        if "serverproperty('productversion')" in text:
            return [{"version": "15.00.4415.2", "edition": "Standard Edition (64-bit)"}]
        if "from sys.databases" in text:
            names = SYSTEM + sorted(set(self.databases) | set(self.restored))
            return [{"name": n, "state_desc": "OFFLINE" if n in self.offline else "ONLINE"} for n in names]
        if text.startswith("exec msdb.dbo.rds_backup_database"):
            if not self.native_backup:
                raise RuntimeError("Could not find stored procedure 'msdb.dbo.rds_backup_database'.")
            assert "@overwrite_s3_backup_file=1" in text and "@type='full'" in text, sql
            db, arn = params[0], params[1]
            kms = params[2] if "@kms_master_key_arn" in text else None
            if db not in self.databases:
                raise RuntimeError(f"Database '{db}' does not exist.")
            assert re.fullmatch(r"arn:aws:s3:::[^/]+/.+\.bak", arn), arn
            with self._lock:
                task_id = len(self.tasks) + 1
                self.tasks[task_id] = Task(task_id, db, arn, kms, list(self.statuses))
            return [{"task_id": task_id, "task_type": "BACKUP_DB", "lifecycle": "CREATED", "% complete": 0,
                     "database_name": db, "S3_object_arn": arn}]
        if text.startswith("exec msdb.dbo.rds_restore_database"):
            assert "@type='full'" in text, sql
            db, arn = params[0], params[1]
            if db in self.databases or db in self.restored:
                raise RuntimeError(f"Database '{db}' already exists. Choose a different database name.")
            assert re.fullmatch(r"arn:aws:s3:::[^/]+/.+\.bak", arn), arn
            with self._lock:
                task_id = len(self.tasks) + 1
                self.tasks[task_id] = Task(task_id, db, arn, params[2] if "@kms_master_key_arn" in text else None,
                                           list(self.statuses), kind="RESTORE_DB")
            return [{"task_id": task_id, "task_type": "RESTORE_DB", "lifecycle": "CREATED", "% complete": 0,
                     "database_name": db, "S3_object_arn": arn}]
        if text.startswith("exec msdb.dbo.rds_drop_database"):
            if self.databases.pop(params[0], None) is None and self.restored.pop(params[0], None) is None:
                raise RuntimeError(f"Database '{params[0]}' does not exist.")
            return []
        if renamed := re.fullmatch(r"ALTER DATABASE \[(.+)\] MODIFY NAME = \[(.+)\]", " ".join(sql.split()),
                                   re.IGNORECASE):
            old, new = (name.replace("]]", "]") for name in renamed.groups())
            self.restored[new] = self.restored.pop(old)
            return []
        if checked := re.fullmatch(r"dbcc checkdb \(\[(.+)\]\) with no_infomsgs, all_errormsgs", text):
            name = checked.group(1).replace("]]", "]")
            if name not in set(SYSTEM) | set(self.databases) | set(self.restored):
                raise RuntimeError(f"Database '{name}' does not exist. Make sure that the name is entered correctly.")
            if name in self.corrupt:
                raise RuntimeError(f"CHECKDB found 0 allocation errors and 2 consistency errors in database "
                                   f"'{name}'. repair_allow_data_loss is the minimum repair level for the errors "
                                   "found by DBCC CHECKDB.")
            return []
        if text.startswith("exec msdb.dbo.rds_task_status"):
            task = self.tasks[int(params[0])]
            lifecycle = task.statuses[min(task.polls, len(task.statuses) - 1)]
            task.polls += 1
            first_success = lifecycle == "SUCCESS" and task.polls == task.statuses.index("SUCCESS") + 1
            bucket, key = task.s3_arn.removeprefix("arn:aws:s3:::").split("/", 1)
            if first_success and task.kind == "RESTORE_DB":
                self.restored[task.database] = self._s3().get_object(Bucket=bucket, Key=key)["Body"].read()
                self._log("-- restored", [task.database, hashlib.sha256(self.restored[task.database]).hexdigest()])
            elif first_success and self.upload:
                self._s3().put_object(Bucket=bucket, Key=key, Body=self.databases[task.database])
            return [{"task_id": task.task_id, "task_type": task.kind, "database_name": task.database,
                     "% complete": 100 if lifecycle == "SUCCESS" else 40, "duration(mins)": 1,
                     "lifecycle": lifecycle,
                     "task_info": self.task_info if lifecycle == "ERROR" else "Task execution has started.",
                     "S3_object_arn": task.s3_arn, "KMS_master_key_arn": task.kms_key_arn}]
        raise AssertionError(f"the fake SQL Server does not know: {sql}")


class FakeConnection:
    def __init__(self, server: FakeRdsSqlServer):
        self.server = server

    def query(self, sql: str, params: tuple = ()) -> list[dict]:
        return self.server.answer(sql, params)

    def close(self) -> None:
        self.server.closed += 1


_SERVERS: dict[str, FakeRdsSqlServer] = {}


def connect_from_env(info) -> FakeConnection:
    """Factory for a worker subprocess: the fake described by $RDSBACKUP_FAKE_SQLSERVER (JSON:
    {"databases": {name: size}, "statuses": [...], "upload": bool, "native_backup": bool, "corrupt": [name],
    "log": path of a file that gets every call as a JSON line, "shared": bool}). With "shared", one server per
    process and description, so a database one connection restores is there for the next (as on a real
    server); else a fresh server per connection."""
    text = os.environ.get("RDSBACKUP_FAKE_SQLSERVER") or '{"databases": {"appdb": 1000000}}'
    spec = json.loads(text)
    if text not in _SERVERS or not spec.get("shared"):
        _SERVERS[text] = FakeRdsSqlServer(
            {name: fake_bak(name, int(size)) for name, size in spec["databases"].items()},
            statuses=spec.get("statuses") or ["IN_PROGRESS", "SUCCESS"],
            upload=spec.get("upload", True), native_backup=spec.get("native_backup", True),
            corrupt=tuple(spec.get("corrupt") or ()), call_log=spec.get("log"))
    return _SERVERS[text].connect(info)
