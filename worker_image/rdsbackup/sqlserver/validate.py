"""A restore test's checks of SQL Server (the restore-test job, `restore_test_job.py`).

- The restored snapshot: the engine answers, every database the restore point recorded (else every user
  database) is there and ONLINE, and `DBCC CHECKDB` finds no allocation or consistency error in it.
- A restore point: each database's `.bak` goes back through RDS native restore (`restore_sqlserver`:
  `rds_restore_database`, then `rds_task_status` until SUCCESS) under `rdsbackup_test_<name>` on the same
  throwaway; the restored database must be there, ONLINE, and pass `DBCC CHECKDB`. A SQL Server restore
  point records no row counts or digests (it is the engine's own `.bak`): the restore itself verifies the
  backup (RDS restores only a complete, readable `.bak`), and CHECKDB the database it made.

`DBCC CHECKDB ... WITH NO_INFOMSGS` returns nothing when the database is sound and raises an error
naming what it found otherwise; that error is the failure reported.
"""

from __future__ import annotations

import contextlib

from .backup import SQL_DATABASES, SQL_VERSION, SYSTEM_DATABASES
from .connection import ConnectionFactory, SqlServerInfo, one_line
from .connection import connect as tds_connect
from .restore import quote_name, restore_sqlserver

SQL_CHECKDB = "DBCC CHECKDB ({name}) WITH NO_INFOMSGS, ALL_ERRORMSGS"


def checkdb(conn, name: str) -> str | None:
    """None when `DBCC CHECKDB` passes; else its error, on one line."""
    try:
        conn.query(SQL_CHECKDB.format(name=quote_name(name)))
    except Exception as exc:
        return one_line(exc)[:500]
    return None


def _states(conn) -> dict[str, str]:
    return {r["name"]: str(r.get("state_desc") or "ONLINE").upper() for r in conn.query(SQL_DATABASES)}


def _check(conn, names: list[str], states: dict[str, str], label=lambda name: f"database {name!r}"
           ) -> tuple[list[dict], list[str]]:
    """Each name there, ONLINE and passing CHECKDB: (per-database results, problems)."""
    results, problems = [], []
    for name in names:
        state = states.get(name)
        result: dict = {"database": name, "state": state, "checkdb": None}
        if state is None:
            problems.append(f"{label(name)} is missing")
        elif state != "ONLINE":
            problems.append(f"{label(name)} is {state}, not ONLINE")
        else:
            error = checkdb(conn, name)
            result["checkdb"] = "passed" if error is None else "failed"
            if error is not None:
                problems.append(f"{label(name)}: DBCC CHECKDB: {error}")
        results.append(result)
    return results, problems


def check_server(info: SqlServerInfo, *, recorded: dict | None = None,
                 connect: ConnectionFactory | None = None) -> dict:
    """The restored snapshot: the databases `recorded` (a restore point's metadata) names, or every user
    database, there, ONLINE and passing CHECKDB."""
    conn = (connect or tds_connect)(info)
    try:
        version = (conn.query(SQL_VERSION) or [{}])[0].get("version")
        states = _states(conn)
        expected = [e["name"] for e in (recorded or {}).get("databases") or []] or sorted(
            n for n in states if n not in SYSTEM_DATABASES)
        results, problems = _check(conn, expected, states)
    finally:
        with contextlib.suppress(Exception):
            conn.close()
    return {"status": "failed" if problems else "passed", "server_version": version, "databases": results,
            "problems": problems, "row_count_differences": []}


def validate_restore_point(repo, rp_id: str, info: SqlServerInfo, *, target_of, temp_bucket: str,
                           temp_prefix: str = "", connect: ConnectionFactory | None = None, poll=None) -> dict:
    """Restore each database of the restore point as `target_of(name)` through RDS native restore (the
    restore task must end SUCCESS), then check each restored database. Returns ``{"databases": [{"database",
    "target", "task_id", "state", "checkdb"}], "differences": [{"database", "table": None, "reason"}],
    "tables_checked": 0, "row_counts_only": False}``, the shape of the PostgreSQL validation's."""
    entries = repo.load_manifest(rp_id).get("databases") or []
    restored = []
    for entry in entries:
        summary = restore_sqlserver(repo, rp_id, info, temp_bucket=temp_bucket, temp_prefix=temp_prefix,
                                    database=entry["name"], target_database=target_of(entry["name"]),
                                    replace=True, connect=connect, poll=poll)
        restored += summary["databases"]
    conn = (connect or tds_connect)(info)
    try:
        states = _states(conn)
        by_target = {r["target"]: r for r in restored}
        results, problems = _check(conn, list(by_target), states,
                                   label=lambda target: f"restored database {target!r}")
    finally:
        with contextlib.suppress(Exception):
            conn.close()
    databases = [{**result, "database": by_target[result["database"]]["name"], "target": result["database"],
                  "task_id": by_target[result["database"]]["task_id"]} for result in results]
    return {"databases": databases, "tables_checked": 0, "row_counts_only": False,
            "differences": [{"database": None, "table": None, "reason": problem} for problem in problems]}
